"""The nftables and IPVS back ends over fakes (the nft text and the netlink calls)."""

from __future__ import annotations

from collections.abc import Iterable

from nodeagent.proxy.backend import ProxyState
from nodeagent.proxy.iptables.fake import FakeIptables
from nodeagent.proxy.ipvs import DUMMY, FakeIpvs, IpvsBackend, RealServer, VirtualServer
from nodeagent.proxy.nftables import NftablesBackend, NftError
from nodeagent.proxy.proxier import Proxier
from tests.helpers.proxy_objects import endpoint, endpoint_slice, node, service


class FakeNft:
    def __init__(self) -> None:
        self.inputs: list[str] = []
        self.fail = False

    def __call__(self, chunks: Iterable[str]) -> None:
        text = "".join(chunks)
        if self.fail:
            self.fail = False
            raise NftError("injected")
        self.inputs.append(text)


def _nft_proxier() -> tuple[Proxier, FakeNft]:
    nft = FakeNft()
    backend = NftablesBackend(runner=nft, lister=lambda: "", prober=lambda: "vmap @service-ips")
    p = Proxier(backend, "n1", "10.244.0.0/16", min_sync_period=0)
    p.on_node(node("n1", "192.168.56.10"))
    return p, nft


def test_nftables_full_sync_uses_maps_and_numgen() -> None:
    p, nft = _nft_proxier()
    p.on_service(None, service("web", "10.96.0.50", type_="NodePort",
                               ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]))
    p.on_endpoint_slice(endpoint_slice("web", [endpoint("10.244.1.2"), endpoint("10.244.2.2"), endpoint("10.244.3.2")]))
    p.on_service(None, service("empty", "10.96.0.51"))
    assert p.sync_once()
    text = nft.inputs[-1]
    assert "flush table ip kube-proxy" in text
    assert "add element ip kube-proxy service-ips { 10.96.0.50 . tcp . 80 : goto service-" in text
    assert "add element ip kube-proxy service-nodeports { tcp . 30080 : goto external-" in text
    assert "add element ip kube-proxy no-endpoint-services { 10.96.0.51 . tcp . 80 : goto reject-chain }" in text
    # endpoints are data: one dnat rule picks slot `numgen mod 3` of the Service's slot range
    dispatch = [ln.split("http ", 1)[1] for ln in text.splitlines()
                if ln.startswith("add rule ip kube-proxy service-") and "dnat" in ln]
    assert dispatch == ["meta l4proto tcp dnat ip addr . port to numgen random mod 3 offset 0 map @endpoint-slots-tcp-0"]
    assert ("add element ip kube-proxy endpoint-slots-tcp-0 "
            "{ 0 : 10.244.1.2 . 8080, 1 : 10.244.2.2 . 8080, 2 : 10.244.3.2 . 8080 }") in text
    # the slot elements come after every rule (see render_chunks)
    lines = text.splitlines()
    last_rule = max(i for i, ln in enumerate(lines) if ln.startswith("add rule"))
    assert all(i > last_rule for i, ln in enumerate(lines) if ln.startswith("add element ip kube-proxy endpoint-slots"))
    # hairpin (endpoints of unknown node): exact `saddr . daddr` pairs, masqueraded in nat-postrouting
    assert ("add element ip kube-proxy hairpin-endpoints "
            "{ 10.244.1.2 . 10.244.1.2, 10.244.2.2 . 10.244.2.2, 10.244.3.2 . 10.244.3.2 }") in text
    assert "nat-postrouting ct status dnat ip saddr . ip daddr @hairpin-endpoints jump mark-for-masquerade" in text
    assert " map {" not in text and " vmap {" not in text  # no anonymous sets: see _endpoint_dispatch
    assert "chain ip kube-proxy endpoint-" not in text  # no per-endpoint chains without affinity


def test_nftables_partial_sync_touches_only_changed_service() -> None:
    p, nft = _nft_proxier()
    for name, ip in (("web", "10.96.0.50"), ("db", "10.96.0.70")):
        p.on_service(None, service(name, ip))
        p.on_endpoint_slice(endpoint_slice(name, [endpoint("10.244.1.2"), endpoint("10.244.1.3")]))
    p.sync_once()
    p.on_endpoint_slice(endpoint_slice("web", [endpoint("10.244.1.2")]))
    assert p.sync_once()
    text = nft.inputs[-1]
    assert "flush table" not in text and "default/db/" not in text
    # one endpoint fewer: the rule's modulus changes and the dropped slot goes; the service-ips
    # entry still points at the same chain and is not re-sent
    assert "service-ips" not in text
    assert "flush chain ip kube-proxy service-" in text
    assert "10.244.1.3" not in text
    assert "dnat ip addr . port to numgen random mod 1 offset 16 map @endpoint-slots-tcp-1" in text
    assert "delete element ip kube-proxy endpoint-slots-tcp-1 { 17 }" in text
    assert "add element" not in text  # slot 16 keeps 10.244.1.2
    # a new cluster IP: the old map entry goes, the new one comes
    p.on_service(service("web", "10.96.0.50"), service("web", "10.96.0.51"))
    assert p.sync_once()
    text = nft.inputs[-1]
    assert "delete element ip kube-proxy service-ips { 10.96.0.50 . tcp . 80 }" in text
    assert "add element ip kube-proxy service-ips { 10.96.0.51 . tcp . 80 : goto service-" in text
    # a failed transaction makes the next sync a full one
    nft.fail = True
    p.on_endpoint_slice(endpoint_slice("web", [endpoint("10.244.1.2"), endpoint("10.244.1.4")]))
    assert not p.sync_once()
    assert p.sync_once()
    assert "flush table ip kube-proxy" in nft.inputs[-1] and "default/db/" in nft.inputs[-1]


