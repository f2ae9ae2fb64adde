"""The ClusterIndex fed by informer handlers, without sockets."""

from __future__ import annotations

from nodeagent.dns.index import ClusterIndex
from tests.helpers.dns_client import endpoint_slice, ep, service


def test_slice_moving_to_another_service_leaves_the_first() -> None:
    idx = ClusterIndex()
    old = endpoint_slice("a", endpoints=[ep("10.244.0.1")], name="s1")
    idx.slice_added(old)
    new = endpoint_slice("b", endpoints=[ep("10.244.0.1")], name="s1")
    gen = idx.generation
    idx.slice_updated(old, new)
    assert idx.generation > gen
    assert idx.endpoints("default", "a") == []
    assert [e.address for e in idx.endpoints("default", "b")] == ["10.244.0.1"]
    idx.slice_deleted(new)
    assert idx.endpoints("default", "b") == []


def test_bad_addresses_and_unowned_slices_are_ignored() -> None:
    idx = ClusterIndex()
    idx.service_added(service("web", cluster_ip="not-an-ip"))
    eps = endpoint_slice("web", endpoints=[ep("10.244.0.1"), ep("999.1.1.1")])
    idx.slice_added(eps)
    unowned = endpoint_slice("x", endpoints=[ep("10.244.0.9")])
    del unowned["metadata"]["labels"]
    idx.slice_added(unowned)
    assert [e.address for e in idx.endpoints("default", "web")] == ["10.244.0.1"]
    assert idx.reverse("1.0.244.10.in-addr.arpa", "cluster.local") == []  # web is not headless


def test_namespaces_known_while_a_service_lives_there() -> None:
    idx = ClusterIndex()
    svc = service("web", ns="shop")
    idx.service_added(svc)
    idx.service_updated(svc, svc)
    assert idx.has_namespace("shop")
    idx.service_deleted(svc)
    assert not idx.has_namespace("shop")
