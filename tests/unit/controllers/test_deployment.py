"""The Deployment controller (with the ReplicaSet controller) against FakeClient: rollout, history,
rollback as kubectl 1.32 does it, scaling, Recreate, and the pure rollout arithmetic."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeagent.controllers.deployment import DeploymentController
from nodeagent.controllers.replicaset import ReplicaSetController
from nodeagent.controllers.rollout import (
    HASH_LABEL,
    REVISION,
    REVISION_HISTORY,
    fenceposts,
    new_rs_new_replicas,
    scaled_value,
    template_hash,
)
from nodeagent.machinery.kinds import DEPLOYMENTS, PODS, REPLICASETS
from tests.helpers.controllers_env import Env, mark_ready


def deployment(name: str = "web", replicas: int = 3, image: str = "nodeagent.local/toolbox:1",
               **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "toolbox", "image": image}]}},
                     **spec}}


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = Env()
    e.add(DeploymentController)
    e.add(ReplicaSetController)
    try:
        yield e
    finally:
        await e.stop()


def get_d(env: Env, name: str = "web") -> dict[str, Any]:
    return next(d for d in env.objects(DEPLOYMENTS) if d["metadata"]["name"] == name)


async def set_image(env: Env, image: str) -> None:
    """kubectl set image: the template's (first) container image changes."""
    d = get_d(env)
    d["spec"]["template"]["spec"]["containers"][0]["image"] = image
    await env.client.update(DEPLOYMENTS, d)


def rss(env: Env) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in env.objects(REPLICASETS)}


def cond(d: dict[str, Any], t: str) -> dict[str, Any]:
    return next(c for c in d["status"]["conditions"] if c["type"] == t)


def rollout_done(d: dict[str, Any]) -> bool:
    """kubectl rollout status's test (polymorphichelpers/rollout_status.go)."""
    st = d.get("status") or {}
    want = d["spec"]["replicas"]
    return (d["metadata"]["generation"] <= st.get("observedGeneration", 0)
            and st.get("updatedReplicas", 0) >= want and st.get("replicas", 0) <= st.get("updatedReplicas", 0)
            and st.get("availableReplicas", 0) >= st.get("updatedReplicas", 0))


async def roll(env: Env, max_total: int, min_available: int, rounds: int = 30) -> None:
    for _ in range(rounds):
        await env.settle()
        total = sum(r["spec"]["replicas"] for r in env.objects(REPLICASETS))
        available = sum((r.get("status") or {}).get("availableReplicas", 0) for r in env.objects(REPLICASETS))
        assert total <= max_total, f"surge exceeded: {total} > {max_total}"
        assert available >= min_available, f"too few available: {available} < {min_available}"
        if rollout_done(get_d(env)):
            return
        await mark_ready(env)
    raise AssertionError(f"rollout did not finish: {get_d(env).get('status')}")


async def test_create_rollout_undo_and_scale(env: Env) -> None:
    await env.start()
    await env.client.create(DEPLOYMENTS, deployment())
    await env.settle()
    (rs1,) = rss(env).values()
    assert rs1["metadata"]["annotations"][REVISION] == "1"
    h1 = rs1["metadata"]["labels"][HASH_LABEL]
    assert rs1["metadata"]["name"] == f"web-{h1}" and rs1["spec"]["selector"]["matchLabels"][HASH_LABEL] == h1
    assert get_d(env)["metadata"]["annotations"][REVISION] == "1"
    assert not rollout_done(get_d(env))
    await mark_ready(env)
    await env.settle()
    d = get_d(env)
    assert rollout_done(d)
    assert d["status"]["observedGeneration"] == d["metadata"]["generation"]
    assert (d["status"]["replicas"], d["status"]["updatedReplicas"], d["status"]["readyReplicas"],
            d["status"]["availableReplicas"]) == (3, 3, 3, 3)
    assert cond(d, "Available")["status"] == "True"
    assert (cond(d, "Progressing")["status"], cond(d, "Progressing")["reason"]) == ("True", "NewReplicaSetAvailable")

    # kubectl set image: a rolling update within maxSurge 25% (1) and maxUnavailable 25% (0)
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "nodeagent.local/toolbox:2"
    await env.client.update(DEPLOYMENTS, d)
    await roll(env, max_total=4, min_available=3)
    sets = rss(env)
    assert len(sets) == 2
    new = next(r for r in sets.values() if r["metadata"]["annotations"][REVISION] == "2")
    assert new["spec"]["replicas"] == 3 and sets[rs1["metadata"]["name"]]["spec"]["replicas"] == 0
    assert len([p for p in env.objects(PODS) if not p["metadata"].get("deletionTimestamp")]) == 3
    assert get_d(env)["metadata"]["annotations"][REVISION] == "2"

    # kubectl rollout undo (1.32, client-side): JSON patch of the template and annotations
    old_template = sets[rs1["metadata"]["name"]]["spec"]["template"]
    old_template["metadata"]["labels"].pop(HASH_LABEL)
    await env.client.patch(DEPLOYMENTS, "web", [
        {"op": "replace", "path": "/spec/template", "value": old_template},
        {"op": "replace", "path": "/metadata/annotations", "value": {REVISION: "2"}},
    ], namespace="default", patch_type="json")
    await roll(env, max_total=4, min_available=3)
    sets = rss(env)
    assert len(sets) == 2  # the old set is reused, not copied
    back = sets[rs1["metadata"]["name"]]
    assert back["spec"]["replicas"] == 3
    assert back["metadata"]["annotations"][REVISION] == "3"
    assert back["metadata"]["annotations"][REVISION_HISTORY] == "1"
    assert get_d(env)["metadata"]["annotations"][REVISION] == "3"

    # kubectl scale
    d = get_d(env)
    d["spec"]["replicas"] = 5
    await env.client.update(DEPLOYMENTS, d)
    await roll(env, max_total=7, min_available=3)
    assert rss(env)[rs1["metadata"]["name"]]["spec"]["replicas"] == 5
    d = get_d(env)
    assert d["status"]["availableReplicas"] == 5 and rollout_done(d)


