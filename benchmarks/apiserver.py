"""Benchmark of `nodeagent apiserver` (issue 2): creates/s with 8 concurrent clients, watch delay with
100 watchers at 200 writes/s, and a list of 10,000 pods, each printed beside its target.

Run: .venv/bin/python benchmarks/apiserver.py [--pods 10000] [--watchers 100] [--rate 200]
The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402

from tests.helpers.api_kubectl import admin_token  # noqa: E402
from tests.helpers.apiserver import start_apiserver  # noqa: E402

TARGET_CREATES = 500.0
TARGET_WATCH_P99_MS = 50.0
TARGET_LIST_S = 1.0
_SENT_RE = re.compile(rb'"bench/sent":"([0-9.]+)"')


def _pod(name: str, sent: float | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app": "bench"}}
    if sent is not None:
        meta["annotations"] = {"bench/sent": repr(sent)}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": "bench-node", "containers": [
                {"name": "c", "image": "nodeagent.local/toolbox:1", "ports": [{"containerPort": 80}],
                 "env": [{"name": "A", "value": "1"}]}]}}


async def _creates(session: aiohttp.ClientSession, url: str, ns: str, total: int, clients: int) -> float:
    names = iter(range(total))

    async def worker() -> None:
        for i in names:
            async with session.post(f"{url}/api/v1/namespaces/{ns}/pods", json=_pod(f"p-{i}")) as r:
                if r.status != 201:
                    raise RuntimeError(f"create p-{i}: {r.status} {await r.text()}")
                await r.read()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return total / (time.perf_counter() - t0)


async def _watch_delay(session: aiohttp.ClientSession, url: str, watchers: int, rate: float,
                       seconds: float) -> list[float]:
    ns = "bench-watch"
    async with session.post(f"{url}/api/v1/namespaces", json={"metadata": {"name": ns}}) as r:
        await r.read()
    async with session.get(f"{url}/api/v1/namespaces/{ns}/pods") as r:
        rv = (await r.json())["metadata"]["resourceVersion"]
    delays: list[float] = []
    expected = int(rate * seconds)
    loop = asyncio.get_running_loop()
    host, _, port = url.removeprefix("https://").partition(":")
    token = session.headers["Authorization"]
    ctx = session.connector._ssl  # type: ignore[union-attr]
    request_bytes = (f"GET /api/v1/namespaces/{ns}/pods?watch=true&resourceVersion={rv}&timeoutSeconds=120 HTTP/1.1\r\n"
                     f"Host: {host}\r\nAuthorization: {token}\r\nAccept: application/json\r\n\r\n").encode()

    class Watcher(asyncio.Protocol):
        """A lean watch client: scans raw bytes for the send stamps (aiohttp's line reader would
        make the 100 watchers, not the server, the bottleneck of this 2-core machine)."""

        def __init__(self) -> None:
            self.tail = b""
            self.got = 0
            self.done: asyncio.Future[None] = loop.create_future()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transport.write(request_bytes)  # type: ignore[attr-defined]

        def data_received(self, data: bytes) -> None:
            now = time.time()
            buf = self.tail + data
            last = 0
            for m in _SENT_RE.finditer(buf):
                delays.append(now - float(m.group(1)))
                self.got += 1
                last = m.end()
            self.tail = buf[max(last, len(buf) - 64):]
            if self.got >= expected and not self.done.done():
                self.done.set_result(None)

        def connection_lost(self, exc: Exception | None) -> None:
            if not self.done.done():
                self.done.set_result(None)

    conns = []
    for _ in range(watchers):
        tr, proto = await loop.create_connection(Watcher, host, int(port), ssl=ctx)
        conns.append((tr, proto))
    await asyncio.sleep(1.0)

    async def watcher_done(proto: Watcher) -> None:
        await proto.done

    tasks = [asyncio.create_task(watcher_done(p)) for _, p in conns]
    # The client must not measure its own pauses: no cyclic GC while delays are recorded.
    gc.collect()
    gc.disable()
    interval = 1.0 / rate
    start = time.perf_counter()
    pending: set[asyncio.Task[None]] = set()

    async def write(i: int) -> None:
        async with session.post(f"{url}/api/v1/namespaces/{ns}/pods", json=_pod(f"w-{i}", time.time())) as r:
            await r.read()

    for i in range(expected):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        t = asyncio.create_task(write(i))
        pending.add(t)
        t.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    gc.enable()
    for tr, _ in conns:
        tr.close()
    return delays


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def _schedstat(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds waiting for one) of the server's main thread (/proc schedstat)."""
    run, wait, _ = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
    return int(run) / 1e9, int(wait) / 1e9


