"""Density: 110 pods on one node and 1,000 Services with 5,000 endpoints in the cluster.

`nodeagent cluster up --nodes 1` (its step times printed) builds the real thing: apiserver,
controllers and DNS in the control-plane namespace; the node's kubelet (with its containerd), our
CNI daemon and kube-proxy (iptables mode) in the node's namespace. Then:

1. 1,000 selector-less Services, each with an EndpointSlice of 5 endpoints (addresses of pods on
   other nodes, which kube-proxy programs like any), are created through the API; the figure is
   the time until kube-proxy reports them all programmed (its kubeproxy_sync_proxy_rules_services
   and _endpoints gauges), with its sync durations over that time and the sync of one changed
   Service afterwards (kubeproxy_sync_proxy_rules_duration_seconds), against its sync period.
2. A Deployment of 110 pods (upstream's default --max-pods, the node's whole capacity) in another
   namespace (so that its pods do not get 7,000 service-link variables): time from the create to
   all 110 Ready; the node must stay Ready throughout; one more pod bound to the node must be
   refused by the kubelet (OutOfpods), as upstream's admission does.
3. Memory of the node's components (RSS and PSS, from /proc): kubelet, kube-proxy, the CNI
   daemon, containerd (and its per-pod shims, apart), and of DNS and the control plane, printed
   against k3s's published agent footprint (docs.k3s.io/reference/resource-profiling: 275 MB for
   the k3s agent with its containerd, x86_64).

The machine is shared: the load average is printed before and after.

    sudo .venv/bin/python benchmarks/density.py [--pods 110] [--services 1000] [--endpoints 5]

Last line: one JSON object with the figures. The cluster is removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodeagent import netns as netns_mod  # noqa: E402
from nodeagent.client import Client, ClientConfig  # noqa: E402
from nodeagent.cluster import procs  # noqa: E402
from nodeagent.cluster.topology import ClusterPlan  # noqa: E402
from nodeagent.machinery.kinds import DEPLOYMENTS, ENDPOINTSLICES, NAMESPACES, NODES, PODS, SERVICES  # noqa: E402
from tests.helpers import prom  # noqa: E402

K3S_AGENT_MB = 275  # docs.k3s.io/reference/resource-profiling, "K3s agent", Intel 8375C (k3s + containerd)
MAX_PODS = 110  # the kubelet's --max-pods default, as upstream's
PROXY_SYNC_PERIOD = 30.0  # kube-proxy's iptables syncPeriod default
PROXY_METRICS = "http://127.0.0.1:10249/metrics"  # inside the node's namespace
SVC_NS, POD_NS = "density-svc", "density"
ENDPOINT_NET = ipaddress.ip_network("10.244.64.0/18")  # pod addresses of "other nodes" (not this node's /24)
SYNC_METRIC = "kubeproxy_sync_proxy_rules_duration_seconds"


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def nodeagent(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nodeagent", *args], capture_output=True, text=True, check=check)


# ----------------------------------------------------------------------------------- the proxy
def proxy_metrics(plan: ClusterPlan) -> str:
    return netns_mod.run_in_netns(plan.node_members[0].netns_path, prom.scrape, PROXY_METRICS)


def proxy_programmed(plan: ClusterPlan) -> tuple[float, float]:
    s = prom.samples(proxy_metrics(plan))
    return (s.get(("kubeproxy_sync_proxy_rules_services", ()), 0.0),
            s.get(("kubeproxy_sync_proxy_rules_endpoints", ()), 0.0))


def sync_hist(plan: ClusterPlan) -> prom.Hist:
    return prom.get(prom.parse_histograms(proxy_metrics(plan)), SYNC_METRIC)


def service(i: int) -> dict[str, Any]:
    return {"metadata": {"name": f"svc-{i}", "namespace": SVC_NS},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}


def endpoint_slice(i: int, per: int) -> dict[str, Any]:
    base = int(ENDPOINT_NET.network_address) + i * per + 1
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"svc-{i}-bench", "namespace": SVC_NS,
                         "labels": {"kubernetes.io/service-name": f"svc-{i}",
                                    "endpointslice.kubernetes.io/managed-by": "density.benchmarks.nodeagent"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [str(ipaddress.ip_address(base + j))], "conditions": {"ready": True}}
                          for j in range(per)]}


async def gather_limited(coros: list[Any], limit: int = 32) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


async def wait_programmed(plan: ClusterPlan, services: float, endpoints: float, timeout: float = 600) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        svc, eps = await asyncio.to_thread(proxy_programmed, plan)
        if svc >= services and eps >= endpoints:
            return time.monotonic()
        await asyncio.sleep(0.2)
    raise RuntimeError(f"kube-proxy did not program {services:.0f} services / {endpoints:.0f} endpoints in "
                       f"{timeout:.0f}s (has {svc:.0f} / {eps:.0f})")


async def services_phase(client: Client, plan: ClusterPlan, n: int, per: int) -> dict[str, Any]:
    base_svc, base_eps = await asyncio.to_thread(proxy_programmed, plan)
    before = await asyncio.to_thread(sync_hist, plan)
    await client.create(NAMESPACES, {"metadata": {"name": SVC_NS}})
    t0 = time.monotonic()
    await gather_limited([client.create(SERVICES, service(i), namespace=SVC_NS) for i in range(n)])
    await gather_limited([client.create(ENDPOINTSLICES, endpoint_slice(i, per), namespace=SVC_NS)
                          for i in range(n)])
    t_api = time.monotonic() - t0
    t_done = await wait_programmed(plan, base_svc + n, base_eps + n * per) - t0
    bulk = (await asyncio.to_thread(sync_hist, plan)).minus(before)
    # one changed Service with everything programmed: the steady-state sync
    before = await asyncio.to_thread(sync_hist, plan)
    one = endpoint_slice(0, per + 1)
    await client.patch(ENDPOINTSLICES, one["metadata"]["name"], {"endpoints": one["endpoints"]}, namespace=SVC_NS)
    await wait_programmed(plan, base_svc + n, base_eps + n * per + 1)
    await asyncio.sleep(1.5)  # the sync's histogram sample is written after the rules
    change = (await asyncio.to_thread(sync_hist, plan)).minus(before)
    return {"services": n, "endpoints": n * per, "api_writes_s": round(t_api, 2), "programmed_s": round(t_done, 2),
            "bulk_syncs": int(bulk.count), "bulk_sync_mean_s": round(bulk.mean, 3),
            "bulk_sync_p99_s": round(bulk.quantile(0.99), 3),
            "one_change_sync_s": round(change.mean, 3) if change.count else None}


# ------------------------------------------------------------------------------------- the pods
def deployment(n: int) -> dict[str, Any]:
    labels = {"app": "density"}
    return {"metadata": {"name": "density", "namespace": POD_NS},
            "spec": {"replicas": n, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"terminationGracePeriodSeconds": 0, "enableServiceLinks": False,
                                           "containers": [{"name": "c", "image": "nodeagent.local/toolbox:1",
                                                           "command": ["sleep", "100000"]}]}}}}


def _ready(obj: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


async def node_ready(client: Client, name: str) -> bool:
    return _ready(await client.get(NODES, name))


async def pods_phase(client: Client, plan: ClusterPlan, n: int) -> dict[str, Any]:
    node = plan.node_members[0].name
    await client.create(NAMESPACES, {"metadata": {"name": POD_NS}})
    rv = (await client.list(PODS, namespace=POD_NS))["metadata"]["resourceVersion"]
    ready: dict[str, float] = {}
    not_ready_seen = False

    async def watch() -> None:
        async for ev in client.watch(PODS, namespace=POD_NS, resource_version=rv, timeout_seconds=900):
            if _ready(ev.object):
                ready.setdefault(ev.object["metadata"]["name"], time.monotonic())
                if len(ready) >= n:
                    return

    async def watch_node() -> None:
        nonlocal not_ready_seen
        while True:
            not_ready_seen |= not await node_ready(client, node)
            await asyncio.sleep(1.0)

    w = asyncio.create_task(watch())
    nw = asyncio.create_task(watch_node())
    await asyncio.sleep(0.2)
    t0 = time.monotonic()
    await client.create(DEPLOYMENTS, deployment(n), namespace=POD_NS)
    try:
        await asyncio.wait_for(w, 900)
    finally:
        nw.cancel()
    times = sorted(t - t0 for t in ready.values())
    result = {"pods": n, "all_ready_s": round(times[-1], 2), "p50_ready_s": round(statistics.median(times), 2),
              "node_stayed_ready": not not_ready_seen and await node_ready(client, node), "extra_pod": ""}
    if n < MAX_PODS:
        result["extra_pod"] = f"not tried (the node is full at {MAX_PODS})"
        return result
    # one more, bound straight to the full node: the kubelet refuses it
    extra = {"metadata": {"name": "one-too-many", "namespace": POD_NS},
             "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nodeagent.local/toolbox:1"}]}}
    await client.create(PODS, extra, namespace=POD_NS)
    for _ in range(100):
        st = (await client.get(PODS, "one-too-many", namespace=POD_NS)).get("status") or {}
        if st.get("phase") == "Failed":
            result["extra_pod"] = f"{st.get('reason')}: {st.get('message')}"
            break
        await asyncio.sleep(0.2)
    return result


# ----------------------------------------------------------------------------------- memory
def memory(plan: ClusterPlan) -> dict[str, dict[str, float]]:
    """MB of RSS and PSS per component (shims summed, with their count)."""
    import psutil

    m = plan.node_members[0]
    out: dict[str, dict[str, float]] = {}

    def add(name: str, ps: list[Any]) -> None:
        rss = pss = 0.0
        for p in ps:
            try:
                info = p.memory_full_info()
            except psutil.Error:
                continue
            rss, pss = rss + info.rss / 2**20, pss + info.pss / 2**20
        out[name] = {"rss_mb": round(rss, 1), "pss_mb": round(pss, 1), "processes": len(ps)}

    def by_pid_file(component_id: str) -> list[Any]:
        rec = procs.read_pid_file(plan.run_dir / f"{component_id}.pid")
        return [psutil.Process(rec.pid)] if rec and procs.alive(rec) else []

    for comp in ("kubelet", "proxy", "cni-daemon"):
        add(comp, by_pid_file(f"{m.name}-{comp}"))
    config = str(m.data_dir / "containerd" / "config.toml")
    socket = str(m.data_dir / "containerd" / "containerd.sock")
    containerd, shims = [], []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info.get("cmdline") or []
        if cmd and os.path.basename(cmd[0]) == "containerd" and config in cmd:
            containerd.append(p)
        elif cmd and "containerd-shim" in os.path.basename(cmd[0]) and socket in cmd:
            shims.append(p)
    add("containerd", containerd)
    add("shims", shims)
    for comp in ("dns", "apiserver", "controllers"):
        add(comp, by_pid_file(f"cp-{comp}"))
    return out


# ------------------------------------------------------------------------------------- the run
async def measure(plan: ClusterPlan, args: argparse.Namespace) -> dict[str, Any]:
    r: dict[str, Any] = {"memory_idle": await asyncio.to_thread(memory, plan)}
    async with Client(ClientConfig.from_kubeconfig(plan.kubeconfig)) as client:
        r["services"] = await services_phase(client, plan, args.services, args.endpoints)
        r["memory_services"] = await asyncio.to_thread(memory, plan)
        r["pods"] = await pods_phase(client, plan, args.pods)
        await asyncio.sleep(5)  # let the last status writes and syncs settle before sampling memory
        r["memory_full"] = await asyncio.to_thread(memory, plan)
    return r


NODE_PARTS = ("kubelet", "proxy", "cni-daemon", "containerd")


def print_report(r: dict[str, Any], up_s: float) -> None:
    s, p = r["services"], r["pods"]
    print(f"density on one node ({os.cpu_count()} cores, load {r['load_before']} before, {r['load_after']} after); "
          f"cluster up {up_s:.1f} s")
    print(f"  {s['services']} Services / {s['endpoints']} endpoints: API writes {s['api_writes_s']:.1f} s, "
          f"all programmed by kube-proxy {s['programmed_s']:.1f} s after the first write")
    print(f"    kube-proxy syncs meanwhile: {s['bulk_syncs']}, mean {s['bulk_sync_mean_s']:.3f} s, p99 "
          f"{s['bulk_sync_p99_s']:.3f} s; one changed Service then: {s['one_change_sync_s']} s "
          f"(target: within its sync period, {PROXY_SYNC_PERIOD:.0f} s: "
          f"{'met' if max(s['bulk_sync_p99_s'], s['one_change_sync_s'] or 0) < PROXY_SYNC_PERIOD else 'MISSED'})")
    print(f"  {p['pods']} pods (a Deployment): all Ready {p['all_ready_s']:.1f} s after the create, half by "
          f"{p['p50_ready_s']:.1f} s; node stayed Ready: {'yes' if p['node_stayed_ready'] else 'NO'}; "
          f"one more pod: {p['extra_pod'] or 'NOT rejected'}")
    print("  memory (MB)                idle            1,000 Services      + 110 pods")
    print("                          RSS     PSS        RSS     PSS        RSS     PSS")
    for comp in (*NODE_PARTS, "shims", "dns", "apiserver", "controllers"):
        cells = "".join(f"  {r[k][comp]['rss_mb']:7.1f} {r[k][comp]['pss_mb']:7.1f}  "
                        for k in ("memory_idle", "memory_services", "memory_full"))
        n = r["memory_full"][comp]["processes"]
        print(f"    {comp + (f' ({n})' if comp == 'shims' else ''):20s}{cells}")
    for k, label in (("memory_idle", "idle"), ("memory_full", "110 pods + 1,000 Services")):
        node = sum(r[k][c]["rss_mb"] for c in NODE_PARTS)
        pss = sum(r[k][c]["pss_mb"] for c in NODE_PARTS)
        shims = r[k]["shims"]
        print(f"  the node's agent ({' + '.join(NODE_PARTS)}), {label}: RSS {node:.0f} MB, PSS {pss:.0f} MB "
              f"({node / K3S_AGENT_MB:.2f}x / {pss / K3S_AGENT_MB:.2f}x k3s's published agent, {K3S_AGENT_MB} MB); "
              f"the shims add RSS {shims['rss_mb']:.0f} MB, PSS {shims['pss_mb']:.0f} MB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=110)
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--endpoints", type=int, default=5, help="endpoints per Service")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("benchmarks/density.py needs root (network namespaces, containerd)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # ends like ^C: the cluster is removed
    name = f"dens{secrets.token_hex(2)}"
    base = Path(tempfile.mkdtemp(prefix="na-dens-", dir="/tmp"))
    plan = ClusterPlan(name, 1, base)
    r: dict[str, Any] = {"load_before": load()}
    try:
        t0 = time.monotonic()
        up = nodeagent("cluster", "up", "--nodes", "1", "--name", name, "--base-dir", str(base), check=False)
        up_s = time.monotonic() - t0
        print(up.stdout, end="")
        if up.returncode != 0:
            print(up.stderr, file=sys.stderr)
            return 1
        r.update(asyncio.run(measure(plan, args)))
    finally:
        r["load_after"] = load()
        nodeagent("cluster", "down", "--name", name, "--base-dir", str(base), check=False)
        shutil.rmtree(base, ignore_errors=True)
    print_report(r, up_s)
    node_rss = sum(r["memory_full"][c]["rss_mb"] for c in NODE_PARTS)
    print(json.dumps({"cluster_up_s": round(up_s, 2), **r["services"], **{f"pods_{k}": v for k, v in r["pods"].items()},
                      "node_agent_rss_mb": round(node_rss, 1),
                      "node_agent_pss_mb": round(sum(r["memory_full"][c]["pss_mb"] for c in NODE_PARTS), 1),
                      "k3s_agent_mb": K3S_AGENT_MB,
                      "memory": r["memory_full"], "load_before": r["load_before"], "load_after": r["load_after"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