async def test_recreate_scales_old_to_zero_before_new(env: Env) -> None:
    await env.start()
    await env.client.create(DEPLOYMENTS, deployment(strategy={"type": "Recreate"}))
    await env.settle()
    await mark_ready(env)
    await env.settle()
    await set_image(env, "nodeagent.local/toolbox:2")
    await env.settle()
    sets = rss(env)
    # old pods are deleted and there is no new set while any old pod remains (FakeClient deletes
    # unbound pods at once, so the new set may appear in the same settle: then the old is at 0)
    old = next(r for r in sets.values() if r["metadata"]["annotations"][REVISION] == "1")
    assert old["spec"]["replicas"] == 0
    await mark_ready(env)
    await env.settle()
    d = get_d(env)
    assert rollout_done(d)
    images = {p["spec"]["containers"][0]["image"] for p in env.objects(PODS)}
    assert images == {"nodeagent.local/toolbox:2"}


async def test_revision_history_limit(env: Env) -> None:
    await env.start()
    await env.client.create(DEPLOYMENTS, deployment(replicas=1, revisionHistoryLimit=1))
    for tag in ("2", "3", "4"):
        await roll(env, max_total=2, min_available=0)
        await set_image(env, f"nodeagent.local/toolbox:{tag}")
    await roll(env, max_total=2, min_available=0)
    await env.settle()
    revisions = sorted(int(r["metadata"]["annotations"][REVISION]) for r in env.objects(REPLICASETS))
    assert revisions == [3, 4]


def test_fenceposts_round_as_upstream() -> None:
    d = deployment(replicas=10)
    assert fenceposts(d) == (3, 2)  # 25% of 10: surge rounds up, unavailable rounds down
    d1 = deployment(replicas=1)
    assert fenceposts(d1) == (1, 0)
    d0 = deployment(replicas=3, strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0,
                                                                                     "maxUnavailable": "0%"}})
    assert fenceposts(d0) == (0, 1)  # both zero would stall: unavailable becomes 1
    assert scaled_value("50%", 5, True, "25%") == 3 and scaled_value("50%", 5, False, "25%") == 2


def test_new_replicaset_growth_is_bounded_by_surge() -> None:
    d = deployment(replicas=4, strategy={"rollingUpdate": {"maxSurge": 2}})
    old = {"spec": {"replicas": 4}}
    new = {"spec": {"replicas": 0}}
    assert new_rs_new_replicas(d, [old, new], new) == 2
    assert new_rs_new_replicas(d, [{"spec": {"replicas": 2}}, {"spec": {"replicas": 2}}], {"spec": {"replicas": 2}}) == 4


def test_template_hash_is_stable_and_changes_with_template() -> None:
    t = deployment()["spec"]["template"]
    assert template_hash(t) == template_hash(dict(t))
    t2 = deployment(image="nodeagent.local/toolbox:2")["spec"]["template"]
    assert template_hash(t) != template_hash(t2)
    assert template_hash(t) != template_hash(t, 1)
    assert set(template_hash(t)) <= set("bcdfghjklmnpqrstvwxz2456789")


async def test_scaling_in_the_middle_of_a_rollout_is_proportional(env: Env) -> None:
    await env.start()
    await env.client.create(DEPLOYMENTS, deployment(replicas=10, strategy={
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}}))
    await env.settle()
    await mark_ready(env)
    await env.settle()
    await set_image(env, "nodeagent.local/toolbox:2")
    await env.settle()  # new pods are not ready: the rollout stalls part way
    before = {r["metadata"]["annotations"][REVISION]: r["spec"]["replicas"] for r in env.objects(REPLICASETS)}
    assert sum(before.values()) == 13 and before["2"] > 0 and before["1"] > 0
    d = get_d(env)
    d["spec"]["replicas"] = 20
    await env.client.update(DEPLOYMENTS, d)
    await env.settle()
    after = {r["metadata"]["annotations"][REVISION]: r["spec"]["replicas"] for r in env.objects(REPLICASETS)}
    # upstream's arithmetic: each set scaled by 23/13 of its size (8 -> 14, 5 -> 9)
    assert after == {"1": 14, "2": 9}
    await roll(env, max_total=23, min_available=8)
    final = {r["metadata"]["annotations"][REVISION]: r["spec"]["replicas"] for r in env.objects(REPLICASETS)}
    assert final == {"1": 0, "2": 20}


async def test_pause_holds_the_template_resume_rolls_out(env: Env) -> None:
    await env.start()
    await env.client.create(DEPLOYMENTS, deployment(replicas=2))
    await roll(env, max_total=3, min_available=0)
    d = get_d(env)
    d["spec"]["paused"] = True
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "nodeagent.local/toolbox:2"
    await env.client.update(DEPLOYMENTS, d)
    await env.settle()
    assert len(env.objects(REPLICASETS)) == 1
    assert cond(get_d(env), "Progressing")["reason"] == "DeploymentPaused"
    d = get_d(env)
    d["spec"]["paused"] = False
    await env.client.update(DEPLOYMENTS, d)
    await roll(env, max_total=3, min_available=2)
    assert len(env.objects(REPLICASETS)) == 2
    assert cond(get_d(env), "Progressing")["reason"] == "NewReplicaSetAvailable"
