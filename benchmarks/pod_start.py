"""Pod start latency: 30 pods created at once on one node, from create to Running+Ready, with runc
and with crun (RuntimeClass), each beside the CRI alone on the same containerd in the same run.

Builds one node as the kubelet integration tests do (tests/helpers/kubelet_node.py): the real
apiserver, containerd in a network namespace with the reference bridge CNI, and `nodeagent
kubelet` in that namespace; images are present (imported at containerd's start). Two RuntimeClasses
pick the OCI runtime: `runc` (handler runc, containerd's default) and `crun` (handler crun, the C
runtime). After a warm-up pod, five pods are created one at a time per runtime (the kubelet's own
path without contention), then, per round, a burst of N pods with each runtime in turn (the pods of
a burst are deleted before the next one starts); a watch opened before the first create records
when each pod first shows Ready=True. The figure is create-call start -> Ready seen by the watch,
the same interval as upstream's pod startup SLI (without image pulls), whose SLO is p99 <= 5 s.

Where the time goes is read from the kubelet's own metrics (scraped before and after each burst):
nodeagent_kubelet_pod_start_phase_duration_seconds{phase} (queued, sandbox, image, create, start,
status, watch; nodeagent/kubelet/pod_startup.py) and, for the parts of RunPodSandbox, containerd's
timers (containerd_cri_sandbox_create_network_seconds: CNI; ..._sandbox_runtime_create_seconds:
shim + pause container).

The peer, on the same containerd and interleaved with the kubelet's runs, is the CRI alone: the
same N pods started straight through RunPodSandbox/CreateContainer/StartContainer all at once (and
one at a time beside the kubelet's single pods), with each runtime handler: the floor the runtime
sets. Its pods carry no pod-uid label, so the idle kubelet beside them ignores them. The machine is
shared: each round runs the four (kubelet, CRI) x (runc, crun) bursts in another order, figures are
medians over rounds with their spread, and the load average is printed before and after.

    sudo .venv/bin/python benchmarks/pod_start.py [--pods 30] [--rounds 3]

Last line: one JSON object with the figures (seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodeagent import netns as netns_mod  # noqa: E402
from nodeagent.client import Client, ClientConfig, NotFound  # noqa: E402
from nodeagent.machinery.kinds import NODES, PODS, RUNTIME_CLASSES  # noqa: E402
from tests.helpers import prom  # noqa: E402
from tests.helpers.kubelet_node import KubeletNode, start_kubelet_node, stop_kubelet_node  # noqa: E402

UPSTREAM_SLO_P99 = 5.0
TARGET_P99 = 1.0
HANDLERS = ("runc", "crun")
PHASES = ("queued", "sandbox", "image", "create", "start", "status", "watch")
PHASE_METRIC = "nodeagent_kubelet_pod_start_phase_duration_seconds"
CONTAINERD_METRICS = "127.0.0.1:1338"  # inside the node's namespace
CNI_METRIC = "containerd_cri_sandbox_create_network_seconds"  # containerd's timer of the CNI ADD in RunPodSandbox
CONTAINERD_TIMERS = (("RunPodSandbox (all of it)", "containerd_cri_sandbox_runtime_create_seconds"),
                     ("  of it the network (CNI)", CNI_METRIC),
                     ("CreateContainer", "containerd_cri_container_create_seconds"),
                     ("StartContainer", "containerd_cri_container_start_seconds"))


def _pod(node: str, name: str, handler: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default", "labels": {"bench": "pod-start"}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0, "runtimeClassName": handler,
                     "containers": [{"name": "c", "image": "nodeagent.local/toolbox:1",
                                     "command": ["sleep", "3600"]}]}}


def _ready(obj: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


async def wait_node_ready(client: Client, kn: KubeletNode, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            n = await client.get(NODES, kn.name)
            if any(c["type"] == "Ready" and c["status"] == "True" for c in (n.get("status") or {}).get("conditions", [])):
                return
        except NotFound:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"node {kn.name} not Ready; kubelet log:\n{kn.log_tail()}")


async def run_batch(client: Client, kn: KubeletNode, names: list[str], handler: str) -> dict[str, float]:
    rv = (await client.list(PODS, namespace="default"))["metadata"]["resourceVersion"]
    started: dict[str, float] = {}
    ready: dict[str, float] = {}

    async def watch() -> None:
        async for ev in client.watch(PODS, namespace="default", resource_version=rv, timeout_seconds=180):
            name = ev.object.get("metadata", {}).get("name")
            if name in started and name not in ready and _ready(ev.object):
                ready[name] = time.monotonic()
                if len(ready) == len(names):
                    return

    w = asyncio.create_task(watch())
    await asyncio.sleep(0.2)  # the watch is open before the first create

    async def create(name: str) -> None:
        started[name] = time.monotonic()
        await client.create(PODS, _pod(kn.name, name, handler))

    await asyncio.gather(*(create(n) for n in names))
    try:
        await asyncio.wait_for(w, 180)
    except TimeoutError:
        raise RuntimeError(f"{len(names) - len(ready)} pods not Ready after 180s; kubelet log:\n{kn.log_tail()}") from None
    return {n: ready[n] - started[n] for n in names}


async def delete_and_wait(client: Client, kn: KubeletNode, names: list[str]) -> None:
    """Delete the pods and wait until the runtime has no sandbox of theirs left, so that every
    burst starts on the same node."""
    from nodeagent.runtime.cri import RuntimeClient

    for n in names:
        try:
            await client.delete(PODS, n, namespace="default", grace_period_seconds=0)
        except NotFound:
            pass
    async with RuntimeClient(kn.endpoint) as rt:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            left = [s for s in await rt.list_pod_sandbox() if s.metadata.name in set(names)]
            if not left:
                return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"pods of the last burst not removed after 180s; kubelet log:\n{kn.log_tail()}")


def scrape_all(kn: KubeletNode, token: str | None) -> dict[str, dict[prom.Labels, prom.Hist]]:
    """The kubelet's histograms (unless token is None) and containerd's."""
    text = prom.scrape(f"https://127.0.0.1:{kn.port}/metrics", token) if token is not None else ""
    text += netns_mod.run_in_netns(netns_mod.netns_path(kn.netns), prom.scrape,
                                   f"http://{CONTAINERD_METRICS}/v1/metrics")
    return prom.parse_histograms(text)


async def cri_run(kn: KubeletNode, rt: Any, phases: Phases, kind: str, handler: str, pods: int, at_once: bool,
                  tag: str) -> list[float]:
    before = await asyncio.to_thread(scrape_all, kn, None)
    lat = await cri_pods(kn, rt, pods, handler, at_once, tag)
    phases.add((f"cri-{kind}", handler), before, await asyncio.to_thread(scrape_all, kn, None))
    return lat


async def cri_pods(kn: KubeletNode, rt: Any, pods: int, handler: str, at_once: bool, tag: str) -> list[float]:
    """Pods started straight through the CRI (RunPodSandbox, CreateContainer, StartContainer) on the
    same containerd, all at once or one after another: the floor the runtime sets. They carry no
    pod-uid label, so the kubelet running beside them neither adopts nor removes them."""
    from nodeagent.runtime import podconfig

    assert kn.node is not None
    log_root = kn.node.log_root

    async def one(i: int) -> tuple[float, str]:
        pod = {"metadata": {"name": f"floor-{tag}-{i}", "namespace": "bench-floor", "uid": f"floor-{tag}-{i}"},
               "spec": {"containers": [{"name": "c", "image": "nodeagent.local/toolbox:1",
                                        "command": ["sleep", "3600"]}]}}
        log_dir = podconfig.pod_log_directory(str(log_root), pod)
        os.makedirs(log_dir, exist_ok=True)
        sc = podconfig.sandbox_config(pod, log_directory=log_dir)
        cc = podconfig.container_config(pod, pod["spec"]["containers"][0])
        del sc.labels[podconfig.POD_UID_LABEL], cc.labels[podconfig.POD_UID_LABEL]
        t0 = time.monotonic()
        sid = await rt.run_pod_sandbox(sc, runtime_handler=handler)
        cid = await rt.create_container(sid, cc, sc)
        await rt.start_container(cid)
        return time.monotonic() - t0, sid

    if at_once:
        results = list(await asyncio.gather(*(one(i) for i in range(pods))))
    else:
        results = [await one(i) for i in range(pods)]

    async def remove(sid: str) -> None:
        await rt.stop_pod_sandbox(sid)
        await rt.remove_pod_sandbox(sid)

    await asyncio.gather(*(remove(sid) for _, sid in results))
    return [t for t, _ in results]


class Phases:
    """The kubelet's and containerd's histograms, summed over the runs of one kind and handler."""

    def __init__(self) -> None:
        self.by: dict[tuple[str, str], dict[str, dict[prom.Labels, prom.Hist]]] = {}
        self.cpu: dict[tuple[str, str], list[dict[str, float]]] = {}  # per run: process -> CPU seconds

    def add(self, key: tuple[str, str], before: dict[str, dict[prom.Labels, prom.Hist]],
            after: dict[str, dict[prom.Labels, prom.Hist]]) -> None:
        acc = self.by.setdefault(key, {})
        for name, series in prom.diff(after, before).items():
            for lb, hist in series.items():
                prev = acc.setdefault(name, {}).get(lb)
                acc[name][lb] = hist if prev is None else _add(prev, hist)


def cpu_seconds(kn: KubeletNode) -> dict[str, float]:
    """CPU time (user + system) so far of the apiserver and the kubelet processes."""
    import psutil

    out = {}
    for name, proc in (("apiserver", kn.api.proc), ("kubelet", kn.proc)):
        if proc is not None:
            t = psutil.Process(proc.pid).cpu_times()
            out[name] = t.user + t.system
    return out


async def kubelet_run(client: Client, kn: KubeletNode, token: str, phases: Phases, kind: str, handler: str,
                      names: list[str]) -> list[float]:
    before = await asyncio.to_thread(scrape_all, kn, token)
    cpu0 = cpu_seconds(kn)
    lat = await run_batch(client, kn, names, handler)
    cpu1 = cpu_seconds(kn)
    phases.cpu.setdefault((kind, handler), []).append({k: cpu1[k] - cpu0[k] for k in cpu1})
    phases.add((kind, handler), before, await asyncio.to_thread(scrape_all, kn, token))
    await delete_and_wait(client, kn, names)
    return list(lat.values())


async def main_async(pods: int, rounds: int, extra_args: list[str]) -> dict[str, Any]:
    from nodeagent.runtime.cri import RuntimeClient

    base = Path(tempfile.mkdtemp(prefix="na-podstart-"))
    kn = start_kubelet_node(base, extra_args=extra_args, containerd_metrics=CONTAINERD_METRICS)
    r: dict[str, Any] = {"load_before": load()}
    bursts: dict[str, list[list[float]]] = {h: [] for h in HANDLERS}
    cri: dict[str, list[list[float]]] = {h: [] for h in HANDLERS}
    singles: dict[str, list[float]] = {h: [] for h in HANDLERS}
    cri_single: dict[str, list[float]] = {h: [] for h in HANDLERS}
    phases = Phases()
    try:
        token = kn.admin_token()
        async with Client(ClientConfig.from_kubeconfig(kn.api.kubeconfig)) as client, \
                RuntimeClient(kn.endpoint) as rt:
            for h in HANDLERS:
                await client.create(RUNTIME_CLASSES, {"metadata": {"name": h}, "handler": h})
            await wait_node_ready(client, kn)
            tag = secrets.token_hex(2)
            for h in HANDLERS:  # warm-up: first CNI ADD, page cache, the shim and runtime binaries
                await kubelet_run(client, kn, token, Phases(), "warm", h, [f"warm-{h}-{tag}"])
                await cri_pods(kn, rt, 1, h, False, f"w{h}{tag}")
            for i in range(5):  # one pod at a time, the kubelet and the CRI alone in turn
                for h in HANDLERS:
                    singles[h] += await kubelet_run(client, kn, token, phases, "single", h, [f"one-{h}-{tag}-{i}"])
                    cri_single[h] += await cri_run(kn, rt, phases, "single", h, 1, False, f"s{h}{tag}{i}")
            runs = [(kind, h) for h in HANDLERS for kind in ("kubelet", "cri")]
            for rnd in range(rounds):  # each round in another order, so that a drifting load hits all alike
                for kind, h in runs[rnd % len(runs):] + runs[:rnd % len(runs)]:
                    if kind == "kubelet":
                        names = [f"b{rnd}-{h}-{tag}-{i:02d}" for i in range(pods)]
                        bursts[h].append(await kubelet_run(client, kn, token, phases, "burst", h, names))
                    else:
                        cri[h].append(await cri_run(kn, rt, phases, "burst", h, pods, True, f"b{rnd}{h}{tag}"))
    finally:
        r["load_after"] = load()
        stop_kubelet_node(kn)
        shutil.rmtree(base, ignore_errors=True)
    r.update(pods=pods, rounds=rounds, bursts=bursts, cri=cri, singles=singles, cri_single=cri_single,
             phases=phases.by, cpu=phases.cpu)
    return r


def _total(series: dict[prom.Labels, prom.Hist]) -> prom.Hist:
    """All label values of one histogram together (containerd labels its timers by shim type)."""
    out = prom.Hist()
    for h in series.values():
        out = _add(h, out) if out.count else h
    return out


def _add(a: prom.Hist, b: prom.Hist) -> prom.Hist:
    return prom.Hist({le: c + b.buckets.get(le, 0.0) for le, c in a.buckets.items()}, a.sum + b.sum,
                     a.count + b.count)


def spread(per_round: list[float]) -> str:
    return f"{statistics.median(per_round):6.3f} s ({min(per_round):.3f}-{max(per_round):.3f})"


def summarize(r: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"pods": r["pods"], "rounds": r["rounds"], "load_before": r["load_before"],
                           "load_after": r["load_after"], "upstream_slo_p99_s": UPSTREAM_SLO_P99,
                           "target_p99_s": TARGET_P99}
    for h in HANDLERS:
        p = "" if h == "runc" else f"{h}_"
        out[f"{p}p50_s"] = round(statistics.median(statistics.median(b) for b in r["bursts"][h]), 3)
        out[f"{p}p99_s"] = round(statistics.median(percentile(b, 99) for b in r["bursts"][h]), 3)
        out[f"{p}cri_only_p50_s"] = round(statistics.median(statistics.median(b) for b in r["cri"][h]), 3)
        out[f"{p}cri_only_p99_s"] = round(statistics.median(percentile(b, 99) for b in r["cri"][h]), 3)
        out[f"{p}single_pod_p50_s"] = round(statistics.median(r["singles"][h]), 3)
        out[f"{p}cri_single_pod_p50_s"] = round(statistics.median(r["cri_single"][h]), 3)
        out[f"{p}p99_vs_cri"] = [round(percentile(a, 99) / percentile(b, 99), 2)
                                 for a, b in zip(r["bursts"][h], r["cri"][h], strict=True)]
    return out


def print_report(r: dict[str, Any], s: dict[str, Any]) -> None:
    n, rounds = r["pods"], r["rounds"]
    print(f"pod start, {n} pods at once on one node (create -> Running+Ready seen by a watch), {rounds} rounds "
          f"alternating runc and crun; {os.cpu_count()} cores, load {s['load_before']} before, "
          f"{s['load_after']} after")
    print("  median over rounds (min-max)         runc                         crun")
    rows = [
        ("nodeagent kubelet p50", lambda h: [statistics.median(b) for b in r["bursts"][h]]),
        ("nodeagent kubelet p99", lambda h: [percentile(b, 99) for b in r["bursts"][h]]),
        ("CRI alone (floor) p50", lambda h: [statistics.median(b) for b in r["cri"][h]]),
        ("CRI alone (floor) p99", lambda h: [percentile(b, 99) for b in r["cri"][h]]),
    ]
    for label, f in rows:
        print(f"  {label:32s} {spread(f('runc')):28s} {spread(f('crun'))}")
    for h in HANDLERS:
        ratios = s["p99_vs_cri" if h == "runc" else f"{h}_p99_vs_cri"]
        print(f"  {h}: kubelet p99 / CRI-alone p99 per round: {', '.join(f'{x:.2f}' for x in ratios)}")
    print(f"  crun floor vs runc floor (CRI p99): {s['crun_cri_only_p99_s'] / s['cri_only_p99_s']:.2f}x; "
          f"kubelet with crun vs the runc floor: {s['crun_p99_s'] / s['cri_only_p99_s']:.2f}x")
    for h in HANDLERS:
        p = "" if h == "runc" else f"{h}_"
        print(f"  one pod at a time ({h}): kubelet p50 {s[f'{p}single_pod_p50_s']:.3f} s, CRI alone p50 "
              f"{s[f'{p}cri_single_pod_p50_s']:.3f} s ({s[f'{p}single_pod_p50_s'] / s[f'{p}cri_single_pod_p50_s']:.2f}x)")
    print(f"  upstream SLO p99 <= {UPSTREAM_SLO_P99:.1f} s ({'met' if s['p99_s'] <= UPSTREAM_SLO_P99 else 'MISSED'} "
          f"with runc); our target p99 <= {TARGET_P99:.1f} s ({'met' if s['p99_s'] <= TARGET_P99 else 'missed'})")
    for kind, what in (("burst", f"the burst pods, {n * rounds} each"), ("single", "the pods one at a time, 5 each")):
        print(f"where the time goes: {what} (kubelet metrics; mean / p50 / p99 per pod, p50/p99 read from buckets):")
        print_phases(r, kind)
    print("  (cni: containerd's timer of the CNI ADD inside RunPodSandbox; the rest: the shim and the pause"
          " container, means only; kubelet total: first seen -> Running written, upstream's coarse buckets)")
    for kind, count in (("burst", n * rounds), ("single", 5)):
        for h in HANDLERS:
            ops = r["phases"].get((kind, h), {}).get("kubelet_runtime_operations_duration_seconds", {})
            calls = sorted(((dict(lb)["operation_type"], x) for lb, x in ops.items() if x.count),
                           key=lambda t: -t[1].sum)
            print(f"  the kubelet's CRI calls per {kind} pod ({h}): " + ", ".join(
                f"{op} {x.count / count:.1f}x{x.mean * 1000:.0f}ms" for op, x in calls))
    for kind, per in (("burst", n), ("single", 1)):
        for h in HANDLERS:
            runs = r["cpu"].get((kind, h), [])
            if runs:
                writes = r["phases"].get((kind, h), {}).get("kubelet_pod_status_sync_duration_seconds", {})
                print(f"  CPU per {kind} pod ({h}), the CRI alone pays none of it: " + ", ".join(
                    f"{p} {statistics.median(x[p] for x in runs) / per * 1000:.0f} ms" for p in runs[0])
                    + f"; status writes per pod {_total(writes).count / (per * len(runs)):.1f}")
    print("containerd's own timers, the kubelet's pods against the CRI-alone pods (mean seconds):")
    print(f"  {'':28s} {'burst runc':>21s} {'burst crun':>21s} {'single runc':>21s} {'single crun':>21s}")
    print(f"  {'':28s} {'kubelet   CRI':>21s} {'kubelet   CRI':>21s} {'kubelet   CRI':>21s} {'kubelet   CRI':>21s}")
    for label, name in CONTAINERD_TIMERS:
        cells = []
        for kind in ("burst", "single"):
            for h in HANDLERS:
                a, b = (_total(r["phases"].get((k, h), {}).get(name, {})) for k in (kind, f"cri-{kind}"))
                cells.append(f"{a.mean:8.3f} {b.mean:8.3f}")
        print(f"  {label:28s} " + " ".join(f"{c:>21s}" for c in cells))


def print_phases(r: dict[str, Any], kind: str) -> None:
    print(f"  {'phase':14s} {'runc':>24s} {'crun':>24s}")

    def hist(h: str, name: str, **labels: str) -> prom.Hist:
        return prom.get(r["phases"].get((kind, h), {}), name, **labels)

    def row(label: str, name: str, **labels: str) -> None:
        cells = []
        for h in HANDLERS:
            x = hist(h, name, **labels)
            cells.append("-" if not x.count else f"{x.mean:6.3f} {x.quantile(0.5):6.3f} {x.quantile(0.99):6.3f}")
        print(f"  {label:14s} {cells[0]:>24s} {cells[1]:>24s}")

    for phase in PHASES:
        row(phase, PHASE_METRIC, phase=phase)
        if phase == "sandbox":
            row("  cni", CNI_METRIC)
            rest = [hist(h, PHASE_METRIC, phase="sandbox").mean - hist(h, CNI_METRIC).mean for h in HANDLERS]
            print(f"  {'  the rest':14s} {rest[0]:6.3f}{'':18s} {rest[1]:6.3f}")
    row("kubelet total", "kubelet_pod_start_duration_seconds")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parallel-pod-starts", type=int, default=None,
                    help="the kubelet's --parallel-pod-starts (default: the kubelet's own default)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("benchmarks/pod_start.py needs root (network namespaces, containerd)", file=sys.stderr)
        return 2
    # SIGTERM ends the run like ^C: the node (apiserver, kubelet, containerd, netns) is removed
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    extra = [] if args.parallel_pod_starts is None else ["--parallel-pod-starts", str(args.parallel_pod_starts)]
    r = asyncio.run(main_async(args.pods, args.rounds, extra))
    s = summarize(r)
    print_report(r, s)
    print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in s.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
