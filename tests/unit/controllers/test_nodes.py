"""Node IPAM and node lifecycle against FakeClient and a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from nodeagent.controllers.base import Options
from nodeagent.controllers.nodeipam import CIDRSet, NodeIpamController
from nodeagent.controllers.nodelifecycle import NodeLifecycleController, eviction_deadline
from nodeagent.machinery.kinds import LEASES, NODES, PODS
from tests.helpers.controllers_env import Env, node, pod


def get_node(env: Env, name: str) -> dict:
    return next(n for n in env.objects(NODES) if n["metadata"]["name"] == name)


async def test_ipam_assigns_distinct_ranges_and_rebuilds_from_nodes() -> None:
    env = Env(Options(cluster_cidr="10.244.0.0/16", node_cidr_mask_size=24))
    taken = node("old")
    taken["spec"] = {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]}
    env.client.seed(NODES, taken)
    env.client.seed(NODES, node("a"))
    env.add(NodeIpamController)
    try:
        await env.start()
        await env.client.create(NODES, node("b"))
        await env.settle()
        cidrs = {n["metadata"]["name"]: n["spec"].get("podCIDR") for n in env.objects(NODES)}
        assert cidrs["old"] == "10.244.0.0/24"
        assert {cidrs["a"], cidrs["b"]} == {"10.244.1.0/24", "10.244.2.0/24"}
        assert get_node(env, "a")["spec"]["podCIDRs"] == [cidrs["a"]]
    finally:
        await env.stop()


def test_cidr_set_exhaustion_and_release() -> None:
    s = CIDRSet("10.0.0.0/30", 31)
    assert [s.allocate(), s.allocate()] == ["10.0.0.0/31", "10.0.0.2/31"]
    with pytest.raises(RuntimeError, match="in use"):
        s.allocate()
    s.release("10.0.0.0/31")
    assert s.allocate() == "10.0.0.0/31"


@pytest.fixture
async def life() -> AsyncIterator[Env]:
    env = Env(Options(node_monitor_grace_period=40, default_toleration_seconds=30))
    env.ctrl = env.add(NodeLifecycleController)  # type: ignore[attr-defined]
    try:
        yield env
    finally:
        await env.stop()


async def renew(env: Env, name: str) -> None:
    spec = {"holderIdentity": name, "renewTime": f"2027-01-01T00:00:{int(env.clock.now()) % 60:02d}.000000Z"}
    try:
        lease = await env.client.get(LEASES, name, "kube-node-lease")
        lease["spec"] = spec
        await env.client.update(LEASES, lease)
    except Exception:
        await env.client.create(LEASES, {"metadata": {"name": name, "namespace": "kube-node-lease"}, "spec": spec})


async def test_lease_expiry_marks_unknown_taints_and_evicts(life: Env) -> None:
    env = life
    ctrl = env.ctrl  # type: ignore[attr-defined]
    env.client.seed(NODES, node("n1"))
    env.client.seed(NODES, node("n2"))
    victim = pod("victim", node_name="n1")
    victim["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    env.client.seed(PODS, victim)
    patient = pod("patient", node_name="n1", tolerations=[
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 100}])
    env.client.seed(PODS, patient)
    forever = pod("forever", node_name="n1", tolerations=[{"operator": "Exists"}])
    env.client.seed(PODS, forever)
    await env.start()
    await renew(env, "n1")
    await renew(env, "n2")
    await env.settle()
    for _ in range(5):  # n2 keeps renewing, n1 stops
        env.clock.advance(10)
        await renew(env, "n2")
        await env.settle()
        await ctrl.monitor_once()
        await env.settle()
    n1, n2 = get_node(env, "n1"), get_node(env, "n2")
    ready = next(c for c in n1["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("Unknown", "NodeStatusUnknown")
    assert {(t["key"], t["effect"]) for t in n1["spec"]["taints"]} == {
        ("node.kubernetes.io/unreachable", "NoSchedule"), ("node.kubernetes.io/unreachable", "NoExecute")}
    assert not n2["spec"].get("taints")
    v = next(p for p in env.objects(PODS) if p["metadata"]["name"] == "victim")
    assert next(c for c in v["status"]["conditions"] if c["type"] == "Ready")["status"] == "False"
    # the default toleration (30 s here) keeps pods for a while ...
    await ctrl.evict_once()
    assert {p["metadata"]["name"] for p in env.objects(PODS)} == {"victim", "patient", "forever"}
    env.clock.advance(31)
    await ctrl.evict_once()
    await env.settle()
    left = {p["metadata"]["name"]: p for p in env.objects(PODS)}
    assert "victim" not in left or left["victim"]["metadata"].get("deletionTimestamp")
    assert not left["patient"]["metadata"].get("deletionTimestamp")
    env.clock.advance(100)
    await ctrl.evict_once()
    left = {p["metadata"]["name"]: p for p in env.objects(PODS)}
    assert "patient" not in left or left["patient"]["metadata"].get("deletionTimestamp")
    assert not left["forever"]["metadata"].get("deletionTimestamp")
    # the node comes back: Ready again, taints gone
    back = get_node(env, "n1")
    for c in back["status"]["conditions"]:
        if c["type"] == "Ready":
            c.update({"status": "True", "reason": "KubeletReady", "lastHeartbeatTime": "2027-01-02T00:00:00Z"})
    await env.client.update_status(NODES, back)
    await env.settle()
    assert not get_node(env, "n1")["spec"].get("taints")


async def test_not_ready_node_gets_not_ready_taints(life: Env) -> None:
    env = life
    env.client.seed(NODES, node("n1", ready=False))
    env.client.seed(NODES, node("n2", unschedulable=True))
    await env.start()
    await env.settle()
    assert {(t["key"], t["effect"]) for t in get_node(env, "n1")["spec"]["taints"]} == {
        ("node.kubernetes.io/not-ready", "NoSchedule"), ("node.kubernetes.io/not-ready", "NoExecute")}
    assert [t["key"] for t in get_node(env, "n2")["spec"]["taints"]] == ["node.kubernetes.io/unschedulable"]


def test_eviction_deadline_rules() -> None:
    taint = {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": "2027-01-01T00:00:00Z"}
    t0 = 1798761600.0  # 2027-01-01T00:00:00Z
    assert eviction_deadline(pod("p"), [taint], 300, {}, t0) == t0 + 300
    other = {"key": "dedicated", "effect": "NoExecute"}
    assert eviction_deadline(pod("p"), [other], 300, {}, t0) == t0  # untolerated: now
    tol = pod("p", tolerations=[{"key": "dedicated", "operator": "Exists"}])
    assert eviction_deadline(tol, [other], 300, {}, t0) is None


async def test_podgc_force_deletes_pods_of_deleted_nodes() -> None:
    from nodeagent.controllers.podgc import PodGCController

    env = Env()
    gc = env.add(lambda ctx: PodGCController(ctx, quarantine=40))
    env.client.seed(NODES, node("alive"))
    env.client.seed(PODS, pod("kept", node_name="alive"))
    env.client.seed(PODS, pod("orphan", node_name="gone"))
    env.client.seed(PODS, pod("pending"))
    try:
        await env.start()
        assert await gc.gc_once() == 0  # quarantine: the node may just be appearing
        env.clock.advance(41)
        assert await gc.gc_once() == 1
        assert {p["metadata"]["name"] for p in env.objects(PODS)} == {"kept", "pending"}
        d = [a for a in env.client.actions if a.verb == "delete"][0]
        assert d.body["gracePeriodSeconds"] == 0
    finally:
        await env.stop()
