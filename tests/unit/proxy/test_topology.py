"""Topology aware routing: zone hints on endpoints, the Service's opt-in, the node's zone, and the
categorize filter (upstream pkg/proxy/topology.go, KEP-2433, KEP-4444)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from nodeagent.proxy import ipvs, nftables
from nodeagent.proxy.backend import ProxyState, SyncResult
from nodeagent.proxy.iptables import proxier as iptables_proxier_mod
from nodeagent.proxy.iptables.fake import FakeIptables, Packet
from nodeagent.proxy.model import Endpoint, ServicePortName, categorize, service_ports, slice_endpoints
from nodeagent.proxy.proxier import Proxier
from tests.helpers.proxy_fakes import iptables_proxier
from tests.helpers.proxy_objects import endpoint, endpoint_slice, node, service

WEB = ServicePortName("default", "web", "http", "TCP")
AUTO = {"service.kubernetes.io/topology-mode": "Auto"}


def _svc(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    svc = service("web", "10.96.0.50", **spec)
    if annotations:
        svc["metadata"]["annotations"] = annotations
    return svc


def _sp(annotations: dict[str, str] | None = AUTO, **spec: Any):  # type: ignore[no-untyped-def]
    return service_ports(_svc(annotations, **spec))[WEB]


def _ep(ip: str, *zones: str, ready: bool = True, local: bool = False) -> Endpoint:
    return Endpoint(ip, 8080, ready=ready, serving=ready, node_name="n1" if local else "n2", is_local=local,
                    zone_hints=tuple(sorted(zones)))


def _hinted(ep: dict[str, Any], *zones: str) -> dict[str, Any]:
    return {**ep, "hints": {"forZones": [{"name": z} for z in zones]}}


def _zoned_node(zone: str | None, name: str = "n1") -> dict[str, Any]:
    obj = node(name, "192.168.56.10")
    if zone is not None:
        obj["metadata"]["labels"] = {"topology.kubernetes.io/zone": zone}
    return obj


# -- parsing ---------------------------------------------------------------------------------------
def test_slice_endpoints_parse_zone_hints() -> None:
    eps = slice_endpoints(endpoint_slice("web", [
        _hinted(endpoint("10.244.1.2", "n1"), "zone-b", "zone-a", "zone-a"),
        {**endpoint("10.244.1.3", "n2"), "hints": {"forZones": [{}, {"name": ""}]}},  # nothing usable
        endpoint("10.244.1.4", "n2"),
    ]), "n1")[WEB]
    assert [e.zone_hints for e in eps] == [("zone-a", "zone-b"), (), ()]
    assert hash(eps[0]) != hash(Endpoint("10.244.1.2", 8080, node_name="n1", is_local=True))  # hints count


@pytest.mark.parametrize(("annotations", "spec", "wanted"), [
    (None, {}, False),
    (AUTO, {}, True),
    ({"service.kubernetes.io/topology-aware-hints": "auto"}, {}, True),  # the pre-1.27 name
    ({"service.kubernetes.io/topology-mode": "Disabled"}, {}, False),
    (None, {"trafficDistribution": "PreferClose"}, True),
    (None, {"trafficDistribution": "PreferSameZone"}, True),
    (None, {"trafficDistribution": "example.com/custom"}, False),
    # the annotation wins over the field when both are set (KEP-4444)
    ({"service.kubernetes.io/topology-mode": "disabled"}, {"trafficDistribution": "PreferClose"}, False),
])
def test_service_asks_for_topology(annotations: dict[str, str] | None, spec: dict[str, Any], wanted: bool) -> None:
    assert _sp(annotations, **spec).topology_aware is wanted


# -- categorize --------------------------------------------------------------------------------------
def test_all_hinted_and_one_for_our_zone_keeps_cluster_traffic_in_zone() -> None:
    a1, a2, b1 = _ep("10.0.0.1", "zone-a"), _ep("10.0.0.2", "zone-a", "zone-b"), _ep("10.0.0.3", "zone-b")
    cat = categorize(_sp(), (a1, a2, b1), zone="zone-a")
    assert cat.cluster == [a1, a2]
    assert cat.all_reachable == [a1, a2]  # b1 is not programmed at all
    assert categorize(_sp(), (a1, a2, b1), zone="zone-b").cluster == [a2, b1]


def test_one_ready_endpoint_without_hint_means_all() -> None:
    a1, bare = _ep("10.0.0.1", "zone-a"), _ep("10.0.0.2")
    assert categorize(_sp(), (a1, bare), zone="zone-a").cluster == [a1, bare]
    # a not-ready endpoint does not count: its missing hint is no reason to give up on them
    unready = _ep("10.0.0.3", ready=False)
    assert categorize(_sp(), (a1, unready), zone="zone-a").cluster == [a1]


def test_no_endpoint_for_our_zone_means_all() -> None:
    b1, c1 = _ep("10.0.0.1", "zone-b"), _ep("10.0.0.2", "zone-c")
    assert categorize(_sp(), (b1, c1), zone="zone-a").cluster == [b1, c1]
    # a hint for our zone on an endpoint that is not ready does not count either
    a_unready = _ep("10.0.0.3", "zone-a", ready=False)
    assert categorize(_sp(), (a_unready, b1), zone="zone-a").cluster == [b1]


def test_no_zone_or_no_opt_in_means_all() -> None:
    a1, b1 = _ep("10.0.0.1", "zone-a"), _ep("10.0.0.2", "zone-b")
    assert categorize(_sp(), (a1, b1)).cluster == [a1, b1]  # node without the zone label
    assert categorize(_sp(None), (a1, b1), zone="zone-a").cluster == [a1, b1]  # Service did not ask


def test_local_policies_ignore_hints() -> None:
    local_b = _ep("10.0.0.1", "zone-b", local=True)
    remote_a = _ep("10.0.0.2", "zone-a")
    itp = categorize(_sp(internalTrafficPolicy="Local"), (local_b, remote_a), zone="zone-a")
    assert itp.local == [local_b]  # the Local policy keeps its local endpoint, whatever its hint
    etp = categorize(_sp(type_="NodePort", externalTrafficPolicy="Local"), (local_b, remote_a), zone="zone-a")
    assert etp.cluster == [remote_a] and etp.local == [local_b]
    assert etp.all_reachable == [local_b, remote_a]  # both are programmed: internal + external chains


def test_terminating_fallback_is_unaffected() -> None:
    # no ready endpoint anywhere: hints are not consulted, serving-terminating ones are the fallback
    term = Endpoint("10.0.0.1", 8080, ready=False, serving=True, terminating=True, zone_hints=("zone-b",))
    assert categorize(_sp(), (term,), zone="zone-a").cluster == [term]


# -- the node's zone in the sync loop -----------------------------------------------------------------
class _RecordingBackend:
    name = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[set[str] | None, str]] = []

    def sync(self, state: ProxyState, changed: set[str] | None) -> SyncResult:
        self.calls.append((None if changed is None else set(changed), state.node.zone))
        return SyncResult(full=changed is None)

    def cleanup(self) -> None:
        pass


def test_zone_change_forces_a_full_sync() -> None:
    backend = _RecordingBackend()
    p = Proxier(backend, "n1", min_sync_period=0)
    p.on_node(_zoned_node("zone-a"))
    assert p.node.zone == "zone-a"
    p.on_service(None, _svc(AUTO))
    assert p.sync_once()
    assert p.sync_once()
    assert backend.calls[-1] == (set(), "zone-a")  # nothing changed: a partial sync
    p.on_node(_zoned_node("zone-a"))  # same Node again: still nothing to do
    assert p.sync_once() and backend.calls[-1] == (set(), "zone-a")
    p.on_node(_zoned_node("zone-b"))
    assert p.sync_once()
    assert backend.calls[-1] == (None, "zone-b")  # every port may route differently now
    p.on_node(_zoned_node(None))
    assert p.sync_once() and backend.calls[-1] == (None, "")


# -- through the back ends -----------------------------------------------------------------------------
# The back ends pass `zone=state.node.zone` to categorize once their render functions take the zone;
# until then these are skipped, not failed.
def _takes_zone(fn: Any) -> bool:
    return "zone" in inspect.signature(fn).parameters


def _web_in_two_zones(p: Proxier, zone: str) -> None:
    p.on_node(_zoned_node(zone))
    p.on_service(None, _svc(AUTO))
    p.on_endpoint_slice(endpoint_slice("web", [_hinted(endpoint("10.244.1.2", "n1"), "zone-a"),
                                               _hinted(endpoint("10.244.2.2", "n2"), "zone-b")]))


@pytest.mark.skipif(not _takes_zone(iptables_proxier_mod.render_service),
                    reason="iptables render_service does not take the zone yet")
def test_iptables_routes_to_the_zone_and_rerenders_when_it_changes() -> None:
    p, _, tracer = iptables_proxier()
    _web_in_two_zones(p, "zone-a")
    assert p.sync_once()
    pkt = Packet("10.244.9.9", "10.96.0.50", "tcp", 80)
    assert {o.dnat for o in tracer.trace(pkt)} == {"10.244.1.2:8080"}
    p.on_node(_zoned_node("zone-b"))
    assert p.sync_once()
    assert {o.dnat for o in tracer.trace(pkt)} == {"10.244.2.2:8080"}  # no stale render from the cache


@pytest.mark.skipif(not _takes_zone(ipvs.desired_servers), reason="IPVS desired_servers does not take the zone yet")
def test_ipvs_real_servers_and_hairpin_follow_the_zone() -> None:
    nl, ipt = ipvs.FakeIpvs(), FakeIptables()
    backend = ipvs.IpvsBackend(nl, ipt)
    p = Proxier(backend, "n1", "10.244.0.0/16", min_sync_period=0)
    _web_in_two_zones(p, "zone-a")
    assert p.sync_once()
    vs = ipvs.VirtualServer("10.96.0.50", 80, "TCP")
    assert set(nl.dests[vs.key].values()) == {ipvs.RealServer("10.244.1.2", 8080)}
    assert "-s 10.244.2.2" not in backend.last_restore  # no hairpin rule for an unused endpoint
    p.on_node(_zoned_node("zone-b"))
    assert p.sync_once()
    assert set(nl.dests[vs.key].values()) == {ipvs.RealServer("10.244.2.2", 8080)}
    assert "-s 10.244.2.2 -d 10.244.2.2" in backend.last_restore


@pytest.mark.skipif(not _takes_zone(nftables.render_service), reason="nftables render_service does not take the zone yet")
def test_nftables_follows_the_zone() -> None:
    sent: list[str] = []
    backend = nftables.NftablesBackend(runner=lambda chunks: sent.append("".join(chunks)), lister=lambda: "",
                                       prober=lambda: "vmap @service-ips",
                                       element_writer=lambda ops: sent.append(repr(ops)))
    p = Proxier(backend, "n1", "10.244.0.0/16", min_sync_period=0)
    _web_in_two_zones(p, "zone-a")
    assert p.sync_once()
    assert "10.244.1.2" in "".join(sent) and "10.244.2.2" not in "".join(sent)
    sent.clear()
    p.on_node(_zoned_node("zone-b"))
    assert p.sync_once()
    assert "10.244.2.2" in "".join(sent)
