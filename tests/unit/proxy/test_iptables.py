"""The iptables back end: rendered text (upstream layout), partial syncs, failure handling, and packets
traced through the validating fake (practices 4, 6, 8)."""

from __future__ import annotations

import pytest

from nodeagent.proxy.iptables import names
from nodeagent.proxy.iptables.executor import IptablesError
from nodeagent.proxy.iptables.fake import FakeIptables, Outcome, Packet, Tracer
from tests.helpers.proxy_fakes import NODE_IP, iptables_proxier
from tests.helpers.proxy_objects import endpoint, endpoint_slice, service

SVC = names.svc_chain("default/web:http", "TCP")


def _web(p, n: int = 3, **spec) -> None:  # type: ignore[no-untyped-def]
    p.on_service(None, service("web", "10.96.0.50", **spec))
    p.on_endpoint_slice(endpoint_slice("web", [endpoint(f"10.244.{i}.2", f"n{i}") for i in range(1, n + 1)]))


def _dnats(outcomes: set[Outcome]) -> set[str | None]:
    return {o.dnat for o in outcomes}


def test_cluster_ip_chain_layout_and_probabilities() -> None:
    p, ipt, _ = iptables_proxier()
    _web(p, 4)
    assert p.sync_once()
    assert ipt.rules("nat", "PREROUTING") == ["-m comment --comment 'kubernetes service portals' -j KUBE-SERVICES"]
    svc_rules = ipt.rules("nat", SVC)
    assert svc_rules[0].endswith("-d 10.96.0.50 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ")
    probs = [r.split("--probability ")[1].split()[0] for r in svc_rules[1:] if "--probability" in r]
    assert probs == ["0.2500000000", "0.3333333333", "0.5000000000"]  # 1/(n-i), the last rule has none
    assert "statistic" not in svc_rules[-1]
    sep = names.sep_chain("default/web:http", "tcp", "10.244.1.2:8080")
    assert ipt.rules("nat", sep) == [
        "-m comment --comment default/web:http -s 10.244.1.2 -j KUBE-MARK-MASQ",
        "-m comment --comment default/web:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.2:8080",
    ]
    assert "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000" in p.backend.last_restore  # type: ignore[attr-defined]


def test_trace_cluster_ip_masquerade_and_hairpin() -> None:
    p, _, tracer = iptables_proxier()
    _web(p, 3)
    p.sync_once()
    all_eps = {"10.244.1.2:8080", "10.244.2.2:8080", "10.244.3.2:8080"}
    from_pod = tracer.trace(Packet("10.244.9.9", "10.96.0.50", "tcp", 80))
    assert _dnats(from_pod) == all_eps and not any(o.masquerade for o in from_pod)
    off_cluster = tracer.trace(Packet("192.168.56.2", "10.96.0.50", "tcp", 80))
    assert _dnats(off_cluster) == all_eps and all(o.masquerade for o in off_cluster)
    hairpin = tracer.trace(Packet("10.244.1.2", "10.96.0.50", "tcp", 80))
    assert {o.dnat: o.masquerade for o in hairpin} == {
        "10.244.1.2:8080": True, "10.244.2.2:8080": False, "10.244.3.2:8080": False}
    assert tracer.trace(Packet("10.244.9.9", "10.96.0.50", "tcp", 81)) == {Outcome("ACCEPT", None, False)}


def test_nodeport_and_no_endpoints_reject() -> None:
    p, _, tracer = iptables_proxier()
    p.on_service(None, service("np", "10.96.0.60", type_="NodePort",
                               ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]))
    p.sync_once()
    # no endpoints: the cluster IP and the node port are rejected in filter
    assert tracer.trace(Packet("10.244.9.9", "10.96.0.60", "tcp", 80)) == {Outcome("REJECT", None, False)}
    assert tracer.trace(Packet("192.168.56.2", NODE_IP, "tcp", 30080)) == {Outcome("REJECT", None, False)}
    p.on_endpoint_slice(endpoint_slice("np", [endpoint("10.244.2.2", "n2")]))
    p.sync_once()
    assert tracer.trace(Packet("192.168.56.2", NODE_IP, "tcp", 30080)) == {Outcome("ACCEPT", "10.244.2.2:8080", True)}


