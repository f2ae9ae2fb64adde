"""Scheduler throughput: pods bound per second with 100 nodes and 1,000 pending pods, beside the
apiserver's raw binding throughput (the same number of pods bound round-robin with the same
concurrency and no scheduling logic) measured in the same run against the same apiserver.

A real `nodeagent apiserver` is started in a temporary directory; 100 Ready Nodes are created; then
  naive:  1,000 pods in namespace bench-naive are bound round-robin by plain POST pods/binding calls;
  naive+event: the same, each binding followed by a Scheduled Event (the API writes ours makes);
  ours:   1,000 pending pods in bench-sched, then the scheduler starts (informers synced) and the clock
          runs until every pod has spec.nodeName in the apiserver (as our informer sees it).
Also printed: the scheduling cycle alone (filter + score + assume over 100 nodes, no API calls).

    .venv/bin/python benchmarks/scheduler.py [--nodes 100] [--pods 1000] [--rounds 3]

Each round uses fresh namespaces and runs the three in turn; figures are medians over rounds.
Last line: one JSON object with the figures (pods per second; ratio = ours / naive).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodeagent.client import Client, ClientConfig  # noqa: E402
from nodeagent.controllers.base import Options  # noqa: E402
from nodeagent.controllers.manager import ControllerManager  # noqa: E402
from nodeagent.controllers.scheduler import Scheduler  # noqa: E402
from nodeagent.controllers.scheduling import pod_info  # noqa: E402
from nodeagent.machinery.kinds import EVENTS, NAMESPACES, NODES, PODS  # noqa: E402
from tests.helpers.apiserver import start_apiserver  # noqa: E402

CONCURRENCY = 16


def node_body(i: int) -> dict[str, Any]:
    return {"metadata": {"name": f"bench-node-{i:03d}", "labels": {"kubernetes.io/hostname": f"bench-node-{i:03d}"}},
            "spec": {}}


def pod_body(ns: str, i: int) -> dict[str, Any]:
    return {"metadata": {"name": f"p-{i:04d}", "namespace": ns,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "bench",
                                              "uid": f"owner-{i % 10}", "controller": True}]},
            "spec": {"containers": [{"name": "c", "image": "nodeagent.local/toolbox:1",
                                     "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}


async def gather_limited(coros: list[Any], limit: int) -> None:
    sem = asyncio.Semaphore(limit)

    async def one(c: Any) -> None:
        async with sem:
            await c

    await asyncio.gather(*(one(c) for c in coros))


async def setup(client: Client, nodes: int) -> list[str]:
    names = []
    for i in range(nodes):
        n = await client.create(NODES, node_body(i))
        n["status"] = {"capacity": {"cpu": "64", "memory": "256Gi", "pods": "110"},
                       "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}
        await client.update_status(NODES, n)
        names.append(n["metadata"]["name"])
    return names


async def naive(client: Client, nodes: list[str], pods: int, ns: str = "bench-naive",
                with_events: bool = False) -> float:
    await gather_limited([client.create(PODS, pod_body(ns, i) | {"spec": {**pod_body(ns, i)["spec"],
                                                                        "schedulerName": "bench-naive"}})
                          for i in range(pods)], CONCURRENCY)

    def bind(i: int) -> Any:
        body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": f"p-{i:04d}", "namespace": ns},
                "target": {"apiVersion": "v1", "kind": "Node", "name": nodes[i % len(nodes)]}}
        return client.create_subresource(PODS, f"p-{i:04d}", "binding", body, namespace=ns)

    async def bind_and_record(i: int) -> None:
        await bind(i)
        if with_events:  # what the scheduler also writes per pod: a Scheduled Event
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            await client.create(EVENTS, {
                "metadata": {"name": f"p-{i:04d}.{time.time_ns():x}", "namespace": ns},
                "involvedObject": {"kind": "Pod", "namespace": ns, "name": f"p-{i:04d}"},
                "reason": "Scheduled", "message": f"Successfully assigned {ns}/p-{i:04d} to {nodes[i % len(nodes)]}",
                "type": "Normal", "source": {"component": "bench"}, "firstTimestamp": now, "lastTimestamp": now,
                "count": 1})

    t0 = time.perf_counter()
    await gather_limited([bind_and_record(i) for i in range(pods)], CONCURRENCY)
    return pods / (time.perf_counter() - t0)


async def ours(client: Client, pods: int, ns: str = "bench-sched") -> tuple[float, float]:
    await gather_limited([client.create(PODS, pod_body(ns, i)) for i in range(pods)], CONCURRENCY)
    mgr = ControllerManager(client, Options(resync_period=600), enabled=["scheduler"])
    sched: Scheduler = mgr.controllers["scheduler"]  # type: ignore[assignment]
    pods_inf = mgr.informers.get(PODS)
    done = asyncio.Event()

    def check(*_: Any) -> None:
        bound = sum(1 for p in pods_inf.list()
                    if p["metadata"].get("namespace") == ns and (p.get("spec") or {}).get("nodeName"))
        if bound >= pods:
            done.set()

    counter = {"n": 0}

    def on_update(old: dict[str, Any], new: dict[str, Any]) -> None:
        if new["metadata"].get("namespace") == ns and (new.get("spec") or {}).get("nodeName") and \
                not (old.get("spec") or {}).get("nodeName"):
            counter["n"] += 1
            if counter["n"] >= pods:
                done.set()

    pods_inf.add_handlers(on_update=on_update)
    mgr.informers.start()
    await mgr.informers.wait_synced(60)
    t0 = time.perf_counter()
    for c in mgr.controllers.values():
        c.start()
    await asyncio.wait_for(done.wait(), 300)
    elapsed = time.perf_counter() - t0
    check()
    # the scheduling cycle alone, on the cache as it now stands (no API calls, nothing assumed)
    sample = [p for p in pods_inf.list() if p["metadata"].get("namespace") == ns][:200]
    t1 = time.perf_counter()
    for p in sample:
        sched.select_node(pod_info(p))
    cycle = len(sample) / (time.perf_counter() - t1)
    await mgr.stop()
    return pods / elapsed, cycle


async def run(nodes: int, pods: int, rounds: int) -> dict[str, Any]:
    """Rounds alternate the three runs so load from elsewhere on the machine hits all alike;
    the figures are medians over rounds."""
    naive_r, event_r, ours_r, cycle_r = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-sched-") as tmp:
        server = start_apiserver(Path(tmp))
        try:
            async with Client(ClientConfig.from_kubeconfig(server.kubeconfig)) as client:
                names = await setup(client, nodes)
                for r in range(rounds):
                    for ns in (f"naive-{r}", f"naive-ev-{r}", f"sched-{r}"):
                        await client.create(NAMESPACES, {"metadata": {"name": ns}})
                    naive_r.append(await naive(client, names, pods, f"naive-{r}"))
                    ours_rate, cycle = await ours(client, pods, f"sched-{r}")
                    ours_r.append(ours_rate)
                    cycle_r.append(cycle)
                    event_r.append(await naive(client, names, pods, f"naive-ev-{r}", with_events=True))
        finally:
            server.stop()
    med = statistics.median
    return {"nodes": nodes, "pods": pods, "rounds": rounds, "ours_pods_per_s": round(med(ours_r), 1),
            "naive_binding_pods_per_s": round(med(naive_r), 1), "ratio": round(med(ours_r) / med(naive_r), 3),
            "naive_binding_and_event_pods_per_s": round(med(event_r), 1),
            "ratio_vs_binding_and_event": round(med(ours_r) / med(event_r), 3),
            "cycle_only_pods_per_s": round(med(cycle_r), 1), "bind_concurrency": CONCURRENCY,
            "ours_rounds": [round(x, 1) for x in ours_r], "naive_rounds": [round(x, 1) for x in naive_r]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if 3 * args.rounds * args.pods > args.nodes * 100:
        ap.error("too many pods for the nodes' 110-pod capacity: lower --rounds or --pods")
    res = asyncio.run(run(args.nodes, args.pods, args.rounds))
    print(f"scheduler (ours): {res['ours_pods_per_s']} pods/s bound, {args.pods} pods on {args.nodes} nodes")
    print(f"raw binding (naive peer, no scheduling): {res['naive_binding_pods_per_s']} pods/s")
    print(f"raw binding + Scheduled Event (naive peer doing the same API writes): "
          f"{res['naive_binding_and_event_pods_per_s']} pods/s")
    print(f"scheduling cycle alone: {res['cycle_only_pods_per_s']} pods/s")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