def test_nftables_session_affinity_uses_endpoint_chains_and_sets() -> None:
    p, nft = _nft_proxier()
    p.on_service(None, service("web", "10.96.0.50", sessionAffinity="ClientIP"))
    p.on_endpoint_slice(endpoint_slice("web", [endpoint("10.244.1.2"), endpoint("10.244.1.3")]))
    p.sync_once()
    text = nft.inputs[-1]
    assert "flags dynamic,timeout ; timeout 10800s" in text
    assert "numgen random mod 2 == 0 goto endpoint-" in text
    assert "update @affinity-" in text and "ip saddr @affinity-" in text
    p.on_endpoint_slice(endpoint_slice("web", [endpoint("10.244.1.2")]))
    p.sync_once()
    text = nft.inputs[-1]
    gone = [ln for ln in text.splitlines() if ln.startswith(("delete chain", "delete set"))]
    assert len(gone) == 2 and all("10.244.1.3/8080" in ln for ln in gone)


def test_nftables_flushed_table_detected_on_periodic_sync() -> None:
    nft = FakeNft()
    probe = {"out": "vmap @service-ips"}
    backend = NftablesBackend(runner=nft, lister=lambda: "", prober=lambda: probe["out"])
    p = Proxier(backend, "n1", None, min_sync_period=0)
    p.on_service(None, service("web", "10.96.0.50"))
    p.sync_once()
    p.sync_once()
    assert "flush table" not in nft.inputs[-1]
    probe["out"] = ""  # someone ran `nft flush ruleset`
    p.sync_once()
    assert "flush table ip kube-proxy" in nft.inputs[-1]


def test_nftables_replaced_endpoint_is_only_map_elements() -> None:
    """The common change (an endpoint replaced, same count) sends no rule, chain or verdict: the
    kernel then skips its table-wide validation (see nftables.py)."""
    p, nft = _nft_proxier()
    p.on_service(None, service("web", "10.96.0.50"))
    p.on_endpoint_slice(endpoint_slice("web", [endpoint("10.244.1.2"), endpoint("10.244.1.3")]))
    p.sync_once()
    p.on_endpoint_slice(endpoint_slice("web", [endpoint("10.244.1.2"), endpoint("10.244.1.4")]))
    assert p.sync_once()
    text = nft.inputs[-1]
    assert text.splitlines() == [
        "delete element ip kube-proxy endpoint-slots-tcp-0 { 1 }",
        "add element ip kube-proxy endpoint-slots-tcp-0 { 1 : 10.244.1.4 . 8080 }",
        "delete element ip kube-proxy hairpin-endpoints { 10.244.1.3 . 10.244.1.3 }",
        "add element ip kube-proxy hairpin-endpoints { 10.244.1.4 . 10.244.1.4 }",
    ]


def test_nftables_slot_ranges_grow_and_are_reused_only_after_commit() -> None:
    p, nft = _nft_proxier()
    p.on_service(None, service("a", "10.96.0.50"))
    p.on_endpoint_slice(endpoint_slice("a", [endpoint("10.244.1.2")]))
    p.sync_once()
    assert "numgen random mod 1 offset 0 map @endpoint-slots-tcp-0" in nft.inputs[-1]
    # 17 endpoints outgrow a's range of 16: a new range of 32; the old one is not handed to b,
    # added in the same transaction (its adds could precede a's deletes)
    p.on_endpoint_slice(endpoint_slice("a", [endpoint(f"10.244.2.{i}") for i in range(1, 18)]))
    p.on_service(None, service("b", "10.96.0.51"))
    p.on_endpoint_slice(endpoint_slice("b", [endpoint("10.244.3.1")]))
    p.sync_once()
    text = nft.inputs[-1]
    assert "numgen random mod 17 offset 16 map @endpoint-slots-tcp-1" in text
    assert "numgen random mod 1 offset 48 map @endpoint-slots-tcp-3" in text
    assert "delete element ip kube-proxy endpoint-slots-tcp-0 { 0 }" in text
    # after the commit range 0 is free again: the next Service gets it
    p.on_service(None, service("c", "10.96.0.52"))
    p.on_endpoint_slice(endpoint_slice("c", [endpoint("10.244.4.1")]))
    p.sync_once()
    assert "numgen random mod 1 offset 0 map @endpoint-slots-tcp-0" in nft.inputs[-1]
    # a Service that goes takes its elements along
    p.on_service(service("b", "10.96.0.51"), None)
    p.sync_once()
    assert "delete element ip kube-proxy endpoint-slots-tcp-3 { 48 }" in nft.inputs[-1]


