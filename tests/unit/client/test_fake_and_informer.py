import asyncio

import pytest

from nodeagent.client import AlreadyExists, ApiError, Conflict, Expired, Informer, Invalid, NotFound
from nodeagent.machinery.kinds import DEPLOYMENTS, PODS, SERVICES
from tests.helpers.fake_client import FakeClient


def pod(name: str, **labels: str) -> dict:
    return {"metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}


def deployment(name: str) -> dict:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "i"}]}}}}


SVC_SPEC = {"ports": [{"port": 80}]}


async def test_fake_create_update_conflict_and_generation() -> None:
    # The fake is the apiserver's registry: generation counts spec changes of the kinds whose
    # strategy says so (Deployments), not of Pods; status goes through the status subresource only.
    c = FakeClient()
    d = await c.create(DEPLOYMENTS, deployment("d"))
    assert d["metadata"]["generation"] == 1 and int(d["metadata"]["resourceVersion"]) > 0
    with pytest.raises(AlreadyExists):
        await c.create(DEPLOYMENTS, deployment("d"))
    d["spec"]["replicas"] = 3
    d2 = await c.update(DEPLOYMENTS, d)
    assert d2["metadata"]["generation"] == 2
    with pytest.raises(Conflict):
        await c.update(DEPLOYMENTS, d)  # stale resourceVersion
    d3 = await c.update_status(DEPLOYMENTS, dict(d2, status={"replicas": 3}))
    assert d3["metadata"]["generation"] == 2 and d3["status"]["replicas"] == 3
    p = await c.create(PODS, pod("a"))
    assert "generation" not in p["metadata"] and p["status"]["phase"] == "Pending"
    p["spec"]["containers"][0]["image"] = "j"
    assert "generation" not in (await c.update(PODS, p))["metadata"]
    with pytest.raises(Invalid):  # the real validation: a pod needs containers
        await c.create(PODS, {"metadata": {"name": "bad"}, "spec": {}})
    with pytest.raises(NotFound):
        await c.get(PODS, "zzz", "default")
    assert [a.verb for a in c.actions][:3] == ["create", "create", "update"]


async def test_fake_delete_follows_the_server_rules() -> None:
    c = FakeClient()
    done = dict(pod("done"), spec={**pod("done")["spec"], "nodeName": "n1"})
    await c.create(PODS, done)
    await c.update_status(PODS, dict(await c.get(PODS, "done", "default"), status={"phase": "Succeeded"}))
    await c.delete(PODS, "done", "default")  # terminal pods go at once, bound or not
    with pytest.raises(NotFound):
        await c.get(PODS, "done", "default")
    await c.create(DEPLOYMENTS, deployment("d"))
    orphaned = await c.delete(DEPLOYMENTS, "d", "default", propagation_policy="Orphan")
    assert orphaned["metadata"]["finalizers"] == ["orphan"] and orphaned["metadata"]["deletionTimestamp"]
    c.fail_next("delete", "deployments")
    with pytest.raises(ApiError):
        await c.delete(DEPLOYMENTS, "d", "default")


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
    await c.create(SERVICES, {"metadata": {"name": "s1", "namespace": "default"}, "spec": SVC_SPEC})
    added, deleted = [], []
    inf = Informer(c, SERVICES)
    inf.add_handlers(on_add=lambda o: added.append(o["metadata"]["name"]),
                     on_delete=lambda o: deleted.append(o["metadata"]["name"]))
    task = asyncio.create_task(inf.run())
    try:
        await inf.wait_synced(2)
        assert inf.get("default/s1") is not None and added == ["s1"]
        await c.create(SERVICES, {"metadata": {"name": "s2", "namespace": "default"}, "spec": SVC_SPEC})
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
