"""The scheduler against FakeClient: filters, scores, binding, FailedScheduling, retries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from nodeagent.controllers.scheduler import Scheduler
from nodeagent.controllers.scheduling import failure_message, pod_info
from nodeagent.machinery.kinds import EVENTS, NODES, PODS
from tests.helpers.controllers_env import Env, node, pod


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = Env()
    e.sched = e.add(Scheduler)  # type: ignore[attr-defined]
    try:
        yield e
    finally:
        await e.stop()


def node_of(e: Env, name: str) -> str | None:
    return next(p["spec"].get("nodeName") for p in e.objects(PODS) if p["metadata"]["name"] == name)


async def test_binds_to_a_ready_node_with_room(env: Env) -> None:
    env.client.seed(NODES, node("small", cpu="1"))
    env.client.seed(NODES, node("down", ready=False))
    env.client.seed(NODES, node("big", cpu="8"))
    await env.start()
    await env.client.create(PODS, pod("p1", cpu="2"))
    await env.settle()
    assert node_of(env, "p1") == "big"
    binds = [a for a in env.client.actions if a.subresource == "binding"]
    assert binds and binds[0].body["target"] == {"apiVersion": "v1", "kind": "Node", "name": "big"}
    await env.sched.recorder.flush()  # type: ignore[attr-defined]
    assert any(ev["reason"] == "Scheduled" and "default/p1 to big" in ev["message"] for ev in env.objects(EVENTS))


async def test_unschedulable_pod_gets_event_condition_and_retry_when_a_node_appears(env: Env) -> None:
    env.client.seed(NODES, node("n1", cpu="1"))
    await env.start()
    await env.client.create(PODS, pod("big", cpu="3"))
    await env.settle()
    assert node_of(env, "big") is None
    await env.sched.recorder.flush()  # type: ignore[attr-defined]
    evs = [ev for ev in env.objects(EVENTS) if ev["reason"] == "FailedScheduling"]
    assert evs and evs[0]["message"] == "0/1 nodes are available: 1 Insufficient cpu."
    p = next(p for p in env.objects(PODS) if p["metadata"]["name"] == "big")
    cond = next(c for c in p["status"]["conditions"] if c["type"] == "PodScheduled")
    assert (cond["status"], cond["reason"]) == ("False", "Unschedulable")
    # a bigger node joins: the parked pod is retried without any change to the pod
    await env.client.create(NODES, node("n2", cpu="4"))
    await env.settle()
    assert node_of(env, "big") == "n2"


async def test_filters_selector_taints_cordon_ports(env: Env) -> None:
    env.client.seed(NODES, node("ssd", labels={"disk": "ssd"}))
    env.client.seed(NODES, node("tainted", labels={"disk": "ssd"},
                                taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]))
    env.client.seed(NODES, node("cordoned", labels={"disk": "ssd"}, unschedulable=True))
    env.client.seed(NODES, node("hdd", labels={"disk": "hdd"}))
    await env.start()
    await env.client.create(PODS, pod("sel", nodeSelector={"disk": "ssd"}))
    await env.client.create(PODS, pod("tol", nodeSelector={"disk": "ssd"}, tolerations=[
        {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}],
        affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["tainted"]}]}]}}}))
    hp = pod("hp1", nodeSelector={"disk": "hdd"})
    hp["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 8080}]
    await env.client.create(PODS, hp)
    await env.settle()
    assert node_of(env, "sel") == "ssd"
    assert node_of(env, "tol") == "tainted"
    assert node_of(env, "hp1") == "hdd"
    hp2 = pod("hp2", nodeSelector={"disk": "hdd"})
    hp2["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 8080}]
    await env.client.create(PODS, hp2)
    await env.settle()
    assert node_of(env, "hp2") is None
    await env.sched.recorder.flush()  # type: ignore[attr-defined]
    msg = [ev["message"] for ev in env.objects(EVENTS) if ev["reason"] == "FailedScheduling"][-1]
    assert msg == ("0/4 nodes are available: 1 node(s) didn't have free ports for the requested pod ports, "
                   "1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint "
                   "{dedicated: db}, 1 node(s) were unschedulable.")


async def test_spreads_pods_of_one_owner_and_respects_pod_count(env: Env) -> None:
    for i in range(3):
        env.client.seed(NODES, node(f"n{i}", pods="2"))
    await env.start()
    owner = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": True}]
    for i in range(7):
        p = pod(f"p{i}")
        p["metadata"]["ownerReferences"] = owner
        await env.client.create(PODS, p)
    await env.settle()
    placed = [node_of(env, f"p{i}") for i in range(7)]
    counts = {n: placed.count(n) for n in ("n0", "n1", "n2")}
    assert counts == {"n0": 2, "n1": 2, "n2": 2}  # spread evenly, then full (pods: 2)
    assert placed.count(None) == 1


async def test_ignores_other_schedulers_and_bound_pods(env: Env) -> None:
    env.client.seed(NODES, node("n1"))
    await env.start()
    await env.client.create(PODS, pod("other", schedulerName="my-scheduler"))
    await env.client.create(PODS, pod("bound", node_name="n1"))
    await env.client.create(PODS, pod("gated", schedulingGates=[{"name": "example.com/wait"}]))
    await env.settle()
    assert not [a for a in env.client.actions if a.subresource == "binding"]
    await env.client.patch(PODS, "gated", {"spec": {"schedulingGates": None}}, namespace="default")
    await env.settle()
    assert node_of(env, "gated") == "n1"


def test_pod_requests_include_init_containers_and_limits() -> None:
    p = pod("x", cpu="100m")
    p["spec"]["containers"].append({"name": "d", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}})
    p["spec"]["initContainers"] = [{"name": "i", "resources": {"requests": {"cpu": "2"}}}]
    pi = pod_info(p)
    assert pi.requests == {"cpu": 2000, "memory": 1024**3}


def test_failure_message_format() -> None:
    assert failure_message(0, {}) == "no nodes available to schedule pods"
    assert failure_message(3, {"Insufficient memory": 1, "Insufficient cpu": 2}) == \
        "0/3 nodes are available: 1 Insufficient memory, 2 Insufficient cpu."


async def test_parked_pod_retried_when_its_tolerations_change(env: Env) -> None:
    env.client.seed(NODES, node("gpu", taints=[{"key": "gpu", "effect": "NoSchedule"}]))
    await env.start()
    await env.client.create(PODS, pod("p"))
    await env.settle()
    assert node_of(env, "p") is None and "default/p" in env.sched.unschedulable  # type: ignore[attr-defined]
    await env.client.patch(PODS, "p", {"spec": {"tolerations": [{"key": "gpu", "operator": "Exists"}]}},
                           namespace="default")
    await env.settle()
    assert node_of(env, "p") == "gpu"


async def test_failed_binding_is_forgotten_and_retried(env: Env) -> None:
    env.client.seed(NODES, node("n1"))
    await env.start()
    await env.client.create(PODS, pod("p"))
    env.client.fail_next("create", "pods")  # the next create on pods is the binding: a 500 once
    await env.settle()
    assert node_of(env, "p") is None and env.sched.assumed == set()  # type: ignore[attr-defined]
    assert env.sched.nodes["n1"].pods == {}  # type: ignore[attr-defined]
    await asyncio.sleep(0.05)  # the rate-limited retry fires after a few milliseconds
    await env.settle()
    assert node_of(env, "p") == "n1"
