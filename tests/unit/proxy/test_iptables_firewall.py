"""loadBalancerSourceRanges and --nodeport-addresses: the rendered rules (upstream's layout) and
packets traced through the validating fake, in iptables mode and in IPVS mode (over its fakes)."""

from __future__ import annotations

from typing import Any

from nodeagent.proxy.backend import ProxyState
from nodeagent.proxy.iptables import names
from nodeagent.proxy.iptables.fake import FakeIptables, Outcome, Packet, Tracer
from nodeagent.proxy.iptables.proxier import IptablesBackend, cleanup_iptables
from nodeagent.proxy.ipvs import FakeIpvs, IpvsBackend, VirtualServer
from nodeagent.proxy.proxier import Proxier
from tests.helpers.proxy_objects import endpoint, endpoint_slice, service

NODE_IP = "192.168.56.10"
NODE_IP2 = "172.16.0.10"  # a second address of the node (another interface)
LB_IP = "198.51.100.7"
ALLOWED = "203.0.113.0/24"
INSIDE, OUTSIDE = "203.0.113.5", "192.0.2.9"
NODE_PORT = 30080
SPN = "default/lb:http"
FW = names.fw_chain(SPN, "tcp")
EXT = names.ext_chain(SPN, "tcp")
ENDPOINTS = {"10.244.1.2:8080", "10.244.2.2:8080"}


def _node(ips: tuple[str, ...]) -> dict[str, Any]:
    addrs = [{"type": "InternalIP" if i == 0 else "ExternalIP", "address": ip} for i, ip in enumerate(ips)]
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "status": {"addresses": addrs}}


def _proxier(nodeport_addresses: tuple[str, ...] = (), node_ips: tuple[str, ...] = (NODE_IP,),
             ipt: FakeIptables | None = None) -> tuple[Proxier, FakeIptables, Tracer]:
    ipt = ipt or FakeIptables()
    p = Proxier(IptablesBackend(ipt), "n1", "10.244.0.0/16", min_sync_period=0,
                nodeport_addresses=nodeport_addresses)
    p.on_node(_node(node_ips))
    return p, ipt, Tracer(ipt, node_ips)