def test_external_traffic_policy_local() -> None:
    p, _, tracer = iptables_proxier("n1")
    _web(p, 3, type_="NodePort", externalTrafficPolicy="Local",
         ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    p.sync_once()
    ext = tracer.trace(Packet("192.168.56.2", NODE_IP, "tcp", 30080))
    assert ext == {Outcome("ACCEPT", "10.244.1.2:8080", False)}  # only the local endpoint, client IP kept
    pod = tracer.trace(Packet("10.244.5.5", NODE_IP, "tcp", 30080))
    assert _dnats(pod) == {"10.244.1.2:8080", "10.244.2.2:8080", "10.244.3.2:8080"}  # pods short-circuit


def test_internal_traffic_policy_local_without_local_endpoints_drops() -> None:
    p, ipt, tracer = iptables_proxier("n9")
    _web(p, 2, internalTrafficPolicy="Local")
    p.sync_once()
    assert tracer.trace(Packet("10.244.9.9", "10.96.0.50", "tcp", 80)) == {Outcome("DROP", None, False)}
    assert any("has no local endpoints" in r for r in ipt.rules("filter", "KUBE-SERVICES"))


def test_session_affinity_rules() -> None:
    p, ipt, _ = iptables_proxier()
    _web(p, 2, sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 600}})
    p.sync_once()
    sep = names.sep_chain("default/web:http", "tcp", "10.244.1.2:8080")
    assert any(f"-m recent --name {sep} --rcheck --seconds 600 --reap -j {sep}" in r for r in ipt.rules("nat", SVC))
    assert any(f"-m recent --name {sep} --set" in r for r in ipt.rules("nat", sep))


def test_terminating_endpoints_are_a_fallback() -> None:
    p, _, tracer = iptables_proxier()
    p.on_service(None, service("web", "10.96.0.50"))
    p.on_endpoint_slice(endpoint_slice("web", [
        endpoint("10.244.1.2", ready=False, serving=True, terminating=True),
        endpoint("10.244.1.3", ready=False, serving=False, terminating=True)]))
    p.sync_once()
    assert _dnats(tracer.trace(Packet("10.244.9.9", "10.96.0.50", "tcp", 80))) == {"10.244.1.2:8080"}


def test_partial_sync_writes_only_changed_chains_and_deletes_stale() -> None:
    p, ipt, tracer = iptables_proxier()
    _web(p, 3)
    p.on_service(None, service("db", "10.96.0.70"))
    p.on_endpoint_slice(endpoint_slice("db", [endpoint("10.244.7.2")]))
    assert p.sync_once()
    db_chain = names.svc_chain("default/db:http", "TCP")
    # remove one web endpoint: the next restore declares web's chains only, deletes the stale SEP
    p.on_endpoint_slice(endpoint_slice("web", [endpoint("10.244.1.2", "n1"), endpoint("10.244.2.2", "n2")]))
    assert p.sync_once()
    text = ipt.restores[-1]
    gone = names.sep_chain("default/web:http", "tcp", "10.244.3.2:8080")
    assert f":{SVC} - [0:0]" in text and f":{db_chain} - [0:0]" not in text
    assert f"-X {gone}" in text and gone not in ipt.chains("nat")
    assert db_chain in ipt.chains("nat")  # untouched, still there
    assert _dnats(tracer.trace(Packet("10.244.9.9", "10.96.0.50", "tcp", 80))) == {"10.244.1.2:8080",
                                                                                   "10.244.2.2:8080"}
    # delete the service: all its chains go
    p.on_service(service("web", "10.96.0.50"), None)
    p.sync_once()
    assert not {c for c in ipt.chains("nat") if c.endswith(SVC[9:])}
    assert not any("10.244.1.2" in r for c in ipt.chains("nat") for r in ipt.rules("nat", c))


def test_failed_sync_forces_full_sync() -> None:
    p, ipt, _ = iptables_proxier()
    _web(p, 2)
    p.on_service(None, service("db", "10.96.0.70"))
    p.on_endpoint_slice(endpoint_slice("db", [endpoint("10.244.7.2")]))
    p.sync_once()
    ipt.fail_next_restore = True
    p.on_endpoint_slice(endpoint_slice("web", [endpoint("10.244.1.2", "n1")]))
    assert not p.sync_once()
    assert p.metrics.sync_failures._value.get() == 1  # type: ignore[attr-defined]
    assert p.sync_once()
    db_chain = names.svc_chain("default/db:http", "TCP")
    assert f":{db_chain} - [0:0]" in ipt.restores[-1]  # everything re-sent
    assert len(ipt.rules("nat", "PREROUTING")) == 1  # the jumps are not duplicated by a second full sync
    assert len(ipt.rules("filter", "FORWARD")) == 4  # firewall, forward, services, external services


def test_canary_gone_forces_full_sync() -> None:
    p, ipt, _ = iptables_proxier()
    _web(p, 2)
    p.sync_once()
    # someone flushes and deletes our chains (iptables -t nat -F; -X)
    for table in ("nat", "filter", "mangle"):
        for c in list(ipt.tables[table]):
            ipt.tables[table][c] = []
        for c in [c for c in ipt.tables[table] if c.startswith("KUBE-")]:
            del ipt.tables[table][c]
    assert p.sync_once()  # a periodic sync with no changes
    assert ipt.rules("nat", "PREROUTING") and SVC in ipt.chains("nat")
    assert "KUBE-PROXY-CANARY" in ipt.chains("mangle")


