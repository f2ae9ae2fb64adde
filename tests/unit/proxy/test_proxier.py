"""The shared sync loop: informers -> trackers -> back end, conntrack clean-up, metrics, /healthz."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest

from nodeagent.client import Informer
from nodeagent.machinery.kinds import ENDPOINTSLICES, NODES, SERVICES
from nodeagent.proxy.conntrack import ConntrackCleaner
from nodeagent.proxy.http import metrics_app
from nodeagent.proxy.iptables import names
from nodeagent.proxy.iptables.fake import FakeIptables, Packet, Tracer
from nodeagent.proxy.iptables.proxier import IptablesBackend
from nodeagent.proxy.metrics import Health
from nodeagent.proxy.proxier import Proxier
from tests.helpers.fake_client import FakeClient
from tests.helpers.proxy_fakes import iptables_proxier
from tests.helpers.proxy_objects import endpoint, endpoint_slice, node, service


async def _until(cond, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_informers_drive_rules() -> None:
    client: Any = FakeClient()  # Informer's WatchingClient protocol is narrower than the fake's list()
    await client.create(NODES, node("n1", "192.168.56.10"))
    await client.create(SERVICES, service("web", "10.96.0.50"))
    await client.create(ENDPOINTSLICES, endpoint_slice("web", [endpoint("10.244.1.2", "n1")]))
    ipt = FakeIptables()
    p = Proxier(IptablesBackend(ipt), "n1", "10.244.0.0/16", min_sync_period=0, sync_period=30)
    infs = [Informer(client, SERVICES), Informer(client, ENDPOINTSLICES),
            Informer(client, NODES, field_selector="metadata.name=n1")]
    handlers = p.handlers()
    for inf, key in zip(infs, ("services", "endpointslices", "nodes"), strict=True):
        inf.add_handlers(**handlers[key])
    tasks = [asyncio.create_task(i.run()) for i in infs]
    tasks.append(asyncio.create_task(p.run(ready=asyncio.gather(infs[0].wait_synced(), infs[1].wait_synced()))))
    try:
        tracer = Tracer(ipt, ("192.168.56.10",))
        pkt = Packet("10.244.9.9", "10.96.0.50", "tcp", 80)
        await _until(lambda: {o.dnat for o in tracer.trace(pkt)} == {"10.244.1.2:8080"})
        assert p.node.ips == ("192.168.56.10",)
        await client.update(ENDPOINTSLICES, {**endpoint_slice("web", [endpoint("10.244.1.2", "n1"),
                                                                      endpoint("10.244.2.2", "n2")]),
                                             "metadata": {**(await client.get(ENDPOINTSLICES, "web-abc12",
                                                                              namespace="default"))["metadata"]}})
        await _until(lambda: {o.dnat for o in tracer.trace(pkt)} == {"10.244.1.2:8080", "10.244.2.2:8080"})
        await client.delete(SERVICES, "web", namespace="default")
        await _until(lambda: names.svc_chain("default/web:http", "tcp") not in ipt.chains("nat"))
        assert p.metrics.partial_sync_duration._sum.get() > 0  # type: ignore[attr-defined]
        assert p.metrics.network_programming._sum.get() >= 0  # type: ignore[attr-defined]
    finally:
        for i in infs:
            i.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()


def _recorder(calls: list[list[str]]) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        calls.append(argv)
        return 0

    return run


def test_udp_endpoint_removal_clears_conntrack() -> None:
    calls: list[list[str]] = []
    p, _, _ = iptables_proxier()
    p.conntrack = ConntrackCleaner(runner=_recorder(calls))
    dns = service("dns", "10.96.0.10", ports=[{"name": "dns", "port": 53, "protocol": "UDP"}])
    slice_ports = [{"name": "dns", "port": 53, "protocol": "UDP"}]
    p.on_service(None, dns)
    p.on_endpoint_slice(endpoint_slice("dns", [endpoint("10.244.1.2"), endpoint("10.244.1.3")], ports=slice_ports))
    p.sync_once()
    # first endpoints of a UDP service: entries made while it rejected traffic are cleared
    assert ["conntrack", "-D", "-p", "udp", "--orig-dst", "10.96.0.10"] in calls
    calls.clear()
    p.on_endpoint_slice(endpoint_slice("dns", [endpoint("10.244.1.2")], ports=slice_ports))
    p.sync_once()
    assert calls == [["conntrack", "-D", "-p", "udp", "--orig-dst", "10.96.0.10", "--dst-nat", "10.244.1.3"]]
    calls.clear()
    p.on_service(dns, None)
    p.sync_once()
    assert calls == [["conntrack", "-D", "-p", "udp", "--orig-dst", "10.96.0.10"]]


def test_tcp_endpoint_removal_leaves_conntrack_alone() -> None:
    calls: list[list[str]] = []
    p, _, _ = iptables_proxier()
    p.conntrack = ConntrackCleaner(runner=_recorder(calls))
    p.on_service(None, service("web", "10.96.0.50"))
    p.on_endpoint_slice(endpoint_slice("web", [endpoint("10.244.1.2"), endpoint("10.244.1.3")]))
    p.sync_once()
    p.on_endpoint_slice(endpoint_slice("web", [endpoint("10.244.1.2")]))
    p.sync_once()
    assert calls == []  # established TCP connections keep going (issue 6: restart/removal)


def test_health_stalls_after_timeout() -> None:
    now = [1000.0]
    h = Health(timeout=60, clock=lambda: now[0])
    assert h.healthy()
    now[0] += 61
    assert not h.healthy()  # never synced
    h.updated()
    assert h.healthy()
    h.queued()
    now[0] += 30
    assert h.healthy()
    now[0] += 31
    assert not h.healthy()  # a change waited longer than the timeout
    h.updated()
    assert h.healthy()


async def test_metrics_and_healthz_endpoints() -> None:
    now = [1000.0]
    p, _, _ = iptables_proxier()
    p.health = Health(timeout=60, clock=lambda: now[0])
    p.on_service(None, service("web", "10.96.0.50"))
    p.sync_once()
    async with TestClient(TestServer(metrics_app(p.metrics, p.health))) as c:
        body = await (await c.get("/metrics")).text()
        for name in ("kubeproxy_sync_proxy_rules_duration_seconds_bucket",
                     "kubeproxy_sync_full_proxy_rules_duration_seconds_count",
                     "kubeproxy_sync_partial_proxy_rules_duration_seconds_count",
                     "kubeproxy_network_programming_duration_seconds_bucket",
                     "kubeproxy_sync_proxy_rules_last_timestamp_seconds"):
            assert name in body
        assert (await c.get("/healthz")).status == 200
        p.health.queued()
        now[0] += 120
        r = await c.get("/healthz")
        assert r.status == 503 and "lastUpdated" in await r.json()
    assert b"kubeproxy_sync_full_proxy_rules_duration_seconds_count 1.0" in generate_latest(p.metrics.registry)


def test_new_udp_service_over_existing_endpoints_clears_its_ip() -> None:
    calls: list[list[str]] = []
    p, _, _ = iptables_proxier()
    p.conntrack = ConntrackCleaner(runner=_recorder(calls))
    slice_ports = [{"name": "dns", "port": 53, "protocol": "UDP"}]
    p.on_endpoint_slice(endpoint_slice("dns", [endpoint("10.244.1.2")], ports=slice_ports))
    p.sync_once()
    assert calls == []
    p.on_service(None, service("dns", "10.96.0.10", ports=[{"name": "dns", "port": 53, "protocol": "UDP"}]))
    p.sync_once()
    assert calls == [["conntrack", "-D", "-p", "udp", "--orig-dst", "10.96.0.10"]]
