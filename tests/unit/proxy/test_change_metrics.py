"""Upstream's change metrics: Service/EndpointSlice changes seen and pending (fed by the trackers),
the last-queued timestamp, and the service ports with a Local policy but no local endpoint."""

from __future__ import annotations

import copy
from typing import Any

from prometheus_client import generate_latest

from nodeagent.proxy.proxier import Proxier
from nodeagent.proxy.tracker import ServiceChangeTracker
from tests.helpers.proxy_fakes import iptables_proxier
from tests.helpers.proxy_objects import endpoint, endpoint_slice, node, service


def _value(p: Proxier, name: str, **labels: str) -> float:
    value = p.metrics.registry.get_sample_value(name, labels)
    assert value is not None, f"{name}{labels} is not exported"
    return value


def _pending(p: Proxier) -> tuple[float, float]:
    return (_value(p, "kubeproxy_sync_proxy_rules_service_changes_pending"),
            _value(p, "kubeproxy_sync_proxy_rules_endpoint_changes_pending"))


def _totals(p: Proxier) -> tuple[float, float]:
    return (_value(p, "kubeproxy_sync_proxy_rules_service_changes_total"),
            _value(p, "kubeproxy_sync_proxy_rules_endpoint_changes_total"))


def _no_local(p: Proxier) -> tuple[float, float]:
    return (_value(p, "kubeproxy_sync_proxy_rules_no_local_endpoints_total", traffic_policy="internal"),
            _value(p, "kubeproxy_sync_proxy_rules_no_local_endpoints_total", traffic_policy="external"))


def test_exposition_names_and_types() -> None:
    p, _, _ = iptables_proxier()
    text = generate_latest(p.metrics.registry).decode()
    for name, kind in [("kubeproxy_sync_proxy_rules_endpoint_changes_pending", "gauge"),
                       ("kubeproxy_sync_proxy_rules_endpoint_changes_total", "counter"),
                       ("kubeproxy_sync_proxy_rules_service_changes_pending", "gauge"),
                       ("kubeproxy_sync_proxy_rules_service_changes_total", "counter"),
                       ("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds", "gauge"),
                       # a gauge despite the _total, as upstream
                       ("kubeproxy_sync_proxy_rules_no_local_endpoints_total", "gauge"),
                       # the names that were there before stay
                       ("kubeproxy_sync_proxy_rules_last_timestamp_seconds", "gauge"),
                       ("kubeproxy_sync_proxy_rules_duration_seconds", "histogram")]:
        assert f"# TYPE {name} {kind}\n" in text
    assert 'kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy="internal"} 0.0' in text


def test_service_changes_seen_and_pending() -> None:
    p, _, _ = iptables_proxier()
    web, db = service("web", "10.96.0.50"), service("db", "10.96.0.51")
    p.on_service(None, web)
    p.on_service(None, db)
    assert _pending(p)[0] == 2 and _totals(p)[0] == 2
    assert p.sync_once()
    assert _pending(p)[0] == 0  # applied
    # a status-only update is a no-op for the proxy: counted as seen, never pending (as upstream)
    touched = copy.deepcopy(web)
    touched["metadata"]["resourceVersion"] = "7"
    p.on_service(web, touched)
    assert _totals(p)[0] == 3 and _pending(p)[0] == 0
    # a change that is undone before the sync leaves nothing pending
    moved = service("web", "10.96.0.50", ports=[{"name": "http", "port": 81, "protocol": "TCP"}])
    p.on_service(touched, moved)
    assert _pending(p)[0] == 1
    p.on_service(moved, touched)
    assert _pending(p)[0] == 0 and _totals(p)[0] == 5


def test_endpoint_changes_seen_and_pending() -> None:
    p, _, _ = iptables_proxier()
    p.on_endpoint_slice(endpoint_slice("web", [endpoint("10.244.1.2", "n1")]))
    # a second slice of the same Service: still one Service waiting (our tracker merges per Service)
    p.on_endpoint_slice(endpoint_slice("web", [endpoint("10.244.1.3", "n1")], name="web-def34"))
    assert _pending(p)[1] == 1 and _totals(p)[1] == 2
    v6 = {**endpoint_slice("web", [endpoint("fd00::2", "n1")], name="web-v6"), "addressType": "IPv6"}
    p.on_endpoint_slice(v6)
    assert _totals(p)[1] == 2  # another family's slice is no change for an IPv4 proxy (upstream: same)
    assert p.sync_once()
    assert _pending(p)[1] == 0
    p.on_endpoint_slice(endpoint_slice("web", [endpoint("10.244.1.3", "n1")], name="web-def34"), removed=True)
    assert _pending(p)[1] == 1 and _totals(p)[1] == 3