def test_fake_rejects_jump_to_missing_chain_and_deleting_referenced() -> None:
    ipt = FakeIptables()
    with pytest.raises(IptablesError, match="jump to missing chain KUBE-NOPE"):
        ipt.restore("*nat\n:KUBE-A - [0:0]\n-A KUBE-A -j KUBE-NOPE\nCOMMIT\n")
    assert "KUBE-A" not in ipt.chains("nat")  # nothing committed
    ipt.restore("*nat\n:KUBE-A - [0:0]\n:KUBE-B - [0:0]\n-A KUBE-A -j KUBE-B\nCOMMIT\n")
    with pytest.raises(IptablesError, match="still referenced"):
        ipt.restore("*nat\n-X KUBE-B\nCOMMIT\n")


def test_restart_renders_identical_rules() -> None:
    p1, ipt1, _ = iptables_proxier()
    p2, ipt2, _ = iptables_proxier()
    for p in (p1, p2):
        _web(p, 3, type_="NodePort", ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
        p.sync_once()
    assert ipt1.restores[-1] == ipt2.restores[-1]
    assert ipt1.save("nat") == ipt2.save("nat")


def test_cleanup_removes_everything() -> None:
    p, ipt, _ = iptables_proxier()
    _web(p, 2)
    p.sync_once()
    p.backend.cleanup()
    for table in ("nat", "filter", "mangle"):
        assert not [c for c in ipt.chains(table) if c.startswith("KUBE-")]
        assert not any("KUBE-" in r for c in ipt.chains(table) for r in ipt.rules(table, c))


def test_large_cluster_drops_endpoint_comments() -> None:
    p, ipt, tracer = iptables_proxier()
    for i in range(101):  # 1010 endpoints: above upstream's largeClusterEndpointsThreshold (1000)
        p.on_service(None, service(f"s{i}", f"10.96.1.{i + 1}"))
        p.on_endpoint_slice(endpoint_slice(f"s{i}", [endpoint(f"10.244.{i}.{j + 1}") for j in range(10)]))
    p.sync_once()
    sep = names.sep_chain("default/s0:http", "tcp", "10.244.0.1:8080")
    assert ipt.rules("nat", sep) == ["-s 10.244.0.1 -j KUBE-MARK-MASQ",
                                     "-m tcp -p tcp -j DNAT --to-destination 10.244.0.1:8080"]
    assert len(_dnats(tracer.trace(Packet("10.244.200.1", "10.96.1.1", "tcp", 80)))) == 10
    # back under the threshold: every rule is re-rendered with its comment
    for i in range(1, 101):
        p.on_service(service(f"s{i}", f"10.96.1.{i + 1}"), None)
        p.on_endpoint_slice(endpoint_slice(f"s{i}", []), removed=True)
    p.sync_once()
    assert ipt.rules("nat", sep)[0] == "-m comment --comment default/s0:http -s 10.244.0.1 -j KUBE-MARK-MASQ"


def test_partial_sync_leaves_shared_chains_alone_unless_their_lines_change() -> None:
    """Endpoints changing rewrite only the Service's own nat chains (no KUBE-SERVICES flush: with
    the nft back end that would be a transaction as large as the cluster); a changed cluster IP
    rewrites the shared chains too."""
    p, ipt, tracer = iptables_proxier()
    _web(p, 3)
    p.on_service(None, service("db", "10.96.0.70"))
    p.on_endpoint_slice(endpoint_slice("db", [endpoint("10.244.7.2")]))
    assert p.sync_once()
    p.on_endpoint_slice(endpoint_slice("web", [endpoint("10.244.1.2", "n1"), endpoint("10.244.2.2", "n2")]))
    assert p.sync_once()
    text = ipt.restores[-1]
    gone = names.sep_chain("default/web:http", "tcp", "10.244.3.2:8080")
    assert text.startswith("*nat\n") and "*filter" not in text and "KUBE-SERVICES" not in text
    assert f":{SVC} - [0:0]" in text and f"-X {gone}" in text and gone not in ipt.chains("nat")
    assert _dnats(tracer.trace(Packet("10.244.9.9", "10.96.0.50", "tcp", 80))) == {"10.244.1.2:8080",
                                                                                   "10.244.2.2:8080"}
    assert _dnats(tracer.trace(Packet("10.244.9.9", "10.96.0.70", "tcp", 80))) == {"10.244.7.2:8080"}
    p.on_service(service("db", "10.96.0.70"), service("db", "10.96.0.71"))
    assert p.sync_once()
    assert "-A KUBE-SERVICES" in ipt.restores[-1] and "10.96.0.71" in ipt.restores[-1]
    assert _dnats(tracer.trace(Packet("10.244.9.9", "10.96.0.71", "tcp", 80))) == {"10.244.7.2:8080"}
    assert _dnats(tracer.trace(Packet("10.244.9.9", "10.96.0.70", "tcp", 80))) == {None}  # old IP: no DNAT


def test_split_full_sync_writes_service_chains_first_then_shared_chains_at_once() -> None:
    """The nft back end's full sync (several restores, see IptablesBackend.split_full_sync):
    the middle restores hold whole Services' chains only; KUBE-SERVICES is flushed and rewritten
    in the last one, so it never points at a missing or half-written chain."""
    from nodeagent.proxy.iptables.proxier import IptablesBackend
    from nodeagent.proxy.proxier import Proxier

    ipt = FakeIptables()
    backend = IptablesBackend(ipt, split_full_sync=True)
    p = Proxier(backend, "n1", "10.244.0.0/16", min_sync_period=0)
    for i in range(120):
        p.on_service(None, service(f"s{i:03d}", f"10.96.1.{i + 1}"))
        p.on_endpoint_slice(endpoint_slice(f"s{i:03d}", [endpoint(f"10.244.{i}.{j + 1}", "n2") for j in range(10)]))
    assert p.sync_once()
    texts = backend.last_transactions
    assert len(texts) > 2 and ipt.restores[-len(texts):] == texts
    for text in texts[:-1]:
        assert text.startswith("*nat\n") and "KUBE-SERVICES" not in text and "*filter" not in text
    assert ":KUBE-SERVICES - [0:0]" in texts[-1] and texts[-1].count("-A KUBE-SERVICES") == 121
    tracer = Tracer(ipt, (NODE_IP,))
    assert len(_dnats(tracer.trace(Packet("10.244.250.9", "10.96.1.77", "tcp", 80)))) == 10
    # a partial sync is one restore, as ever
    p.on_endpoint_slice(endpoint_slice("s005", [endpoint("10.244.250.1", "n2")]))
    n_restores = len(ipt.restores)
    assert p.sync_once() and len(ipt.restores) == n_restores + 1
    assert _dnats(tracer.trace(Packet("10.244.250.9", "10.96.1.6", "tcp", 80))) == {"10.244.250.1:8080"}


def test_cleanup_in_pieces_for_the_nft_backend_removes_everything() -> None:
    from nodeagent.proxy.iptables.proxier import IptablesBackend, cleanup_iptables
    from nodeagent.proxy.proxier import Proxier

    ipt = FakeIptables()
    setattr(ipt, "split_full_sync", True)  # as NftExecutor  # noqa: B010
    p = Proxier(IptablesBackend(ipt), "n1", "10.244.0.0/16", min_sync_period=0)
    _web(p, 3)
    assert p.sync_once()
    before = len(ipt.restores)
    cleanup_iptables(ipt)
    assert len(ipt.restores) - before >= 3  # jumps, flushes, deletes: separate restores
    for table in ("nat", "filter"):
        assert not [c for c in ipt.chains(table) if c.startswith("KUBE-")], table
    assert not [r for r in ipt.rules("nat", "PREROUTING") if "KUBE-" in r]


def test_health_check_node_port_is_accepted_before_the_hosts_own_input_rules() -> None:
    p, ipt, tracer = iptables_proxier()
    lb = service("lb", "10.96.0.80", type_="LoadBalancer", externalTrafficPolicy="Local",
                 healthCheckNodePort=32123, ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    p.on_service(None, lb)
    p.on_endpoint_slice(endpoint_slice("lb", [endpoint("10.244.1.2", "n1")]))
    assert p.sync_once()
    assert ipt.rules("filter", names.KUBE_NODEPORTS) == [
        "-m comment --comment 'default/lb:http health check node port' -m tcp -p tcp --dport 32123 -j ACCEPT"]
    # a locked-down node: everything else it receives is dropped by its own rule after ours
    ipt.ensure_rule("filter", "INPUT", {"target": "DROP"}, position="append")
    assert tracer.trace(Packet("192.168.56.2", NODE_IP, "tcp", 32123)) == {Outcome("ACCEPT", None, False)}
    assert tracer.trace(Packet("192.168.56.2", NODE_IP, "tcp", 22)) == {Outcome("DROP", None, False)}
    # the Service goes: so does its ACCEPT
    p.on_service(lb, None)
    assert p.sync_once()
    assert ipt.rules("filter", names.KUBE_NODEPORTS) == []
