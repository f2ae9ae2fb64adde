"""The apiserver's own loops on a fake clock: nothing here sleeps on real time."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeagent.api.errors import ApiError
from nodeagent.api.memory_store import MemoryStore
from nodeagent.api.registry import DeleteOptions, ListOptions, Registry
from nodeagent.api.registry.strategies import STRATEGIES
from nodeagent.clock import FakeClock
from nodeagent.machinery import kinds


@pytest.fixture
async def env() -> AsyncIterator[tuple[Registry, FakeClock]]:
    clock = FakeClock()
    r = Registry(MemoryStore(), service_cidr="10.96.0.0/24", clock=clock)
    await r.start(advertise=("192.168.56.2", 6443))
    try:
        yield r, clock
    finally:
        await r.close()


async def until(cond: Any, what: str) -> None:
    for _ in range(200):
        if await cond():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"not reached: {what}")


async def gone(reg: Registry, kind: Any, ns: str | None, name: str) -> bool:
    try:
        await reg.get(kind, ns, name)
    except ApiError as e:
        return e.code == 404
    return False


async def test_every_served_kind_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(kinds.KINDS)


async def test_bootstrap_makes_the_system_namespaces_and_the_kubernetes_service(env: Any) -> None:
    reg, _ = env
    names = {e.name for e in (await reg.list(kinds.NAMESPACES, None, ListOptions())).items}
    assert names == {"default", "kube-system", "kube-public", "kube-node-lease"}
    svc = (await reg.get(kinds.SERVICES, "default", "kubernetes")).obj
    assert svc["spec"]["clusterIP"] == "10.96.0.1"
    ep = (await reg.get(kinds.ENDPOINTS, "default", "kubernetes")).obj
    assert ep["subsets"][0]["addresses"] == [{"ip": "192.168.56.2"}]


async def test_namespace_is_emptied_and_removed_on_wake_ups_alone(env: Any) -> None:
    reg, clock = env
    await reg.create(kinds.NAMESPACES, None, {"metadata": {"name": "tmp"}})
    await reg.create(kinds.CONFIGMAPS, "tmp", {"metadata": {"name": "c"}})
    await reg.create(kinds.PODS, "tmp", {"metadata": {"name": "p"}, "spec": {
        "nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}})
    await reg.delete(kinds.NAMESPACES, None, "tmp", DeleteOptions())
    # the configmap goes at once, the bound pod is only marked: the namespace waits for it
    await until(lambda: gone(reg, kinds.CONFIGMAPS, "tmp", "c"), "configmap deleted")
    assert (await reg.get(kinds.PODS, "tmp", "p")).obj["metadata"]["deletionTimestamp"]
    assert not await gone(reg, kinds.NAMESPACES, None, "tmp")
    # the kubelet confirms: that deletion wakes the finalizer, no clock tick needed
    await reg.delete(kinds.PODS, "tmp", "p", DeleteOptions(grace_period_seconds=0))
    await until(lambda: gone(reg, kinds.NAMESPACES, None, "tmp"), "namespace removed")
    assert clock.sleepers >= 1  # the loops wait on the clock, never on real time


async def test_events_expire_when_the_clock_passes_their_ttl(env: Any) -> None:
    reg, clock = env
    reg.event_ttl = 3600
    stamp = datetime.datetime.fromtimestamp(clock.now(), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    await reg.create(kinds.EVENTS, "default", {"metadata": {"name": "e.1"}, "lastTimestamp": stamp,
                                               "involvedObject": {"kind": "Pod", "name": "p"}})
    for _ in range(59):  # an hour later, one minute at a time: still inside the TTL
        clock.advance(60)
        await asyncio.sleep(0)
    assert not await gone(reg, kinds.EVENTS, "default", "e.1")
    clock.advance(120)
    await until(lambda: gone(reg, kinds.EVENTS, "default", "e.1"), "event expired")


async def test_the_kubernetes_endpoints_are_repaired_when_changed_and_on_the_interval(env: Any) -> None:
    reg, clock = env

    async def repaired() -> bool:
        ep = (await reg.get(kinds.ENDPOINTS, "default", "kubernetes")).obj
        return bool(ep.get("subsets"))

    await reg.patch(kinds.ENDPOINTS, "default", "kubernetes", "merge", {"subsets": []})
    await until(repaired, "endpoints repaired after a change")  # woken by the write, no tick
    # a write the observer did not see (another apiserver's) is found on the next interval
    cur = await reg.get(kinds.ENDPOINTS, "default", "kubernetes")
    await reg.store.update("endpoints", "default", "kubernetes", {**cur.obj, "subsets": []}, cur.rev)
    for _ in range(20):
        await asyncio.sleep(0)
    assert not await repaired()
    clock.advance(reg.loops.endpoint_interval)
    await until(repaired, "endpoints repaired on the interval")
