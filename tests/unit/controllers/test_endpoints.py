"""EndpointSlice and Endpoints controllers against FakeClient."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeagent.controllers.endpoints import EndpointsController
from nodeagent.controllers.endpointslice import MANAGED_BY, EndpointSliceController
from nodeagent.machinery.kinds import ENDPOINTS, ENDPOINTSLICES, PODS, SERVICES
from tests.helpers.controllers_env import Env, pod


def service(name: str = "web", selector: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"ports": [{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}],
                         "clusterIP": "10.96.0.20"}
    if selector is not None:
        s["selector"] = selector
    s.update(spec)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default",
                                                                "labels": {"team": "a"}}, "spec": s}


def running(name: str, ip: str, ready: bool = True, port: int = 8080, node: str = "n1") -> dict[str, Any]:
    p = pod(name, labels={"app": "web"}, node_name=node)
    p["metadata"]["uid"] = f"uid-{name}"
    p["spec"]["containers"][0]["ports"] = [{"name": "web", "containerPort": port, "protocol": "TCP"}]
    p["status"] = {"phase": "Running", "podIP": ip,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return p


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = Env()
    e.add(EndpointSliceController)
    e.add(EndpointsController)
    try:
        yield e
    finally:
        await e.stop()


def slices(env: Env, svc: str = "web") -> list[dict[str, Any]]:
    return [s for s in env.objects(ENDPOINTSLICES) if s["metadata"]["labels"].get("kubernetes.io/service-name") == svc]


async def test_slices_and_endpoints_follow_pods(env: Env) -> None:
    env.client.seed(PODS, running("a", "10.244.1.2"))
    env.client.seed(PODS, running("b", "10.244.1.3", ready=False))
    env.client.seed(PODS, pod("nopip", labels={"app": "web"}))
    await env.start()
    await env.client.create(SERVICES, service(selector={"app": "web"}))
    await env.settle()
    (sl,) = slices(env)
    assert sl["addressType"] == "IPv4"
    assert sl["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == MANAGED_BY
    assert sl["metadata"]["labels"]["team"] == "a"
    assert sl["metadata"]["ownerReferences"][0]["kind"] == "Service"
    assert sl["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]  # targetPort by name
    eps = {e["targetRef"]["name"]: e for e in sl["endpoints"]}
    assert set(eps) == {"a", "b"}
    assert eps["a"]["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert eps["b"]["conditions"] == {"ready": False, "serving": False, "terminating": False}
    assert eps["a"]["addresses"] == ["10.244.1.2"] and eps["a"]["nodeName"] == "n1"
    assert eps["a"]["targetRef"] == {"kind": "Pod", "namespace": "default", "name": "a", "uid": "uid-a"}
    (ep,) = env.objects(ENDPOINTS)
    assert ep["subsets"] == [{
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "addresses": [{"ip": "10.244.1.2", "nodeName": "n1",
                       "targetRef": {"kind": "Pod", "namespace": "default", "name": "a", "uid": "uid-a"}}],
        "notReadyAddresses": [{"ip": "10.244.1.3", "nodeName": "n1",
                               "targetRef": {"kind": "Pod", "namespace": "default", "name": "b", "uid": "uid-b"}}],
    }]
    # a pod starts terminating (deleted while bound: graceful): serving stays, ready goes; Endpoints drops it
    await env.client.delete(PODS, "a")
    await env.settle()
    eps = {e["targetRef"]["name"]: e for e in slices(env)[0]["endpoints"]}
    assert eps["a"]["conditions"] == {"ready": False, "serving": True, "terminating": True}
    ep = env.objects(ENDPOINTS)[0]
    assert [x["ip"] for s in ep["subsets"] for x in s.get("addresses", [])] == []


async def test_pods_with_different_ports_get_separate_slices(env: Env) -> None:
    env.client.seed(PODS, running("a", "10.244.1.2", port=8080))
    env.client.seed(PODS, running("b", "10.244.1.3", port=9090))
    await env.start()
    await env.client.create(SERVICES, service(selector={"app": "web"}))
    await env.settle()
    got = sorted((s["ports"][0]["port"], [e["targetRef"]["name"] for e in s["endpoints"]]) for s in slices(env))
    assert got == [(8080, ["a"]), (9090, ["b"])]


async def test_publish_not_ready_and_service_deletion(env: Env) -> None:
    env.client.seed(PODS, running("b", "10.244.1.3", ready=False))
    await env.start()
    await env.client.create(SERVICES, service(selector={"app": "web"}, publishNotReadyAddresses=True))
    await env.settle()
    assert slices(env)[0]["endpoints"][0]["conditions"]["ready"] is True
    assert "addresses" in env.objects(ENDPOINTS)[0]["subsets"][0]
    await env.client.delete(SERVICES, "web", "default")
    await env.settle()
    assert slices(env) == [] and env.objects(ENDPOINTS) == []


async def test_selectorless_service_is_left_alone(env: Env) -> None:
    env.client.seed(PODS, running("a", "10.244.1.2"))
    own = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": "dns-1", "namespace": "default",
                        "labels": {"kubernetes.io/service-name": "dns", "endpointslice.kubernetes.io/managed-by": "dns"}},
           "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.9"]}], "ports": []}
    env.client.seed(ENDPOINTSLICES, own)
    await env.start()
    await env.client.create(SERVICES, service("dns"))
    await env.settle()
    assert [s["metadata"]["name"] for s in slices(env, "dns")] == ["dns-1"]
    assert env.objects(ENDPOINTS) == []


async def test_empty_service_has_placeholder_slice(env: Env) -> None:
    await env.start()
    await env.client.create(SERVICES, service(selector={"app": "none"}))
    await env.settle()
    (sl,) = slices(env)
    assert sl["endpoints"] == [] and sl["ports"] == []
