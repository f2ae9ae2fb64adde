import asyncio

import pytest

from nodeagent.client import AlreadyExists, Conflict, Expired, Informer, NotFound
from nodeagent.client.fake import FakeClient
from nodeagent.machinery.kinds import PODS, SERVICES


def pod(name: str, **labels: str) -> dict:
    return {"metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}


async def test_fake_create_update_conflict_and_generation() -> None:
    c = FakeClient()
    p = await c.create(PODS, pod("a"))
    assert p["metadata"]["resourceVersion"] == "1" and p["metadata"]["generation"] == 1
    with pytest.raises(AlreadyExists):
        await c.create(PODS, pod("a"))
    p["spec"]["containers"][0]["image"] = "j"
    p2 = await c.update(PODS, p)
    assert p2["metadata"]["generation"] == 2
    with pytest.raises(Conflict):
        await c.update(PODS, p)  # stale resourceVersion
    s = dict(p2, status={"phase": "Running"})
    p3 = await c.update_status(PODS, s)
    assert p3["metadata"]["generation"] == 2 and p3["status"]["phase"] == "Running"
    with pytest.raises(NotFound):
        await c.get(PODS, "zzz", "default")


async def test_fake_graceful_pod_delete_and_binding() -> None:
    c = FakeClient()
    await c.create(PODS, pod("a"))
    await c.create_subresource(PODS, "a", "binding", {"target": {"kind": "Node", "name": "n1"}}, "default")
    assert (await c.get(PODS, "a", "default"))["spec"]["nodeName"] == "n1"
    d = await c.delete(PODS, "a", "default")
    assert d["metadata"]["deletionTimestamp"] and d["metadata"]["deletionGracePeriodSeconds"] == 30
    await c.delete(PODS, "a", "default", grace_period_seconds=0)
    with pytest.raises(NotFound):
        await c.get(PODS, "a", "default")


async def test_fake_watch_replay_and_selector_transition() -> None:
    c = FakeClient()
    await c.create(PODS, pod("a", app="web"))
    rv = (await c.list(PODS))["metadata"]["resourceVersion"]
    await c.patch(PODS, "a", {"metadata": {"labels": {"app": "db"}}}, "default")
    events = []
    async for ev in c.watch(PODS, resource_version=rv, label_selector="app=web", timeout_seconds=1):
        events.append(ev.type)
        break
    assert events == ["DELETED"]  # left the selector
    c.compact()
    with pytest.raises(Expired):
        async for _ in c.watch(PODS, resource_version=rv):
            pass


async def test_informer_caches_and_relists_after_expiry() -> None:
    c = FakeClient()
    await c.create(SERVICES, {"metadata": {"name": "s1", "namespace": "default"}, "spec": {}})
    added, deleted = [], []
    inf = Informer(c, SERVICES)
    inf.add_handlers(on_add=lambda o: added.append(o["metadata"]["name"]),
                     on_delete=lambda o: deleted.append(o["metadata"]["name"]))
    task = asyncio.create_task(inf.run())
    try:
        await inf.wait_synced(2)
        assert inf.get("default/s1") is not None and added == ["s1"]
        await c.create(SERVICES, {"metadata": {"name": "s2", "namespace": "default"}, "spec": {}})
        for _ in range(50):
            if "s2" in added:
                break
            await asyncio.sleep(0.01)
        assert "s2" in added
        # Lose events: delete while the watch is gone and history is compacted -> relist finds it.
        c.close_watches()
        await c.delete(SERVICES, "s1", "default")
        c.compact()
        c.close_watches()
        for _ in range(100):
            if "s1" in deleted:
                break
            await asyncio.sleep(0.02)
        assert deleted == ["s1"] and inf.get("default/s1") is None
    finally:
        inf.stop()
        task.cancel()
