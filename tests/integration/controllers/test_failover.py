"""Leader election between two `nodeagent controllers` processes (kill -9 the leader), and node
lifecycle: a node whose Lease stops goes Ready=Unknown, gets the unreachable taints, its pods are
evicted and replaced elsewhere, and the taints go when it is back."""

from __future__ import annotations

from pathlib import Path

from nodeagent.client import Client, ClientConfig, NotFound
from nodeagent.machinery.kinds import LEASES, NODES, PODS, REPLICASETS
from tests.helpers.apiserver import ApiServerProcess
from tests.helpers.controllers_kubelet import SimulatedKubelet
from tests.helpers.controllers_process import eventually, http_get, start_controllers

FAST_LEASE = ["--leader-elect-lease-duration", "4", "--leader-elect-renew-deadline", "3",
              "--leader-elect-retry-period", "0.5"]


def replicaset(name: str, replicas: int, **pod_spec: object) -> dict:
    labels = {"app": name}
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": "nodeagent.local/toolbox:1"}],
                                           **pod_spec}}}}


async def leader_metric(port: int) -> float | None:
    try:
        _, body = await http_get(f"http://127.0.0.1:{port}/metrics")
    except OSError:
        return None
    for line in body.splitlines():
        if line.startswith("leader_election_master_status{"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def metric_is(port: int, value: float) -> bool:
    return await leader_metric(port) == value


async def test_leader_failover_after_kill9(apiserver: ApiServerProcess, tmp_path: Path) -> None:
    client = Client(ClientConfig.from_kubeconfig(apiserver.kubeconfig))
    kubelet = SimulatedKubelet(client, ["fo-a"])
    procs = []
    try:
        await kubelet.start()
        procs = [start_controllers(apiserver.kubeconfig, tmp_path, ident, *FAST_LEASE) for ident in ("ctl-a", "ctl-b")]

        async def holder() -> str:
            try:
                lease = await client.get(LEASES, "kube-controller-manager", "kube-system")
            except NotFound:
                return ""
            return str((lease.get("spec") or {}).get("holderIdentity") or "")

        first = await eventually(holder, 30, what="a leader")
        leader = next(p for p in procs if p.identity == first)
        standby = next(p for p in procs if p.identity != first)
        await eventually(lambda: metric_is(leader.metrics_port, 1.0), 20, what="leader metric")
        # one acts, the other waits
        await eventually(lambda: metric_is(standby.metrics_port, 0.0), 20, what="standby metric")
        await client.create(REPLICASETS, replicaset("one", 1))

        async def running(name: str) -> bool:
            pods = (await client.list(PODS, "default", label_selector=f"app={name}"))["items"]
            return len(pods) >= 1 and all(p.get("status", {}).get("phase") == "Running" for p in pods)

        await eventually(lambda: running("one"), 30, what="the leader's pod running")
        assert "controllers running" not in standby.tail(100000)

        leader.kill9()
        second = await eventually(lambda: _other(holder, first), 30, what="takeover by the standby")
        assert second == standby.identity
        lease = await client.get(LEASES, "kube-controller-manager", "kube-system")
        assert lease["spec"]["leaseTransitions"] >= 1
        # the new leader acts
        await client.create(REPLICASETS, replicaset("two", 2))
        await eventually(lambda: running("two"), 30, what="the new leader's pods running")
        assert standby.alive(), standby.tail()
    finally:
        for p in procs:
            p.stop()
        await kubelet.stop()
        await client.close()


async def _other(holder, first: str) -> str | None:  # type: ignore[no-untyped-def]
    h = await holder()
    return h if h and h != first else None


async def test_node_lease_stops_notready_taints_eviction(apiserver: ApiServerProcess, tmp_path: Path) -> None:
    client = Client(ClientConfig.from_kubeconfig(apiserver.kubeconfig))
    kubelet = SimulatedKubelet(client, ["nl-a", "nl-b"], lease_interval=0.5)
    ctl = None
    try:
        await kubelet.start()
        ctl = start_controllers(apiserver.kubeconfig, tmp_path, "ctl-nl", "--no-leader-elect",
                                "--node-monitor-grace-period", "5", "--node-monitor-period", "0.5",
                                "--default-toleration-seconds", "2")
        # the apiserver's DefaultTolerationSeconds admission gives pods 300 s; a short explicit one here
        await client.create(REPLICASETS, replicaset("web", 2, tolerations=[
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 2}]))

        async def pods_by_node() -> dict[str, list[str]]:
            out: dict[str, list[str]] = {}
            for p in (await client.list(PODS, "default", label_selector="app=web"))["items"]:
                if p.get("status", {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp"):
                    out.setdefault(p["spec"]["nodeName"], []).append(p["metadata"]["name"])
            return out

        spread = await eventually(lambda: _both(pods_by_node), 30, what="a pod on each node")
        victim = spread["nl-b"][0]
        kubelet.stop_lease("nl-b")

        async def node_unknown() -> dict | None:
            n = await client.get(NODES, "nl-b")
            ready = next(c for c in n["status"]["conditions"] if c["type"] == "Ready")
            keys = {(t["key"], t["effect"]) for t in n["spec"].get("taints") or []}
            ok = ready["status"] == "Unknown" and ("node.kubernetes.io/unreachable", "NoExecute") in keys
            return n if ok else None

        n = await eventually(node_unknown, 30, what="nl-b Ready=Unknown with the unreachable taint")
        assert next(c for c in n["status"]["conditions"] if c["type"] == "Ready")["reason"] == "NodeStatusUnknown"

        async def evicted() -> bool:
            try:
                p = await client.get(PODS, victim, "default")
            except NotFound:
                return True
            return bool(p["metadata"].get("deletionTimestamp"))

        await eventually(evicted, 30, what=f"pod {victim} evicted from nl-b")

        async def replaced() -> bool:
            by = await pods_by_node()
            return len(by.get("nl-a", [])) == 2

        await eventually(replaced, 30, what="the replacement running on nl-a")
        a = await client.get(NODES, "nl-a")
        assert not a["spec"].get("taints")

        await kubelet.resume("nl-b")

        async def untainted() -> bool:
            n = await client.get(NODES, "nl-b")
            return not any(t["key"].startswith("node.kubernetes.io/") for t in n["spec"].get("taints") or [])

        await eventually(untainted, 30, what="taints removed after recovery")
    finally:
        if ctl is not None:
            ctl.stop()
        await kubelet.stop()
        await client.close()


async def _both(fn) -> dict | None:  # type: ignore[no-untyped-def]
    by = await fn()
    return by if by.get("nl-a") and by.get("nl-b") else None
