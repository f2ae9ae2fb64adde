"""The nftables and IPVS back ends over fakes (the nft text and the netlink calls)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from nodeagent.proxy.backend import ProxyState
from nodeagent.proxy.iptables.fake import FakeIptables
from nodeagent.proxy.ipvs import DUMMY, FakeIpvs, IpvsBackend, RealServer, VirtualServer
from nodeagent.proxy.nftables import ElementOp, NftablesBackend, NftError
from nodeagent.proxy.proxier import Proxier
from tests.helpers.proxy_objects import endpoint, endpoint_slice, node, service


class FakeNft:
    """Records what would go to `nft -f` (inputs) and to netlink (element batches)."""

    def __init__(self) -> None:
        self.inputs: list[str] = []
        self.batches: list[list[ElementOp]] = []
        self.calls: list[str] = []  # "nft" / "netlink", in order
        self.fail = False

    def _maybe_fail(self) -> None:
        if self.fail:
            self.fail = False
            raise NftError("injected")

    def __call__(self, chunks: Iterable[str]) -> None:
        text = "".join(chunks)
        self._maybe_fail()
        self.inputs.append(text)
        self.calls.append("nft")

    def write(self, ops: list[ElementOp]) -> None:
        if ops:
            self._maybe_fail()
            self.batches.append(ops)
            self.calls.append("netlink")


def _backend(nft: FakeNft, probe: Callable[[], str] = lambda: "vmap @service-ips") -> NftablesBackend:
    return NftablesBackend(runner=nft, lister=lambda: "", prober=probe, element_writer=nft.write)


def _nft_proxier() -> tuple[Proxier, FakeNft]:
    nft = FakeNft()
    backend = _backend(nft)
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
    # endpoints are data: one dnat rule draws a key of the chain's 2^16-wide range, which the
    # interval map splits into one near-equal share per endpoint
    dispatch = [ln.split("http ", 1)[1] for ln in text.splitlines()
                if ln.startswith("add rule ip kube-proxy service-") and "dnat" in ln]
    assert dispatch == ["meta l4proto tcp dnat ip addr . port to numgen random mod 65536 offset 0 map @endpoint-slots-tcp-0"]
    assert ("add element ip kube-proxy endpoint-slots-tcp-0 "
            "{ 0-21844 : 10.244.1.2 . 8080, 21845-43689 : 10.244.2.2 . 8080, 43690-65535 : 10.244.3.2 . 8080 }") in text
    assert "add map ip kube-proxy endpoint-slots-tcp-0 { typeof numgen random mod 1 : ip daddr . tcp dport ; flags interval ; }" in text
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
    n_inputs = len(nft.inputs)
    assert p.sync_once()
    # one endpoint fewer: map data only, so no nft input at all and the kernel skips its table
    # validation: the two halves of web's range (web sorts after db: slot 1, shard 1) become one
    # interval; db is not touched (and still lists 10.244.1.3: it stays in the hairpin set)
    assert len(nft.inputs) == n_inputs
    assert nft.batches[-1] == [
        ("delete", "endpoint-slots-tcp-1", "0-32767", None),
        ("delete", "endpoint-slots-tcp-1", "32768-65535", None),
        ("add", "endpoint-slots-tcp-1", "0-65535", "10.244.1.2 . 8080"),
    ]
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
    backend = _backend(nft, lambda: probe["out"])
    p = Proxier(backend, "n1", None, min_sync_period=0)
    p.on_service(None, service("web", "10.96.0.50"))
    p.sync_once()
    p.sync_once()
    assert len(nft.inputs) == 1 and not nft.batches  # nothing changed: nothing sent
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
    assert nft.calls == ["nft", "netlink"]  # the full sync, then one netlink transaction
    assert nft.batches[-1] == [
        ("delete", "hairpin-endpoints", "10.244.1.3 . 10.244.1.3", None),
        ("delete", "endpoint-slots-tcp-0", "32768-65535", None),
        ("add", "endpoint-slots-tcp-0", "32768-65535", "10.244.1.4 . 8080"),
        ("add", "hairpin-endpoints", "10.244.1.4 . 10.244.1.4", None),
    ]


def test_nftables_slots_are_stable_and_reused_only_after_commit() -> None:
    p, nft = _nft_proxier()
    p.on_service(None, service("a", "10.96.0.50"))
    p.on_endpoint_slice(endpoint_slice("a", [endpoint("10.244.1.2")]))
    p.sync_once()
    assert "numgen random mod 65536 offset 0 map @endpoint-slots-tcp-0" in nft.inputs[-1]
    # 17 endpoints: a keeps its slot and its rule (17 intervals); b, added in the same sync, gets
    # the next slot (shard 1). b's chain is new: nft writes it, after its intervals went in
    # (nothing points at them yet), and before its service-ips verdict (in the same nft input)
    p.on_endpoint_slice(endpoint_slice("a", [endpoint(f"10.244.2.{i}") for i in range(1, 18)]))
    p.on_service(None, service("b", "10.96.0.51"))
    p.on_endpoint_slice(endpoint_slice("b", [endpoint("10.244.3.1")]))
    p.sync_once()
    assert nft.calls[-2:] == ["netlink", "nft"]
    text, before = nft.inputs[-1], nft.batches[-1]
    assert "endpoint-slots-tcp-0" not in text and "default/a/" not in text  # a: no rule rewritten
    assert "numgen random mod 65536 offset 0 map @endpoint-slots-tcp-1" in text
    assert "add element ip kube-proxy service-ips { 10.96.0.51 . tcp . 80 : goto service-" in text
    assert ("delete", "endpoint-slots-tcp-0", "0-65535", None) in before
    assert sum(1 for op in before if op[0] == "add" and op[1] == "endpoint-slots-tcp-0") == 17
    assert ("add", "endpoint-slots-tcp-0", "61680-65535", "10.244.2.9 . 8080") in before  # sorted by IP text
    assert ("add", "endpoint-slots-tcp-1", "0-65535", "10.244.3.1 . 8080") in before
    # b goes: nft deletes its chain first, then its intervals go; its slot is not handed to c in
    # the same sync (c's intervals would go in before b's rule is gone), but after the commit it is
    p.on_service(service("b", "10.96.0.51"), None)
    p.on_service(None, service("c", "10.96.0.52"))
    p.on_endpoint_slice(endpoint_slice("c", [endpoint("10.244.4.1")]))
    p.sync_once()
    assert nft.calls[-3:] == ["netlink", "nft", "netlink"]
    assert nft.batches[-2] == [("add", "endpoint-slots-tcp-2", "0-65535", "10.244.4.1 . 8080")]
    assert "delete chain ip kube-proxy service-" in nft.inputs[-1]
    assert nft.batches[-1] == [("delete", "endpoint-slots-tcp-1", "0-65535", None)]
    p.on_service(None, service("d", "10.96.0.53"))
    p.on_endpoint_slice(endpoint_slice("d", [endpoint("10.244.5.1")]))
    p.sync_once()
    assert nft.batches[-1] == [("add", "endpoint-slots-tcp-1", "0-65535", "10.244.5.1 . 8080")]


def test_nftables_failed_full_sync_recreates_the_table() -> None:
    p, nft = _nft_proxier()
    p.on_service(None, service("a", "10.96.0.50"))
    nft.fail = True  # e.g. a table of another layout: `add map` with other flags fails
    assert not p.sync_once()
    assert p.sync_once()
    assert nft.inputs[-1].startswith("add table ip kube-proxy\ndelete table ip kube-proxy\nadd table ip kube-proxy")
    p.on_service(None, service("b", "10.96.0.51"))
    p.backend.needs_full_sync = True  # type: ignore[attr-defined]
    assert p.sync_once()
    assert "delete table" not in nft.inputs[-1]


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


def test_nftables_source_ranges_and_nodeport_addresses() -> None:
    nft = FakeNft()
    p = Proxier(_backend(nft), "n1", "10.244.0.0/16", min_sync_period=0, nodeport_addresses=("192.168.57.0/24",))
    p.on_node(node("n1", "192.168.56.10"))
    lb = service("lb", "10.96.0.80", type_="LoadBalancer", loadBalancerSourceRanges=["203.0.113.0/25 "],
                 ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    p.on_service(None, {**lb, "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}}})
    p.on_endpoint_slice(endpoint_slice("lb", [endpoint("10.244.1.2")]))
    assert p.sync_once()
    text = nft.inputs[-1]
    # checked before DNAT: other sources to the LB IP are dropped (the node is outside the range)
    assert "add rule ip kube-proxy filter-prerouting-pre-dnat jump firewall-check" in text
    fw = [ln for ln in text.splitlines() if ln.startswith("add rule ip kube-proxy firewall-")
          and "firewall-check" not in ln]
    assert len(fw) == 1 and fw[0].endswith("ip saddr != { 203.0.113.0/25 } drop")
    assert "add element ip kube-proxy firewall-ips { 198.51.100.7 . tcp . 80 : goto firewall-" in text
    assert "10.96.0.80 . tcp . 80 : goto firewall" not in text  # the cluster IP is not filtered
    # NodePorts only on local addresses inside --nodeport-addresses
    assert ("add rule ip kube-proxy services fib daddr type local ip daddr != 127.0.0.0/8 "
            "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports") in text
    assert "add element ip kube-proxy nodeport-ips { 192.168.57.0/24 }" in text
    assert "flush map ip kube-proxy firewall-ips" in text and "flush set ip kube-proxy nodeport-ips" in text