async def _list(session: aiohttp.ClientSession, url: str, ns: str) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    async with session.get(f"{url}/api/v1/namespaces/{ns}/pods") as r:
        raw = await r.read()
    fetched = time.perf_counter() - t0
    n = len(json.loads(raw)["items"])
    return fetched, time.perf_counter() - t0, n


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=10000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--watchers", type=int, default=100)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-apiserver-") as d:
        server = start_apiserver(Path(d))
        try:
            ctx = ssl.create_default_context(cafile=str(Path(d) / "pki" / "ca.crt"))
            headers = {"Authorization": f"Bearer {admin_token(server)}"}
            conn = aiohttp.TCPConnector(ssl=ctx, limit=args.watchers + args.clients + 50)
            async with aiohttp.ClientSession(connector=conn, headers=headers,
                                             timeout=aiohttp.ClientTimeout(total=600)) as s:
                ns = "bench"
                async with s.post(f"{server.url}/api/v1/namespaces", json={"metadata": {"name": ns}}) as r:
                    await r.read()
                creates = await _creates(s, server.url, ns, args.pods, args.clients)
                print(f"creates/s with {args.clients} clients ({args.pods} pods): {creates:8.1f}   "
                      f"target >= {TARGET_CREATES:.0f}", flush=True)
                fetched, parsed, n = await _list(s, server.url, ns)
                print(f"list of {n} pods: {fetched:.3f} s (with client JSON parse {parsed:.3f} s)   "
                      f"target <= {TARGET_LIST_S:.1f} s", flush=True)
                sched0 = _schedstat(server.proc.pid)
                delays = await _watch_delay(s, server.url, args.watchers, args.rate, args.seconds)
                sched1 = _schedstat(server.proc.pid)
                ran, waited = sched1[0] - sched0[0], sched1[1] - sched0[1]
                load = _loadavg()
                ms = sorted(d * 1000 for d in delays)
                p50 = statistics.median(ms)
                p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
                print(f"watch delay, {args.watchers} watchers at {args.rate:.0f} writes/s: p50 {p50:.1f} ms, "
                      f"p99 {p99:.1f} ms ({len(ms)} deliveries)   target p99 <= {TARGET_WATCH_P99_MS:.0f} ms",
                      flush=True)
                print(f"  during it the server's event loop ran {ran:.1f} s and waited {waited:.1f} s for a CPU "
                      f"(load average {load} on {os.cpu_count()} CPUs): waits for a CPU set the tail", flush=True)
        finally:
            server.stop()
    print(json.dumps({
        "creates_per_s": round(creates, 1), "creates_target": TARGET_CREATES,
        "list_10k_s": round(fetched, 3), "list_10k_parsed_s": round(parsed, 3), "list_target_s": TARGET_LIST_S,
        "list_items": n, "watch_p50_ms": round(p50, 2), "watch_p99_ms": round(p99, 2),
        "watch_p99_target_ms": TARGET_WATCH_P99_MS, "watchers": args.watchers, "write_rate": args.rate,
        "server_loop_cpu_s": round(ran, 2), "server_loop_runqueue_wait_s": round(waited, 2), "loadavg": float(load),
    }))
    return 0


if __name__ == "__main__":
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:  # the client side runs on uvloop too when it is installed, so it is not the bottleneck
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        sys.exit(runner.run(main()))
