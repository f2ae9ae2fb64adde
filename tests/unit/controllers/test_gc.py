"""Garbage collection by ownerReferences against FakeClient: background, foreground, orphan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeagent.controllers.garbagecollector import GarbageCollector
from nodeagent.machinery.kinds import CONFIGMAPS, DEPLOYMENTS, PODS, REPLICASETS
from tests.helpers.controllers_env import Env, pod


def owned(obj: dict[str, Any], owner: dict[str, Any], kind: str, api: str, block: bool = True) -> dict[str, Any]:
    obj["metadata"]["ownerReferences"] = [*obj["metadata"].get("ownerReferences", []), {
        "apiVersion": api, "kind": kind, "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
        "controller": True, "blockOwnerDeletion": block}]
    return obj


TEMPLATE = {"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "nodeagent.local/toolbox:1"}]}}


def rs(name: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}}, "template": TEMPLATE}}


def deploy(name: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}}, "template": TEMPLATE}}


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = Env()
    e.add(GarbageCollector)
    try:
        yield e
    finally:
        await e.stop()


async def chain(env: Env) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    d = await env.client.create(DEPLOYMENTS, deploy("web"))
    r = await env.client.create(REPLICASETS, owned(rs("web-1"), d, "Deployment", "apps/v1"))
    p = await env.client.create(PODS, owned(pod("web-1-a"), r, "ReplicaSet", "apps/v1"))
    return d, r, p


def names(env: Env, kind: Any) -> set[str]:
    return {o["metadata"]["name"] for o in env.objects(kind)}


async def test_background_deletes_dependents_in_cascade(env: Env) -> None:
    await env.start()
    await chain(env)
    keep = await env.client.create(PODS, pod("unrelated"))
    await env.settle()
    assert names(env, REPLICASETS) == {"web-1"}  # owners exist: nothing happens
    await env.client.delete(DEPLOYMENTS, "web", "default", propagation_policy="Background")
    await env.settle()
    assert names(env, REPLICASETS) == set()
    assert names(env, PODS) == {keep["metadata"]["name"]}


async def test_dangling_reference_to_missing_owner_is_collected(env: Env) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default",
                                                                "ownerReferences": [{
                                                                    "apiVersion": "apps/v1", "kind": "Deployment",
                                                                    "name": "ghost", "uid": "nope"}]}}
    env.client.seed(CONFIGMAPS, cm)
    await env.start()
    await env.settle()
    assert env.objects(CONFIGMAPS) == []


async def test_foreground_waits_for_dependents_then_drops_finalizer(env: Env) -> None:
    await env.start()
    await chain(env)
    await env.settle()
    await env.client.delete(DEPLOYMENTS, "web", "default", propagation_policy="Foreground")
    await env.settle()
    assert names(env, DEPLOYMENTS) == set() and names(env, REPLICASETS) == set() and names(env, PODS) == set()
    fg = [a for a in env.client.actions if a.verb == "delete" and a.kind == "replicasets"]
    assert fg and fg[0].body["propagationPolicy"] == "Foreground"


async def test_orphan_removes_owner_references(env: Env) -> None:
    await env.start()
    await chain(env)
    await env.settle()
    d = next(iter(env.objects(DEPLOYMENTS)))
    d["metadata"]["finalizers"] = ["orphan"]
    await env.client.update(DEPLOYMENTS, d)
    await env.client.delete(DEPLOYMENTS, "web", "default")
    await env.settle()
    assert names(env, DEPLOYMENTS) == set()
    (r,) = env.objects(REPLICASETS)
    assert not r["metadata"].get("ownerReferences")
    assert names(env, PODS) == {"web-1-a"}


async def test_object_with_one_live_owner_only_loses_the_dead_reference(env: Env) -> None:
    await env.start()
    a = await env.client.create(DEPLOYMENTS, deploy("a"))
    b = await env.client.create(DEPLOYMENTS, deploy("b"))
    r = rs("shared")
    owned(r, a, "Deployment", "apps/v1")
    owned(r, b, "Deployment", "apps/v1")
    r["metadata"]["ownerReferences"][1]["controller"] = False
    await env.client.create(REPLICASETS, r)
    await env.settle()
    await env.client.delete(DEPLOYMENTS, "a", "default")
    await env.settle()
    (left,) = env.objects(REPLICASETS)
    assert [o["name"] for o in left["metadata"]["ownerReferences"]] == ["b"]