def _ipvs_state(eps: list[str], **spec) -> ProxyState:  # type: ignore[no-untyped-def]
    p = Proxier(IpvsBackend(FakeIpvs(), FakeIptables()), "n1", "10.244.0.0/16")
    p.on_node(node("n1", "192.168.56.10"))
    p.on_service(None, service("web", "10.96.0.50", **spec))
    p.on_endpoint_slice(endpoint_slice("web", [endpoint(ip) for ip in eps]))
    p.svc_map.apply(p.svc_tracker)
    p.ep_map.apply(p.ep_tracker)
    return p.state()


def test_ipvs_virtual_and_real_servers() -> None:
    nl, ipt = FakeIpvs(), FakeIptables()
    backend = IpvsBackend(nl, ipt)
    state = _ipvs_state(["10.244.1.2", "10.244.2.2"], type_="NodePort",
                        ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    backend.sync(state, None)
    vs = VirtualServer("10.96.0.50", 80, "TCP")
    assert set(nl.services.values()) == {vs, VirtualServer("192.168.56.10", 30080, "TCP")}
    assert set(nl.dests[vs.key].values()) == {RealServer("10.244.1.2", 8080), RealServer("10.244.2.2", 8080)}
    assert nl.links[DUMMY] == {"10.96.0.50"}  # the node IP is not put on the dummy
    assert any("! -s 10.244.0.0/16 -j KUBE-MARK-MASQ" in r for r in ipt.rules("nat", "KUBE-SERVICES"))
    assert any("-s 10.244.1.2 -d 10.244.1.2" in r and "MASQUERADE" in r for r in ipt.rules("nat", "KUBE-POSTROUTING"))
    # an endpoint goes: only its real server is removed; a second sync changes nothing
    nl.calls.clear()
    backend.sync(_ipvs_state(["10.244.1.2"], type_="NodePort",
                             ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]), {"default/web"})
    assert nl.calls == ["dest del 10.96.0.50:80/TCP -> 10.244.2.2:8080",
                        "dest del 192.168.56.10:30080/TCP -> 10.244.2.2:8080"]
    nl.calls.clear()
    backend.sync(_ipvs_state(["10.244.1.2"], type_="NodePort",
                             ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]), set())
    assert nl.calls == []
    # the service goes: virtual servers and the address go
    empty = ProxyState({}, {}, state.node, state.cluster_cidr)
    backend.sync(empty, {"default/web"})
    assert nl.services == {} and nl.links[DUMMY] == set()
    backend.cleanup()
    assert DUMMY not in nl.links


def test_ipvs_session_affinity_is_persistence() -> None:
    nl = FakeIpvs()
    IpvsBackend(nl, FakeIptables()).sync(_ipvs_state(["10.244.1.2"], sessionAffinity="ClientIP"), None)
    assert [v.persistent_seconds for v in nl.services.values()] == [10800]


def test_nftables_hairpin_rules_only_for_endpoints_that_can_hairpin_here() -> None:
    p, nft = _nft_proxier()  # node n1
    p.on_service(None, service("web", "10.96.0.50"))
    p.on_endpoint_slice(endpoint_slice("web", [endpoint("10.244.1.2", "n1"), endpoint("10.244.2.2", "n2")]))
    p.sync_once()
    text = nft.inputs[-1]
    assert "hairpin-endpoints { 10.244.1.2 . 10.244.1.2 }" in text
    assert "10.244.2.2 . 10.244.2.2" not in text  # a pod on n2 never sends through n1's rules
    # an endpoint of two Services stays in the set until neither lists it
    p.on_service(None, service("api", "10.96.0.60"))
    p.on_endpoint_slice(endpoint_slice("api", [endpoint("10.244.1.2", "n1")]))
    p.sync_once()
    assert "hairpin-endpoints" not in nft.inputs[-1]
    p.on_endpoint_slice(endpoint_slice("web", [endpoint("10.244.2.2", "n2")]))
    p.sync_once()
    assert "hairpin-endpoints" not in nft.inputs[-1]
    p.on_service(service("api", "10.96.0.60"), None)
    p.sync_once()
    assert "delete element ip kube-proxy hairpin-endpoints { 10.244.1.2 . 10.244.1.2 }" in nft.inputs[-1]
