"""Service/EndpointSlice parsing and the shared change trackers (practice 5)."""

from __future__ import annotations

from nodeagent.proxy.iptables import names
from nodeagent.proxy.model import Endpoint, ServicePortName, categorize, service_ports
from nodeagent.proxy.tracker import EndpointsChangeTracker, EndpointsMap, ServiceChangeTracker, ServiceMap
from tests.helpers.proxy_objects import endpoint, endpoint_slice, service

WEB = ServicePortName("default", "web", "http", "TCP")


def test_chain_names_match_upstream() -> None:
    # values seen in real clusters' iptables-save
    assert names.svc_chain("default/kubernetes:https", "TCP") == "KUBE-SVC-NPX46M4PTMTKRN6Y"
    assert names.svc_chain("kube-system/kube-dns:dns", "UDP") == "KUBE-SVC-TCOU7JCQXEZGVUNU"
    assert names.svc_chain("kube-system/kube-dns:dns-tcp", "TCP") == "KUBE-SVC-ERIFXISQEP7F7OF4"
    assert len(names.sep_chain("default/web:http", "tcp", "10.0.0.1:80")) <= 28


def test_service_ports_skip_headless_and_external_name() -> None:
    assert service_ports(service("h", "None")) == {}
    assert service_ports({**service("x", "10.96.0.9"), "spec": {"type": "ExternalName", "externalName": "a.b"}}) == {}
    ports = service_ports(service("web", "10.96.0.10", type_="NodePort", externalTrafficPolicy="Local",
                                  ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30001}]))
    sp = ports[WEB]
    assert (sp.cluster_ip, sp.port, sp.node_port, sp.external_policy_local) == ("10.96.0.10", 80, 30001, True)
    assert str(sp.name) == "default/web:http"


def test_service_tracker_drops_noop_and_reports_changes() -> None:
    tr, m = ServiceChangeTracker(), ServiceMap()
    svc = service("web", "10.96.0.10")
    assert tr.update(None, svc)
    assert m.apply(tr).changed == {"default/web"}
    # an update that changes nothing the proxy renders (labels, resourceVersion) is dropped
    bumped = {**svc, "metadata": {**svc["metadata"], "resourceVersion": "9", "labels": {"a": "b"}}}
    assert not tr.update(svc, bumped)
    assert m.apply(tr).changed == set()
    # a change and its undo cancel out before a sync
    changed = service("web", "10.96.0.10", ports=[{"name": "http", "port": 81, "protocol": "TCP"}])
    assert tr.update(svc, changed)
    assert not tr.update(changed, svc)
    assert not tr.pending()


def test_service_tracker_deleted_udp_ips() -> None:
    tr, m = ServiceChangeTracker(), ServiceMap()
    dns = service("dns", "10.96.0.10", ports=[{"name": "dns", "port": 53, "protocol": "UDP"}])
    tr.update(None, dns)
    m.apply(tr)
    tr.update(dns, None)
    res = m.apply(tr)
    assert res.changed == {"default/dns"} and res.deleted_udp_cluster_ips == {"10.96.0.10"}
    assert m.ports == {}


def test_endpoints_tracker_merges_slices_and_reports_deleted() -> None:
    tr, m = EndpointsChangeTracker("n1", clock=lambda: 100.0), EndpointsMap()
    tr.update(endpoint_slice("web", [endpoint("10.244.1.2", "n1")], name="web-a"))
    tr.update(endpoint_slice("web", [endpoint("10.244.2.2", "n2")], name="web-b"))
    res = m.apply(tr)
    assert res.changed == {"default/web"} and res.trigger_times == {"default/web": 100.0}
    eps = m.endpoints[WEB]
    assert [e.ip for e in eps] == ["10.244.1.2", "10.244.2.2"]
    assert [e.is_local for e in eps] == [True, False]
    # same content again: no-op
    assert not tr.update(endpoint_slice("web", [endpoint("10.244.1.2", "n1")], name="web-a"))
    tr.update(endpoint_slice("web", [], name="web-b"), removed=True)
    res = m.apply(tr)
    assert {(s, e.ip) for s, e in res.deleted_endpoints} == {(WEB, "10.244.2.2")}
    assert [e.ip for e in m.endpoints[WEB]] == ["10.244.1.2"]


def test_categorize_terminating_fallback_and_local() -> None:
    sp = service_ports(service("web", "10.96.0.10", internalTrafficPolicy="Local"))[WEB]
    ready = Endpoint("10.0.0.1", 80, node_name="n2")
    term = Endpoint("10.0.0.2", 80, ready=False, serving=True, terminating=True, node_name="n1", is_local=True)
    cat = categorize(sp, (ready, term))
    assert cat.cluster == [ready]  # ready ones win
    assert cat.local == [term]  # no ready local endpoint: the serving terminating one is the fallback
    gone = Endpoint("10.0.0.3", 80, ready=False, serving=False, terminating=True)
    assert categorize(sp, (gone,)).cluster == []