def test_last_queued_follows_changes() -> None:
    clock = [1000.0]
    p = Proxier(iptables_proxier()[0].backend, "n1", wall_clock=lambda: clock[0], min_sync_period=0)
    web = service("web", "10.96.0.50")
    p.on_service(None, web)
    assert _value(p, "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds") == 1000.0
    assert p.sync_once()
    clock[0] = 1010.0
    p.on_service(web, copy.deepcopy(web))  # nothing the proxy renders changed: no sync queued
    assert _value(p, "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds") == 1000.0
    clock[0] = 1020.0
    p.on_endpoint_slice(endpoint_slice("web", [endpoint("10.244.1.2", "n1")]))
    assert _value(p, "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds") == 1020.0


def _two_ports(name: str, cluster_ip: str, type_: str = "ClusterIP", **spec: Any) -> dict[str, Any]:
    ports = [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
             {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}]
    return service(name, cluster_ip, ports=ports, type_=type_, **spec)


def _slice(name: str, eps: list[dict[str, Any]]) -> dict[str, Any]:
    return endpoint_slice(name, eps, ports=[{"name": "http", "port": 8080, "protocol": "TCP"},
                                            {"name": "dns", "port": 5353, "protocol": "UDP"}])


def test_no_local_endpoints_counts_ports_per_policy() -> None:
    p, _, _ = iptables_proxier("n1")
    # internalTrafficPolicy Local, endpoints only on another node: both ports count as internal
    p.on_service(None, _two_ports("itp", "10.96.0.60", internalTrafficPolicy="Local"))
    p.on_endpoint_slice(_slice("itp", [endpoint("10.244.2.2", "n2")]))
    # externalTrafficPolicy Local NodePort, same: both count as external
    p.on_service(None, _two_ports("etp", "10.96.0.61", type_="NodePort", externalTrafficPolicy="Local"))
    p.on_endpoint_slice(_slice("etp", [endpoint("10.244.2.3", "n2")]))
    # Local policy but no endpoints at all: rejected, not counted (as upstream)
    p.on_service(None, service("empty", "10.96.0.62", internalTrafficPolicy="Local"))
    # Cluster policies with remote endpoints: nothing to count
    p.on_service(None, service("plain", "10.96.0.63"))
    p.on_endpoint_slice(endpoint_slice("plain", [endpoint("10.244.2.4", "n2")]))
    assert p.sync_once()
    assert _no_local(p) == (2, 2)

    # a local endpoint for itp: it stops counting; a partial sync recounts only what changed
    p.on_endpoint_slice(_slice("itp", [endpoint("10.244.2.2", "n2"), endpoint("10.244.1.9", "n1")]))
    assert p.sync_once()
    assert _no_local(p) == (0, 2)
    # only a terminating-but-serving local endpoint: the fallback serves, still not counted
    p.on_endpoint_slice(_slice("etp", [endpoint("10.244.2.3", "n2"),
                                       endpoint("10.244.1.8", "n1", ready=False, serving=True, terminating=True)]))
    assert p.sync_once()
    assert _no_local(p) == (0, 0)
    # the local endpoint goes: counted again; then the Service goes: not any more
    p.on_endpoint_slice(_slice("etp", [endpoint("10.244.2.3", "n2")]))
    assert p.sync_once()
    assert _no_local(p) == (0, 2)
    p.on_service(_two_ports("etp", "10.96.0.61", type_="NodePort", externalTrafficPolicy="Local"), None)
    assert p.sync_once()
    assert _no_local(p) == (0, 0)


def test_no_local_endpoints_full_sync_recount_matches() -> None:
    p, _, _ = iptables_proxier("n1")
    p.on_service(None, _two_ports("itp", "10.96.0.60", internalTrafficPolicy="Local"))
    p.on_endpoint_slice(_slice("itp", [endpoint("10.244.2.2", "n2")]))
    assert p.sync_once()
    assert _no_local(p) == (2, 0)
    # a Node change forces a full sync: everything is recounted, to the same totals
    p.on_node(node("n1", "192.168.56.99"))
    assert p.sync_once()
    assert _no_local(p) == (2, 0)


def test_failed_sync_keeps_the_previous_count_and_the_next_one_catches_up() -> None:
    p, _, _ = iptables_proxier("n1")
    assert p.sync_once()
    p.on_service(None, service("itp", "10.96.0.60", internalTrafficPolicy="Local"))
    p.on_endpoint_slice(endpoint_slice("itp", [endpoint("10.244.2.2", "n2")]))
    backend: Any = p.backend
    working = backend.sync

    def broken(*a: Any, **kw: Any) -> None:
        raise OSError("iptables-restore: exit 1")

    backend.sync = broken
    assert not p.sync_once()
    assert _no_local(p) == (0, 0)  # it describes what is programmed: nothing new yet
    backend.sync = working
    assert p.sync_once()  # a full sync after the failure, which recounts everything
    assert _no_local(p) == (1, 0)


def test_tracker_without_reporter_still_tracks() -> None:
    t = ServiceChangeTracker()
    assert t.update(None, service("web", "10.96.0.50")) is True
    assert list(t.take()) == ["default/web"]