def _lb(ranges: list[str] | None, etp: str = "Cluster", name: str = "lb") -> dict[str, Any]:
    spec: dict[str, Any] = {"externalTrafficPolicy": etp}
    if ranges is not None:
        spec["loadBalancerSourceRanges"] = ranges
    svc = service(name, "10.96.0.80", type_="LoadBalancer", ports=[
        {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": NODE_PORT}], **spec)
    return {**svc, "status": {"loadBalancer": {"ingress": [{"ip": LB_IP}]}}}


def _with_endpoints(p: Proxier, ranges: list[str] | None, etp: str = "Cluster") -> None:
    p.on_service(None, _lb(ranges, etp))
    p.on_endpoint_slice(endpoint_slice("lb", [endpoint("10.244.1.2", "n1"), endpoint("10.244.2.2", "n2")]))


def _dnats(outcomes: set[Outcome]) -> set[str | None]:
    return {o.dnat for o in outcomes}


def test_chain_name_is_upstreams() -> None:
    # upstream proxier_test.go: ns5/svc5:p80 (tcp) has KUBE-SVC-NUKIZ6OKUXPJNT4C / KUBE-FW-NUKIZ6OKUXPJNT4C
    assert names.fw_chain("ns5/svc5:p80", "TCP") == "KUBE-FW-NUKIZ6OKUXPJNT4C"


def test_source_ranges_render_upstreams_layout() -> None:
    p, ipt, _ = _proxier()
    _with_endpoints(p, [ALLOWED, "198.18.0.1/15"])  # a non-canonical range arrives canonical
    assert p.sync_once()
    # the LB IP goes to KUBE-FW-<h>; external IPs and node ports still go to KUBE-EXT-<h>
    assert [r for r in ipt.rules("nat", "KUBE-SERVICES") if LB_IP in r] == [
        f"-m comment --comment '{SPN} loadbalancer IP' -m tcp -p tcp -d {LB_IP} --dport 80 -j {FW}"]
    assert ipt.rules("nat", "KUBE-NODEPORTS") == [f"-m comment --comment {SPN} -m tcp -p tcp --dport 30080 -j {EXT}"]
    assert ipt.rules("nat", FW) == [
        f"-m comment --comment '{SPN} loadbalancer IP' -s 198.18.0.0/15 -j {EXT}",
        f"-m comment --comment '{SPN} loadbalancer IP' -s {ALLOWED} -j {EXT}",
        f"-m comment --comment 'other traffic to {SPN} will be dropped by KUBE-PROXY-FIREWALL'",
    ]
    assert ipt.rules("filter", "KUBE-PROXY-FIREWALL") == [
        f"-m comment --comment '{SPN} traffic not accepted by {FW}' -m tcp -p tcp -d {LB_IP} --dport 80 -j DROP"]
    # the firewall comes first in INPUT, FORWARD and OUTPUT, for new connections only
    for chain in ("INPUT", "FORWARD", "OUTPUT"):
        assert ipt.rules("filter", chain)[0] == (
            "-m conntrack --ctstate NEW -m comment --comment 'kubernetes load balancer firewall' "
            "-j KUBE-PROXY-FIREWALL"), chain


def test_lb_ip_is_an_allowed_source_only_when_a_range_holds_the_node() -> None:
    p, ipt, _ = _proxier()
    _with_endpoints(p, [ALLOWED, "192.168.56.0/24"])  # holds NODE_IP
    assert p.sync_once()
    assert f"-m comment --comment '{SPN} loadbalancer IP' -s {LB_IP} -j {EXT}" in ipt.rules("nat", FW)
    p.on_service(_lb([ALLOWED, "192.168.56.0/24"]), _lb([ALLOWED]))
    assert p.sync_once()
    assert not any(f"-s {LB_IP}" in r for r in ipt.rules("nat", FW))


def test_trace_allowed_source_reaches_endpoints_others_are_dropped_nodeport_unfiltered() -> None:
    p, _, tracer = _proxier()
    _with_endpoints(p, [ALLOWED])
    assert p.sync_once()
    allowed = tracer.trace(Packet(INSIDE, LB_IP, "tcp", 80))
    assert _dnats(allowed) == ENDPOINTS and all(o.verdict == "ACCEPT" and o.masquerade for o in allowed)
    assert tracer.trace(Packet(OUTSIDE, LB_IP, "tcp", 80)) == {Outcome("DROP", None, False)}
    # as upstream: neither the node port nor the cluster IP is subject to the source ranges
    assert _dnats(tracer.trace(Packet(OUTSIDE, NODE_IP, "tcp", NODE_PORT))) == ENDPOINTS
    assert _dnats(tracer.trace(Packet(OUTSIDE, "10.96.0.80", "tcp", 80))) == ENDPOINTS
    # another port of the LB IP is not ours to filter
    assert tracer.trace(Packet(OUTSIDE, LB_IP, "tcp", 81)) == {Outcome("ACCEPT", None, False)}


def test_without_source_ranges_everyone_reaches_the_lb_ip() -> None:
    p, ipt, tracer = _proxier()
    _with_endpoints(p, None)
    assert p.sync_once()
    assert _dnats(tracer.trace(Packet(OUTSIDE, LB_IP, "tcp", 80))) == ENDPOINTS
    assert not [c for c in ipt.chains("nat") if c.startswith("KUBE-FW-")]
    assert ipt.rules("filter", "KUBE-PROXY-FIREWALL") == []


def test_external_policy_local_keeps_the_client_ip_behind_the_firewall() -> None:
    p, _, tracer = _proxier()
    _with_endpoints(p, [ALLOWED], etp="Local")
    assert p.sync_once()
    assert tracer.trace(Packet(INSIDE, LB_IP, "tcp", 80)) == {Outcome("ACCEPT", "10.244.1.2:8080", False)}
    assert tracer.trace(Packet(OUTSIDE, LB_IP, "tcp", 80)) == {Outcome("DROP", None, False)}


def test_no_endpoints_means_reject_and_no_firewall_chain() -> None:
    p, ipt, tracer = _proxier()
    p.on_service(None, _lb([ALLOWED]))
    assert p.sync_once()
    assert FW not in ipt.chains("nat") and ipt.rules("filter", "KUBE-PROXY-FIREWALL") == []
    assert tracer.trace(Packet(INSIDE, LB_IP, "tcp", 80)) == {Outcome("REJECT", None, False)}


def test_partial_syncs_add_rewrite_and_delete_the_firewall_chain() -> None:
    p, ipt, tracer = _proxier()
    _with_endpoints(p, None)
    p.on_service(None, service("other", "10.96.0.90"))
    p.on_endpoint_slice(endpoint_slice("other", [endpoint("10.244.3.2")]))
    assert p.sync_once()
    other = names.svc_chain("default/other:http", "tcp")
    # ranges added: a partial sync (other's chains are not re-sent) creates KUBE-FW and its DROP
    p.on_service(_lb(None), _lb([ALLOWED]))
    assert p.sync_once()
    text = ipt.restores[-1]
    assert f":{FW} - [0:0]" in text and f":{other} - [0:0]" not in text
    assert tracer.trace(Packet(OUTSIDE, LB_IP, "tcp", 80)) == {Outcome("DROP", None, False)}
    # endpoints change: only the Service's own nat chains, KUBE-FW among them, are rewritten
    p.on_endpoint_slice(endpoint_slice("lb", [endpoint("10.244.1.2", "n1")]))
    assert p.sync_once()
    text = ipt.restores[-1]
    assert "*filter" not in text and f":{FW} - [0:0]" in text
    assert _dnats(tracer.trace(Packet(INSIDE, LB_IP, "tcp", 80))) == {"10.244.1.2:8080"}
    assert tracer.trace(Packet(OUTSIDE, LB_IP, "tcp", 80)) == {Outcome("DROP", None, False)}
    # ranges removed: KUBE-FW is stale and deleted, the DROP goes, everyone gets through
    p.on_service(_lb([ALLOWED]), _lb(None))
    assert p.sync_once()
    assert f"-X {FW}" in ipt.restores[-1] and FW not in ipt.chains("nat")
    assert ipt.rules("filter", "KUBE-PROXY-FIREWALL") == []
    assert _dnats(tracer.trace(Packet(OUTSIDE, LB_IP, "tcp", 80))) == {"10.244.1.2:8080"}
    # and back, then the Service goes: every chain of it goes
    p.on_service(_lb(None), _lb([ALLOWED]))
    assert p.sync_once() and FW in ipt.chains("nat")
    p.on_service(_lb([ALLOWED]), None)
    assert p.sync_once()
    assert FW not in ipt.chains("nat") and ipt.rules("filter", "KUBE-PROXY-FIREWALL") == []
    assert other in ipt.chains("nat")


def test_restart_full_sync_deletes_a_firewall_chain_nobody_owns() -> None:
    p, ipt, _ = _proxier()
    _with_endpoints(p, [ALLOWED])
    assert p.sync_once() and FW in ipt.chains("nat")
    # a new proxy process over the same kernel; the Service lost its ranges meanwhile
    p2, _, tracer = _proxier(ipt=ipt)
    _with_endpoints(p2, None)
    assert p2.sync_once()
    assert FW not in ipt.chains("nat") and ipt.rules("filter", "KUBE-PROXY-FIREWALL") == []
    assert _dnats(tracer.trace(Packet(OUTSIDE, LB_IP, "tcp", 80))) == ENDPOINTS


def test_cleanup_removes_the_firewall_chains_and_jumps() -> None:
    p, ipt, _ = _proxier()
    _with_endpoints(p, [ALLOWED])
    assert p.sync_once()
    cleanup_iptables(ipt)
    assert FW not in ipt.chains("nat") and "KUBE-PROXY-FIREWALL" not in ipt.chains("filter")
    for chain in ("INPUT", "FORWARD", "OUTPUT"):
        assert not any("KUBE-" in r for r in ipt.rules("filter", chain)), chain


def test_nodeport_addresses_render_one_jump_per_cidr() -> None:
    p, ipt, _ = _proxier(nodeport_addresses=("172.16.0.0/16", "10.1.0.0/24"), node_ips=(NODE_IP, NODE_IP2))
    _with_endpoints(p, None)
    assert p.sync_once()
    comment = "'kubernetes service nodeports; NOTE: this must be the last rule in this chain'"
    assert ipt.rules("nat", "KUBE-SERVICES")[-2:] == [
        f"-m comment --comment {comment} -d 172.16.0.0/16 -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
        f"-m comment --comment {comment} -d 10.1.0.0/24 -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"]
    # the default: one rule, every local address
    p0, ipt0, _ = _proxier()
    _with_endpoints(p0, None)
    assert p0.sync_once()
    assert ipt0.rules("nat", "KUBE-SERVICES")[-1] == (
        f"-m comment --comment {comment} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")


def test_nodeport_addresses_trace() -> None:
    p, _, tracer = _proxier(nodeport_addresses=("172.16.0.0/16",), node_ips=(NODE_IP, NODE_IP2))
    _with_endpoints(p, None)
    assert p.sync_once()
    assert _dnats(tracer.trace(Packet(OUTSIDE, NODE_IP2, "tcp", NODE_PORT))) == ENDPOINTS
    # outside the CIDRs the packet is the node's own (a local process may use the port)
    assert tracer.trace(Packet(OUTSIDE, NODE_IP, "tcp", NODE_PORT)) == {Outcome("ACCEPT", None, False)}
    # the cluster IP and the LB IP are no NodePorts: not restricted
    assert _dnats(tracer.trace(Packet(OUTSIDE, "10.96.0.80", "tcp", 80))) == ENDPOINTS
    assert _dnats(tracer.trace(Packet(OUTSIDE, LB_IP, "tcp", 80))) == ENDPOINTS


def test_nodeport_addresses_restrict_the_no_endpoints_reject_too() -> None:
    p, ipt, tracer = _proxier(nodeport_addresses=("172.16.0.0/16",), node_ips=(NODE_IP, NODE_IP2))
    p.on_service(None, _lb(None))
    assert p.sync_once()
    assert [r for r in ipt.rules("filter", "KUBE-EXTERNAL-SERVICES") if "--dport 30080" in r] == [
        f"-m comment --comment '{SPN} has no endpoints' -d 172.16.0.0/16 -m addrtype --dst-type LOCAL "
        "-m tcp -p tcp --dport 30080 -j REJECT"]
    assert tracer.trace(Packet(OUTSIDE, NODE_IP2, "tcp", NODE_PORT)) == {Outcome("REJECT", None, False)}
    assert tracer.trace(Packet(OUTSIDE, NODE_IP, "tcp", NODE_PORT)) == {Outcome("ACCEPT", None, False)}


# -- IPVS mode: the same two features, in the filter table and in the set of virtual servers ------

def _ipvs_state(svc: dict[str, Any], nodeport_addresses: tuple[str, ...] = (),
                node_ips: tuple[str, ...] = (NODE_IP,)) -> ProxyState:
    p = Proxier(IpvsBackend(FakeIpvs(), FakeIptables()), "n1", "10.244.0.0/16",
                nodeport_addresses=nodeport_addresses)
    p.on_node(_node(node_ips))
    p.on_service(None, svc)
    p.on_endpoint_slice(endpoint_slice(svc["metadata"]["name"], [endpoint("10.244.1.2", "n1")]))
    p.svc_map.apply(p.svc_tracker)
    p.ep_map.apply(p.ep_tracker)
    return p.state()


def test_ipvs_source_ranges_filter_the_lb_ip_only() -> None:
    nl, ipt = FakeIpvs(), FakeIptables()
    IpvsBackend(nl, ipt).sync(_ipvs_state(_lb([ALLOWED, "192.168.56.0/24"])), None)
    assert ipt.rules("filter", "KUBE-PROXY-FIREWALL") == [
        f"-m comment --comment '{SPN} loadbalancer IP' -m tcp -p tcp -d {LB_IP} --dport 80 "
        "-j KUBE-SOURCE-RANGES-FIREWALL"]
    assert ipt.rules("filter", "KUBE-SOURCE-RANGES-FIREWALL") == [
        f"-m comment --comment '{SPN} loadbalancer source range' -m tcp -p tcp -d {LB_IP} --dport 80 "
        f"-s 192.168.56.0/24 -j RETURN",
        f"-m comment --comment '{SPN} loadbalancer source range' -m tcp -p tcp -d {LB_IP} --dport 80 "
        f"-s {ALLOWED} -j RETURN",
        f"-m comment --comment '{SPN} loadbalancer source range' -m tcp -p tcp -d {LB_IP} --dport 80 "
        f"-s {LB_IP} -j RETURN",  # a range holds the node IP (upstream's KUBE-LOAD-BALANCER-SOURCE-IP)
        "-j DROP"]
    for chain in ("INPUT", "FORWARD"):
        assert ipt.rules("filter", chain)[0] == (
            "-m comment --comment 'kube-proxy firewall rules' -j KUBE-PROXY-FIREWALL"), chain
    # IPVS answers at LOCAL_IN, after filter INPUT: the LB IP is local (on kube-ipvs0)
    tracer = Tracer(ipt, (NODE_IP, LB_IP))
    assert tracer.trace(Packet(INSIDE, LB_IP, "tcp", 80)) == {Outcome("ACCEPT", None, True)}
    assert tracer.trace(Packet(OUTSIDE, LB_IP, "tcp", 80)) == {Outcome("DROP", None, False)}
    assert tracer.trace(Packet(OUTSIDE, NODE_IP, "tcp", NODE_PORT)) == {Outcome("ACCEPT", None, True)}
    assert VirtualServer(LB_IP, 80, "TCP") in nl.services.values()


def test_ipvs_without_source_ranges_has_empty_firewall_chains() -> None:
    nl, ipt = FakeIpvs(), FakeIptables()
    backend = IpvsBackend(nl, ipt)
    backend.sync(_ipvs_state(_lb([ALLOWED])), None)
    backend.sync(_ipvs_state(_lb(None)), {"default/lb"})
    assert ipt.rules("filter", "KUBE-PROXY-FIREWALL") == []
    assert Tracer(ipt, (NODE_IP, LB_IP)).trace(Packet(OUTSIDE, LB_IP, "tcp", 80)) == {
        Outcome("ACCEPT", None, True)}
    backend.cleanup()
    assert not [c for t in ("nat", "filter") for c in ipt.chains(t) if c.startswith("KUBE-")]
    assert not any("KUBE-" in r for c in ("INPUT", "FORWARD") for r in ipt.rules("filter", c))


def test_ipvs_nodeport_addresses_choose_the_node_port_virtual_servers() -> None:
    nl = FakeIpvs()
    state = _ipvs_state(_lb(None), nodeport_addresses=("172.16.0.0/16",), node_ips=(NODE_IP, NODE_IP2))
    IpvsBackend(nl, FakeIptables()).sync(state, None)
    node_port_vs = {vs.ip for vs in nl.services.values() if vs.port == NODE_PORT}
    assert node_port_vs == {NODE_IP2}
    nl_all = FakeIpvs()
    IpvsBackend(nl_all, FakeIptables()).sync(_ipvs_state(_lb(None), node_ips=(NODE_IP, NODE_IP2)), None)
    assert {vs.ip for vs in nl_all.services.values() if vs.port == NODE_PORT} == {NODE_IP, NODE_IP2}
