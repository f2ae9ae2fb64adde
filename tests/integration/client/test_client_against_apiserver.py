"""The shared client against the real apiserver: CRUD, errors, informer, events, 410 handling."""

from __future__ import annotations

import asyncio

import pytest

from nodeagent.client import AlreadyExists, Client, ClientConfig, Conflict, EventRecorder, Informer, NotFound
from nodeagent.machinery.kinds import EVENTS, NAMESPACES, PODS
from tests.helpers.apiserver import ApiServerProcess


def _pod(name: str) -> dict:
    return {"metadata": {"name": name, "labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "nodeagent.local/toolbox:1"}]}}


async def _eventually(pred, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_crud_errors_informer_and_events(apiserver: ApiServerProcess) -> None:
    async with Client(ClientConfig.from_kubeconfig(apiserver.kubeconfig)) as c:
        seen: list[tuple[str, str]] = []
        inf = Informer(c, PODS, namespace="default", label_selector="app=x")
        inf.add_handlers(on_add=lambda o: seen.append(("add", o["metadata"]["name"])),
                         on_update=lambda a, b: seen.append(("update", b["metadata"]["name"])),
                         on_delete=lambda o: seen.append(("delete", o["metadata"]["name"])))
        task = asyncio.create_task(inf.run())
        try:
            await inf.wait_synced(10)
            p = await c.create(PODS, _pod("p1"))
            with pytest.raises(AlreadyExists):
                await c.create(PODS, _pod("p1"))
            p["metadata"]["labels"]["v"] = "1"
            await c.update(PODS, p)
            with pytest.raises(Conflict):
                await c.update(PODS, p)  # stale resourceVersion
            await c.delete(PODS, "p1", grace_period_seconds=0)
            with pytest.raises(NotFound):
                await c.get(PODS, "p1")
            await _eventually(lambda: ("delete", "p1") in seen)
            assert seen[0] == ("add", "p1") and ("update", "p1") in seen
            assert inf.get("default/p1") is None

            rec = EventRecorder(c, component="test")
            for _ in range(3):
                rec.event(p, "Warning", "Flaky", "same message")
            await rec.flush()
            evs = await c.list(EVENTS, namespace="default", field_selector="involvedObject.name=p1")
            assert [(e["reason"], e["count"]) for e in evs["items"]] == [("Flaky", 3)]

            nss = await c.list(NAMESPACES)
            assert {"default", "kube-system", "kube-node-lease"} <= {n["metadata"]["name"] for n in nss["items"]}
        finally:
            inf.stop()
            task.cancel()


async def test_informer_survives_apiserver_restart(apiserver: ApiServerProcess) -> None:
    async with Client(ClientConfig.from_kubeconfig(apiserver.kubeconfig)) as c:
        inf = Informer(c, PODS, namespace="default")
        task = asyncio.create_task(inf.run())
        try:
            await inf.wait_synced(10)
            await c.create(PODS, _pod("before"))
            await _eventually(lambda: inf.get("default/before") is not None)
            apiserver.kill9()
            apiserver.restart()
            await c.create(PODS, _pod("after"))
            await _eventually(lambda: inf.get("default/after") is not None, timeout=20)
            assert inf.get("default/before") is not None
        finally:
            inf.stop()
            task.cancel()
