"""Object semantics of the Registry over a real SqliteStore (no HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nodeagent.api.errors import ApiError
from nodeagent.api.registry import DeleteOptions, ListOptions, Registry, WatchEvent, WatchSession
from nodeagent.api.sqlite_store import SqliteStore
from nodeagent.machinery import kinds
from nodeagent.machinery.selectors import parse_field_selector, parse_label_selector


@pytest.fixture
async def reg(tmp_path: Path) -> AsyncIterator[Registry]:
    store = SqliteStore(tmp_path / "state.db", compact_interval=0)
    await store.start()
    r = Registry(store, service_cidr="10.96.0.0/28", node_port_range="30000-30002")
    await r.start()
    try:
        yield r
    finally:
        await r.close()
        await store.close()


def pod(name: str, node: str | None = None, **labels: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "nodeagent.local/toolbox:1"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}


def deployment(name: str, replicas: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {
        "replicas": replicas, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"containers": [{"name": "c", "image": "nodeagent.local/toolbox:1"}]}}}}


async def test_pod_defaults_and_uid(reg: Registry) -> None:
    p = await reg.create(kinds.PODS, "default", pod("a"))
    spec = p["spec"]
    assert (spec["restartPolicy"], spec["dnsPolicy"], spec["terminationGracePeriodSeconds"],
            spec["schedulerName"]) == ("Always", "ClusterFirst", 30, "default-scheduler")
    c = spec["containers"][0]
    assert (c["imagePullPolicy"], c["terminationMessagePath"], c["terminationMessagePolicy"]) == \
        ("IfNotPresent", "/dev/termination-log", "File")
    assert p["metadata"]["uid"] and p["metadata"]["creationTimestamp"].endswith("Z")
    assert p["status"] == {"phase": "Pending", "qosClass": "BestEffort"}


async def test_invalid_name_and_missing_namespace(reg: Registry) -> None:
    with pytest.raises(ApiError) as err:
        await reg.create(kinds.PODS, "default", pod("Bad_Name"))
    assert err.value.code == 422 and err.value.details["causes"][0]["field"] == "metadata.name"
    with pytest.raises(ApiError) as err:
        await reg.create(kinds.PODS, "nope", pod("a"))
    assert err.value.code == 404 and "namespaces" in err.value.message


async def test_generate_name(reg: Registry) -> None:
    obj = pod("")
    obj["metadata"] = {"generateName": "web-"}
    p = await reg.create(kinds.PODS, "default", obj)
    assert p["metadata"]["name"].startswith("web-") and len(p["metadata"]["name"]) == 9


async def test_generation_counts_spec_changes_only(reg: Registry) -> None:
    d = await reg.create(kinds.DEPLOYMENTS, "default", deployment("web"))
    assert d["metadata"]["generation"] == 1
    assert d["spec"]["strategy"] == {"type": "RollingUpdate",
                                     "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    d = await reg.patch(kinds.DEPLOYMENTS, "default", "web", "merge", {"metadata": {"labels": {"x": "y"}}})
    assert d["metadata"]["generation"] == 1
    d = await reg.patch(kinds.DEPLOYMENTS, "default", "web", "merge", {"status": {"replicas": 3}},
                        subresource="status")
    assert d["metadata"]["generation"] == 1 and d["status"]["replicas"] == 3
    d = await reg.patch(kinds.DEPLOYMENTS, "default", "web", "merge", {"spec": {"replicas": 3}})
    assert d["metadata"]["generation"] == 2
    # The main resource ignores status; the status subresource ignores spec.
    d = await reg.patch(kinds.DEPLOYMENTS, "default", "web", "merge", {"status": {"replicas": 9}})
    assert d["status"]["replicas"] == 3


async def test_deployment_without_selector_is_invalid(reg: Registry) -> None:
    bad = deployment("x")
    del bad["spec"]["selector"]
    with pytest.raises(ApiError) as err:
        await reg.create(kinds.DEPLOYMENTS, "default", bad)
    assert err.value.code == 422 and "spec.selector" in err.value.message


async def test_stale_resource_version_conflicts(reg: Registry) -> None:
    p = await reg.create(kinds.CONFIGMAPS, "default", {"metadata": {"name": "c"}, "data": {"a": "1"}})
    stale = dict(p, data={"a": "2"})
    await reg.update(kinds.CONFIGMAPS, "default", "c", dict(stale))
    with pytest.raises(ApiError) as err:
        await reg.update(kinds.CONFIGMAPS, "default", "c", dict(stale, data={"a": "3"}))
    assert err.value.code == 409 and err.value.reason == "Conflict"
    with pytest.raises(ApiError) as err:
        await reg.create(kinds.CONFIGMAPS, "default", {"metadata": {"name": "c"}})
    assert err.value.reason == "AlreadyExists"


async def test_graceful_pod_deletion(reg: Registry) -> None:
    await reg.create(kinds.PODS, "default", pod("unbound"))
    _, gone = await reg.delete(kinds.PODS, "default", "unbound", DeleteOptions())
    assert gone  # no nodeName: deleted at once
    await reg.create(kinds.PODS, "default", pod("bound", node="n1"))
    obj, gone = await reg.delete(kinds.PODS, "default", "bound", DeleteOptions())
    assert not gone and obj["metadata"]["deletionGracePeriodSeconds"] == 30
    assert obj["metadata"]["deletionTimestamp"]
    obj, gone = await reg.delete(kinds.PODS, "default", "bound", DeleteOptions(grace_period_seconds=5))
    assert not gone and obj["metadata"]["deletionGracePeriodSeconds"] == 5
    _, gone = await reg.delete(kinds.PODS, "default", "bound", DeleteOptions(grace_period_seconds=0))
    assert gone
    with pytest.raises(ApiError) as err:
        await reg.get(kinds.PODS, "default", "bound")
    assert err.value.code == 404


async def test_terminating_pod_keeps_its_final_status_until_confirmed(reg: Registry) -> None:
    # The kubelet writes the terminal status of a terminating pod, watchers must see it, and only
    # the kubelet's zero-grace delete removes the pod (upstream kubelet status manager).
    await reg.create(kinds.PODS, "default", pod("p", node="n1"))
    obj, gone = await reg.delete(kinds.PODS, "default", "p", DeleteOptions())
    assert not gone
    obj["status"] = {"phase": "Succeeded"}
    updated, _ = await reg.update(kinds.PODS, "default", "p", obj, subresource="status")
    assert updated["status"]["phase"] == "Succeeded"
    assert (await reg.get(kinds.PODS, "default", "p")).obj["status"]["phase"] == "Succeeded"
    _, gone = await reg.delete(kinds.PODS, "default", "p", DeleteOptions(grace_period_seconds=0))
    assert gone


async def test_default_toleration_seconds_are_configurable(reg: Registry) -> None:
    reg.default_toleration_seconds["node.kubernetes.io/unreachable"] = 7
    p = await reg.create(kinds.PODS, "default", pod("t"))
    tols = {t["key"]: t["tolerationSeconds"] for t in p["spec"]["tolerations"]}
    assert tols == {"node.kubernetes.io/not-ready": 300, "node.kubernetes.io/unreachable": 7}


async def test_finalizers_hold_deletion_until_removed(reg: Registry) -> None:
    await reg.create(kinds.CONFIGMAPS, "default", {"metadata": {"name": "f", "finalizers": ["example.com/x"]}})
    obj, gone = await reg.delete(kinds.CONFIGMAPS, "default", "f", DeleteOptions())
    assert not gone and obj["metadata"]["deletionTimestamp"]
    with pytest.raises(ApiError):  # no new finalizers once deleting
        await reg.patch(kinds.CONFIGMAPS, "default", "f", "merge",
                        {"metadata": {"finalizers": ["example.com/x", "example.com/y"]}})
    await reg.patch(kinds.CONFIGMAPS, "default", "f", "merge", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiError) as err:
        await reg.get(kinds.CONFIGMAPS, "default", "f")
    assert err.value.code == 404


async def test_service_allocation_unique_and_released(reg: Registry) -> None:
    svc = {"metadata": {"name": "s1"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}}
    s1 = await reg.create(kinds.SERVICES, "default", svc)
    spec = s1["spec"]
    assert spec["clusterIP"] != "10.96.0.1" and spec["clusterIPs"] == [spec["clusterIP"]]
    assert spec["ports"][0]["targetPort"] == 80 and spec["ports"][0]["protocol"] == "TCP"
    assert 30000 <= spec["ports"][0]["nodePort"] <= 30002
    assert (spec["sessionAffinity"], spec["ipFamilies"]) == ("None", ["IPv4"])
    with pytest.raises(ApiError) as err:  # the same ClusterIP twice
        await reg.create(kinds.SERVICES, "default", {"metadata": {"name": "s2"},
                                                     "spec": {"clusterIP": spec["clusterIP"], "ports": [{"port": 1}]}})
    assert err.value.code == 422
    ips = set()
    for i in range(2, 14):  # /28: 16 addresses - network - broadcast - .1 - s1 = 12 free
        s = await reg.create(kinds.SERVICES, "default", {"metadata": {"name": f"x{i}"}, "spec": {"ports": [{"port": 1}]}})
        ips.add(s["spec"]["clusterIP"])
    assert len(ips) == 12 and spec["clusterIP"] not in ips
    with pytest.raises(ApiError):
        await reg.create(kinds.SERVICES, "default", {"metadata": {"name": "full"}, "spec": {"ports": [{"port": 1}]}})
    await reg.delete(kinds.SERVICES, "default", "s1", DeleteOptions())
    again = await reg.create(kinds.SERVICES, "default", {"metadata": {"name": "again"},
                                                         "spec": {"type": "NodePort", "ports": [{"port": 1}]}})
    assert again["spec"]["clusterIP"] == spec["clusterIP"]


async def test_strategic_merge_patch_merges_containers_by_name(reg: Registry) -> None:
    d = deployment("web")
    d["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "nodeagent.local/side:1"})
    await reg.create(kinds.DEPLOYMENTS, "default", d)
    out = await reg.patch(kinds.DEPLOYMENTS, "default", "web", "strategic", {"spec": {"template": {"spec": {
        "containers": [{"name": "c", "image": "nodeagent.local/toolbox:2"}]}}}})
    cs = out["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in cs] == [("c", "nodeagent.local/toolbox:2"),
                                                      ("side", "nodeagent.local/side:1")]


async def test_scale_subresource(reg: Registry) -> None:
    await reg.create(kinds.DEPLOYMENTS, "default", deployment("web", 2))
    scale = await reg.get_scale(kinds.DEPLOYMENTS, "default", "web")
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 2 and scale["status"]["selector"] == "app=web"
    out = await reg.update_scale(kinds.DEPLOYMENTS, "default", "web", lambda s: {**s, "spec": {"replicas": 5}})
    assert out["spec"]["replicas"] == 5
    assert (await reg.get(kinds.DEPLOYMENTS, "default", "web")).obj["spec"]["replicas"] == 5


async def test_binding_sets_node_once(reg: Registry) -> None:
    await reg.create(kinds.PODS, "default", pod("b"))
    await reg.bind("default", "b", {"target": {"kind": "Node", "name": "n1"}})
    p = (await reg.get(kinds.PODS, "default", "b")).obj
    assert p["spec"]["nodeName"] == "n1"
    assert any(c["type"] == "PodScheduled" and c["status"] == "True" for c in p["status"]["conditions"])
    with pytest.raises(ApiError) as err:
        await reg.bind("default", "b", {"target": {"kind": "Node", "name": "n2"}})
    assert err.value.code == 409


async def test_list_selectors_and_pagination(reg: Registry) -> None:
    for i in range(5):
        await reg.create(kinds.PODS, "default", pod(f"p{i}", node="n1" if i % 2 else None, app="a" if i < 3 else "b"))
    res = await reg.list(kinds.PODS, "default", ListOptions(label_selector=parse_label_selector("app in (a),app!=b")))
    assert [e.name for e in res.items] == ["p0", "p1", "p2"]
    res = await reg.list(kinds.PODS, None, ListOptions(field_selector=parse_field_selector("spec.nodeName=n1", "pods")))
    assert [e.name for e in res.items] == ["p1", "p3"]
    page1 = await reg.list(kinds.PODS, "default", ListOptions(limit=2))
    assert [e.name for e in page1.items] == ["p0", "p1"] and page1.continue_token and page1.remaining == 3
    page2 = await reg.list(kinds.PODS, "default", ListOptions(limit=2, continue_token=page1.continue_token))
    assert [e.name for e in page2.items] == ["p2", "p3"]


async def test_list_exact_resource_version_shows_the_past(reg: Registry) -> None:
    a = await reg.create(kinds.CONFIGMAPS, "default", {"metadata": {"name": "a"}, "data": {"v": "1"}})
    rv = a["metadata"]["resourceVersion"]
    await reg.patch(kinds.CONFIGMAPS, "default", "a", "merge", {"data": {"v": "2"}})
    await reg.create(kinds.CONFIGMAPS, "default", {"metadata": {"name": "b"}})
    past = await reg.list(kinds.CONFIGMAPS, "default", ListOptions(resource_version=rv, resource_version_match="Exact"))
    assert [(e.name, e.obj["data"]["v"]) for e in past.items] == [("a", "1")]


async def _events(w: WatchSession, n: int) -> list[WatchEvent]:
    out: list[WatchEvent] = []
    while len(out) < n:
        batch = await asyncio.wait_for(w.next_batch(), 5)
        assert batch is not None, "the watch ended early"
        out += batch
    return out


async def _collect(w: WatchSession, n: int) -> list[tuple[str, str]]:
    return [(ev.type, ev.obj["metadata"].get("name", "")) for ev in await _events(w, n)]


async def test_watch_selector_transitions(reg: Registry) -> None:
    start = await reg.create(kinds.PODS, "default", pod("w", app="web"))
    opts = ListOptions(label_selector=parse_label_selector("app=web"), resource_version=start["metadata"]["resourceVersion"])
    it = await reg.watch(kinds.PODS, "default", opts)
    await reg.patch(kinds.PODS, "default", "w", "merge", {"metadata": {"labels": {"app": "other"}}})  # leaves
    await reg.patch(kinds.PODS, "default", "w", "merge", {"metadata": {"labels": {"x": "1"}}})  # not selected
    await reg.patch(kinds.PODS, "default", "w", "merge", {"metadata": {"labels": {"app": "web"}}})  # enters
    await reg.patch(kinds.PODS, "default", "w", "merge", {"metadata": {"labels": {"y": "1"}}})  # stays
    await reg.delete(kinds.PODS, "default", "w", DeleteOptions())
    got = await _collect(it, 4)
    assert got == [("DELETED", "w"), ("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]
    it.close()


async def test_watch_without_rv_sends_current_state_then_bookmarks(reg: Registry) -> None:
    await reg.create(kinds.CONFIGMAPS, "default", {"metadata": {"name": "a"}})
    it = await reg.watch(kinds.CONFIGMAPS, "default", ListOptions(), bookmarks=True, bookmark_interval=0.05)
    first, bm = await _events(it, 2)
    assert (first.type, first.obj["metadata"]["name"]) == ("ADDED", "a")
    assert bm.type == "BOOKMARK"
    assert int(bm.obj["metadata"]["resourceVersion"]) >= int(first.obj["metadata"]["resourceVersion"])
    it.close()


async def test_watch_timeout_ends_the_stream(reg: Registry) -> None:
    w = await reg.watch(kinds.CONFIGMAPS, "default", ListOptions(resource_version="1"), timeout=0.1)
    assert await asyncio.wait_for(w.next_batch(), 5) is None
    w.close()


async def test_watch_expired_revision_is_410(reg: Registry) -> None:
    a = await reg.create(kinds.CONFIGMAPS, "default", {"metadata": {"name": "a"}})
    for i in range(3):
        await reg.patch(kinds.CONFIGMAPS, "default", "a", "merge", {"data": {"v": str(i)}})
    await reg.store.compact(reg.store.revision - 1)
    with pytest.raises(ApiError) as err:
        await reg.watch(kinds.CONFIGMAPS, "default", ListOptions(resource_version=a["metadata"]["resourceVersion"]))
    assert err.value.code == 410 and err.value.reason == "Expired"


async def test_namespace_deletion_empties_then_removes_it(reg: Registry) -> None:
    await reg.create(kinds.NAMESPACES, None, {"metadata": {"name": "tmp"}})
    await reg.create(kinds.CONFIGMAPS, "tmp", {"metadata": {"name": "c"}})
    ns, gone = await reg.delete(kinds.NAMESPACES, None, "tmp", DeleteOptions())
    assert not gone and ns["status"]["phase"] == "Terminating"
    with pytest.raises(ApiError) as err:
        await reg.create(kinds.CONFIGMAPS, "tmp", {"metadata": {"name": "d"}})
    assert err.value.code == 403
    for _ in range(100):
        try:
            await reg.get(kinds.NAMESPACES, None, "tmp")
        except ApiError as e:
            assert e.code == 404
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("namespace tmp was not removed")


async def test_events_expire_after_their_ttl(reg: Registry) -> None:
    import datetime

    for name, last in (("old.1", "2020-01-01T00:00:00Z"), ("new.1", None)):
        ev: dict[str, Any] = {"metadata": {"name": name}, "involvedObject": {"kind": "Pod", "name": "p"},
                              "reason": "R", "message": "m"}
        if last:
            ev["lastTimestamp"] = last
        await reg.create(kinds.EVENTS, "default", ev)
    assert await reg.expire_events(datetime.datetime.now(datetime.UTC)) == 1
    left = await reg.list(kinds.EVENTS, "default", ListOptions())
    assert [e.name for e in left.items] == ["new.1"]


async def test_resources_are_quantities_and_decide_qos(reg: Registry) -> None:
    good = pod("q1")
    good["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1", "memory": "64Mi"},
                                                  "requests": {"cpu": "1000m", "memory": "64Mi"}}
    out = await reg.create(kinds.PODS, "default", good)
    assert out["status"]["qosClass"] == "Guaranteed"
    bad = pod("q2")
    bad["spec"]["containers"][0]["resources"] = {"limits": {"memory": "lots"}}
    with pytest.raises(ApiError) as err:
        await reg.create(kinds.PODS, "default", bad)
    assert err.value.code == 422 and "resources.limits[memory]" in err.value.message
