"""healthCheckNodePort servers (healthcheck.py) and the proxy's /healthz and /livez (http.py), with
real listeners on 127.0.0.1 and ephemeral ports."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest

from nodeagent.proxy.healthcheck import FAILED_REASON, ServiceHealthServer, addresses_in
from nodeagent.proxy.http import healthz_app
from nodeagent.proxy.metrics import Health, ProxyMetrics
from tests.helpers.proxy_fakes import iptables_proxier
from tests.helpers.proxy_objects import endpoint, endpoint_slice, node, service

LOOPBACK_ONLY = ("127.0.0.0/8",)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def get(port: int, path: str = "/", method: str = "GET") -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession() as s, s.request(method, f"http://127.0.0.1:{port}{path}") as r:
        return r.status, dict(r.headers), await r.json() if method != "HEAD" else None


async def refused(port: int) -> bool:
    try:
        await get(port)
    except aiohttp.ClientConnectorError:
        return True
    return False


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[dict[str, Any], str, str, str]] = []

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((obj, type_, reason, message))


class Healthy:
    def __init__(self) -> None:
        self.ok = True

    def __call__(self) -> bool:
        return self.ok


@pytest.fixture
async def server() -> AsyncIterator[ServiceHealthServer]:
    # only loopback may be bound: the addresses this "node" has are faked, the CIDR filter is real
    srv = ServiceHealthServer("n1", Healthy(), nodeport_addresses=LOOPBACK_ONLY, recorder=Recorder(),
                              list_addresses=lambda: ["10.1.2.3", "127.0.0.1"])
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


async def test_answers_like_upstream(server: ServiceHealthServer) -> None:
    port = free_port()
    server.update({"default/web": port}, {"default/web": 2})
    await server.settle()
    assert server.listening() == {"default/web": (port, ["127.0.0.1"])}
    status, headers, body = await get(port, "/any/path?x=1")
    assert status == 200
    assert body == {"service": {"namespace": "default", "name": "web"}, "localEndpoints": 2,
                    "serviceProxyHealthy": True}
    assert headers["Content-Type"].startswith("application/json")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert (await get(port, "/", method="POST"))[0] == 200  # as upstream: the method does not matter

    server.update({"default/web": port}, {})  # no local endpoint any more
    await server.settle()
    status, _, body = await get(port)
    assert (status, body["localEndpoints"]) == (503, 0)


async def test_unhealthy_proxy_fails_the_check(server: ServiceHealthServer) -> None:
    port = free_port()
    server.update({"default/web": port}, {"default/web": 1})
    await server.settle()
    healthy = server.proxy_healthy
    assert isinstance(healthy, Healthy)
    healthy.ok = False
    status, _, body = await get(port)
    assert status == 503
    assert (body["localEndpoints"], body["serviceProxyHealthy"]) == (1, False)


async def test_listeners_follow_services(server: ServiceHealthServer) -> None:
    p1, p2, other = free_port(), free_port(), free_port()
    server.update({"default/web": p1, "default/db": other}, {"default/web": 1})
    await server.settle()
    assert (await get(other))[2]["service"] == {"namespace": "default", "name": "db"}
    server.update({"default/web": p2}, {"default/web": 1})  # web moved, db went away
    await server.settle()
    assert await refused(p1) and await refused(other)
    assert (await get(p2))[0] == 200
    server.update({}, {})
    await server.settle()
    assert server.listening() == {} and await refused(p2)


async def test_port_in_use_is_reported_and_retried(server: ServiceHealthServer,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = int(squatter.getsockname()[1])
    try:
        with caplog.at_level(logging.WARNING):
            server.update({"default/web": port}, {"default/web": 1})
            await server.settle()
        assert server.listening() == {}
        assert any(FAILED_REASON in r.getMessage() and "default/web" in r.getMessage() for r in caplog.records)
        assert isinstance(server.recorder, Recorder)
        (obj, type_, reason, message), = server.recorder.events
        assert (obj["kind"], obj["metadata"], type_, reason) == (
            "Service", {"namespace": "default", "name": "web"}, "Warning", FAILED_REASON)
        assert str(port) in message
    finally:
        squatter.close()
    server.update({"default/web": port}, {"default/web": 1})  # the next sync tries again
    await server.settle()
    assert (await get(port))[0] == 200


async def test_no_address_in_nodeport_cidrs_is_a_failure_too() -> None:
    rec = Recorder()
    srv = ServiceHealthServer("n1", lambda: True, nodeport_addresses=("192.0.2.0/24",), recorder=rec,
                              list_addresses=lambda: ["127.0.0.1"])
    await srv.start()
    try:
        srv.update({"default/web": free_port()}, {"default/web": 1})
        await srv.settle()
        assert srv.listening() == {}
        assert "192.0.2.0/24" in rec.events[0][3]
    finally:
        await srv.close()


async def test_address_lookup_failure_listens_everywhere() -> None:
    def broken() -> list[str]:
        raise OSError("netlink says no")

    srv = ServiceHealthServer("n1", lambda: True, nodeport_addresses=LOOPBACK_ONLY, list_addresses=broken)
    assert await srv._bind_hosts() == ["0.0.0.0"]  # upstream's fallback (no port is bound here)
    assert await ServiceHealthServer("n1", lambda: True)._bind_hosts() == ["0.0.0.0"]  # the default


def test_addresses_in_cidrs() -> None:
    assert addresses_in(("10.0.0.0/8", "192.168.56.0/24"), ["192.168.56.10", "127.0.0.1", "10.9.0.1", ""]) == [
        "10.9.0.1", "192.168.56.10"]


async def test_update_from_the_sync_thread(server: ServiceHealthServer) -> None:
    port = free_port()
    await asyncio.to_thread(server.update, {"default/web": port}, {"default/web": 1})
    await server.settle()
    assert (await get(port))[0] == 200


# -- the Proxier feeds the server ------------------------------------------------------------------------
class FakeUpdater:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[dict[str, int], dict[str, int]]] = []
        self.fail = fail

    def update(self, ports: Mapping[str, int], local_endpoints: Mapping[str, int]) -> None:
        self.calls.append((dict(ports), dict(local_endpoints)))
        if self.fail:
            raise RuntimeError("boom")


def lb_local(name: str = "web", hc: int = 32000, **spec: Any) -> dict[str, Any]:
    ports = [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
             {"name": "https", "port": 443, "protocol": "TCP", "nodePort": 30443}]
    return service(name, "10.96.0.50", ports=ports, type_="LoadBalancer",
                   **{"externalTrafficPolicy": "Local", "healthCheckNodePort": hc, **spec})


SLICE_PORTS = [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "https", "port": 8443, "protocol": "TCP"}]


def test_proxier_reports_local_ready_endpoints_after_each_sync() -> None:
    p, _, _ = iptables_proxier("n1")
    up = p.service_health = FakeUpdater()
    p.on_service(None, lb_local())
    p.on_service(None, service("plain", "10.96.0.60"))  # no healthCheckNodePort: not reported
    p.on_endpoint_slice(endpoint_slice("web", [
        endpoint("10.244.1.2", "n1"),  # local and ready: counted once for both ports (by IP)
        endpoint("10.244.1.3", "n1", ready=False, serving=True, terminating=True),  # draining: not counted
        endpoint("10.244.2.2", "n2"),  # another node's
    ], ports=SLICE_PORTS))
    assert p.sync_once()
    assert up.calls[-1] == ({"default/web": 32000}, {"default/web": 1})
    p.on_endpoint_slice(endpoint_slice("web", [endpoint("10.244.2.2", "n2")], ports=SLICE_PORTS))
    assert p.sync_once()
    assert up.calls[-1] == ({"default/web": 32000}, {"default/web": 0})
    # externalTrafficPolicy back to Cluster: the Service has no health check any more
    p.on_service(lb_local(), lb_local(externalTrafficPolicy="Cluster"))
    assert p.sync_once()
    assert up.calls[-1] == ({}, {})


def test_failed_sync_reports_nothing_and_a_failing_server_fails_no_sync() -> None:
    p, ipt, _ = iptables_proxier("n1")
    up = p.service_health = FakeUpdater(fail=True)
    p.on_service(None, lb_local())
    assert p.sync_once()  # the update raised; the rules are in place all the same
    assert len(up.calls) == 1

    def broken_sync(*_: object, **__: object) -> None:
        raise RuntimeError("restore failed")

    p.backend.sync = broken_sync  # type: ignore[method-assign]
    p.on_endpoint_slice(endpoint_slice("web", [endpoint("10.244.1.2", "n1")], ports=SLICE_PORTS))
    assert not p.sync_once()
    assert len(up.calls) == 1  # stale counts are better than counts for rules that are not there


async def test_proxier_and_server_together() -> None:
    p, _, _ = iptables_proxier("n1")
    srv = ServiceHealthServer("n1", p.health.healthy, nodeport_addresses=LOOPBACK_ONLY,
                              list_addresses=lambda: ["127.0.0.1"])
    p.service_health = srv
    port = free_port()
    await srv.start()
    try:
        p.on_service(None, lb_local(hc=port))
        p.on_endpoint_slice(endpoint_slice("web", [endpoint("10.244.1.2", "n1")], ports=SLICE_PORTS))
        assert await asyncio.to_thread(p.sync_once)
        await srv.settle()
        assert (await get(port))[:1] == (200,)
        p.on_endpoint_slice(endpoint_slice("web", [], ports=SLICE_PORTS))
        assert await asyncio.to_thread(p.sync_once)
        await srv.settle()
        assert (await get(port))[0] == 503
    finally:
        await srv.close()


# -- /healthz and /livez ----------------------------------------------------------------------------------
async def test_healthz_and_livez_bodies() -> None:
    now = [1_700_000_000.0]
    health = Health(timeout=60, clock=lambda: now[0])
    metrics = ProxyMetrics()
    async with TestClient(TestServer(healthz_app(health, metrics))) as c:
        health.updated()
        now[0] += 10
        r = await c.get("/healthz")
        body = await r.json()
        assert r.status == 200 and r.headers["X-Content-Type-Options"] == "nosniff"
        assert set(body) == {"lastUpdated", "currentTime", "nodeEligible"} and body["nodeEligible"] is True
        # healthy: lastUpdated is reported as now, as upstream does for older clients
        assert body["lastUpdated"] == body["currentTime"] == "2023-11-14T22:13:30Z"
        r = await c.get("/livez")
        assert r.status == 200 and set(await r.json()) == {"lastUpdated", "currentTime"}

        health.queued()
        now[0] += 61  # a change waited longer than the timeout
        for path in ("/healthz", "/livez"):
            r = await c.get(path)
            body = await r.json()
            assert r.status == 503
            assert body["lastUpdated"] == "2023-11-14T22:13:20Z" != body["currentTime"]  # the real one
    text = generate_latest(metrics.registry).decode()
    assert 'kubeproxy_proxy_healthz_total{code="200"} 1.0' in text
    assert 'kubeproxy_proxy_healthz_total{code="503"} 1.0' in text
    assert 'kubeproxy_proxy_livez_total{code="503"} 1.0' in text


@pytest.mark.parametrize("change", ["taint", "deleting", "gone"])
async def test_node_being_deleted_fails_healthz_not_livez(change: str) -> None:
    p, _, _ = iptables_proxier("n1")
    p.sync_once()
    n = node("n1", "192.168.56.10")
    if change == "taint":
        n["spec"] = {"taints": [{"key": "ToBeDeletedByClusterAutoscaler", "effect": "NoSchedule"}]}
    elif change == "deleting":
        n["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    p.on_node(None if change == "gone" else n)
    async with TestClient(TestServer(healthz_app(p.health))) as c:
        r = await c.get("/healthz")
        assert r.status == 503 and (await r.json())["nodeEligible"] is False
        assert (await c.get("/livez")).status == 200  # restarting the proxy would not help
        p.on_node(node("n1", "192.168.56.10"))  # eligible again (e.g. the taint was removed)
        assert (await c.get("/healthz")).status == 200
