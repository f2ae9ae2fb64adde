"""The ReplicaSet controller against FakeClient."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeagent.controllers.objects import controller_ref
from nodeagent.controllers.replicaset import ReplicaSetController
from nodeagent.machinery.kinds import PODS, REPLICASETS
from tests.helpers.controllers_env import Env, mark_ready, pod


def rs(name: str, replicas: int, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    labels = labels or {"app": name}
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": "nodeagent.local/toolbox:1"}]}},
                     **spec}}


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = Env()
    e.add(ReplicaSetController)
    try:
        yield e
    finally:
        await e.stop()


def rs_status(env: Env, name: str) -> dict[str, Any]:
    return next(r for r in env.objects(REPLICASETS) if r["metadata"]["name"] == name).get("status") or {}


async def test_creates_owned_pods_and_reports_status(env: Env) -> None:
    await env.start()
    await env.client.create(REPLICASETS, rs("web", 3))
    await env.settle()
    pods = env.objects(PODS)
    assert len(pods) == 3
    for p in pods:
        ref = controller_ref(p)
        assert ref and ref["kind"] == "ReplicaSet" and ref["name"] == "web" and ref["blockOwnerDeletion"]
        assert p["metadata"]["name"].startswith("web-") and p["metadata"]["labels"] == {"app": "web"}
    assert rs_status(env, "web") == {"replicas": 3, "fullyLabeledReplicas": 3, "readyReplicas": 0,
                                     "availableReplicas": 0, "observedGeneration": 1}
    await mark_ready(env)
    await env.settle()
    assert rs_status(env, "web")["availableReplicas"] == 3


async def test_scale_down_deletes_not_ready_first_and_replaces_deleted(env: Env) -> None:
    await env.start()
    await env.client.create(REPLICASETS, rs("web", 3))
    await env.settle()
    await mark_ready(env)
    await env.client.create(REPLICASETS, rs("other", 0, labels={"app": "other"}))
    await env.settle()
    # one more pod not ready yet: scaling 4 -> 3 must remove that one
    cur = next(r for r in env.objects(REPLICASETS) if r["metadata"]["name"] == "web")
    cur["spec"]["replicas"] = 4
    await env.client.update(REPLICASETS, cur)
    await env.settle()
    new_pod = next(p for p in env.objects(PODS) if (p.get("status") or {}).get("phase") != "Running")
    cur = next(r for r in env.objects(REPLICASETS) if r["metadata"]["name"] == "web")
    cur["spec"]["replicas"] = 3
    await env.client.update(REPLICASETS, cur)
    await env.settle()
    names = {p["metadata"]["name"] for p in env.objects(PODS)}
    assert len(names) == 3 and new_pod["metadata"]["name"] not in names
    # a deleted pod is replaced
    victim = sorted(names)[0]
    await env.client.delete(PODS, victim, "default")
    await env.settle()
    names2 = {p["metadata"]["name"] for p in env.objects(PODS)}
    assert len(names2) == 3 and victim not in names2


async def test_adopts_orphans_and_releases_non_matching(env: Env) -> None:
    env.client.seed(PODS, pod("orphan", labels={"app": "web"}))
    await env.start()
    await env.client.create(REPLICASETS, rs("web", 2))
    await env.settle()
    pods = {p["metadata"]["name"]: p for p in env.objects(PODS)}
    assert len(pods) == 2 and "orphan" in pods
    assert controller_ref(pods["orphan"])["name"] == "web"  # type: ignore[index]
    # relabel it: the set lets it go and makes a replacement
    p = pods["orphan"]
    p["metadata"]["labels"] = {"app": "gone"}
    await env.client.update(PODS, p)
    await env.settle()
    pods = {p["metadata"]["name"]: p for p in env.objects(PODS)}
    assert len(pods) == 3
    assert controller_ref(pods["orphan"]) is None


async def test_min_ready_seconds_delays_availability(env: Env) -> None:
    await env.start()
    await env.client.create(REPLICASETS, rs("web", 1, minReadySeconds=30))
    await env.settle()
    await mark_ready(env)
    await env.settle()
    st = rs_status(env, "web")
    assert st["readyReplicas"] == 1 and st["availableReplicas"] == 0
    env.clock.advance(31)
    cur = next(r for r in env.objects(REPLICASETS) if r["metadata"]["name"] == "web")
    env.controllers[0].enqueue(cur)
    await env.settle()
    assert rs_status(env, "web")["availableReplicas"] == 1


async def test_no_duplicate_pods_while_cache_is_behind(env: Env) -> None:
    await env.start()
    await env.client.create(REPLICASETS, rs("web", 5))
    await env.settle()
    ctrl = env.controllers[0]
    # reconcile again and again before any watch event is delivered: expectations hold it back
    for _ in range(3):
        ctrl.queue.add("default/web")
        await ctrl.drain()
    await env.settle()
    assert len(env.objects(PODS)) == 5
