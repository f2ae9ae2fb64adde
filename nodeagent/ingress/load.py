"""A small open-loop HTTP load generator for the ingress checks and benchmarks: REQUESTS per second on
new connections (so every request meets whatever worker is listening at that moment, the hard case
for reloads), each one checked for a 2xx status; prints one JSON line with the counts, failures and
latency percentiles. `python -m nodeagent.ingress.load --url http://IP:PORT/path --host NAME
--rate 200 --seconds 60` (run it inside the client's network namespace with nsenter)."""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import time
from urllib.parse import urlsplit


async def one(host: str, port: int, tls: ssl.SSLContext | None, server_name: str, path: str,
              timeout: float) -> tuple[bool, float, str]:
    start = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=tls, server_hostname=server_name if tls else None), timeout)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), timeout)
        finally:
            writer.close()
    except (OSError, TimeoutError, ssl.SSLError) as e:
        return False, time.perf_counter() - start, f"{type(e).__name__}: {e}"
    status = data.split(b" ", 2)[1:2]
    ok = bool(status) and status[0].startswith(b"2")
    return ok, time.perf_counter() - start, "" if ok else data[:80].decode(errors="replace")


async def run(url: str, server_name: str, rate: float, seconds: float, timeout: float = 5.0) -> dict[str, object]:
    u = urlsplit(url)
    tls = None
    if u.scheme == "https":
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    port = u.port or (443 if tls else 80)
    path = u.path or "/"
    tasks: list[asyncio.Task[tuple[bool, float, str]]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    n = int(rate * seconds)
    for i in range(n):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(u.hostname or "", port, tls, server_name, path, timeout)))
    results = await asyncio.gather(*tasks)
    lat = sorted(r[1] for r in results)
    failures = [r[2] for r in results if not r[0]]

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else 0.0

    return {"requests": len(results), "failed": len(failures), "failures": failures[:5],
            "seconds": round(loop.time() - start, 2), "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--host", required=True, help="Host header and SNI")
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--seconds", type=float, default=60)
    a = p.parse_args(argv)
    print(json.dumps(asyncio.run(run(a.url, a.host, a.rate, a.seconds))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
