"""Real traffic through the proxy's rules, in namespaces (issue 6, "How it is checked").

The proxier is driven directly with objects (no apiserver) and syncs inside the node's namespace
through nodeagent.netns.run_in_netns; test_process.py covers apiserver -> `nodeagent proxy`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from nodeagent.proxy.conntrack import ConntrackCleaner
from nodeagent.proxy.iptables.executor import LegacyExecutor
from nodeagent.proxy.iptables.proxier import IptablesBackend
from nodeagent.proxy.nftables import NftablesBackend
from nodeagent.proxy.proxier import Proxier
from tests.helpers import proxy_topology as topo_mod
from tests.helpers.proxy_objects import endpoint, endpoint_slice, node, service
from tests.helpers.proxy_topology import (
    CLUSTER_CIDR,
    NODE_IP,
    Topology,
    chi_square,
    connect_many,
    try_connect,
    udp_ask,
)

CLUSTER_IP = "10.96.0.50"
NODE_PORT = 30080
CHI2_CRIT_P001_DF2 = 13.816  # chi-square critical value, 2 degrees of freedom, p = 0.001

pytestmark = pytest.mark.root


def make_proxier(mode: str) -> Proxier:
    backend = IptablesBackend(LegacyExecutor()) if mode == "iptables" else NftablesBackend()
    p = Proxier(backend, "node-a", CLUSTER_CIDR, conntrack=ConntrackCleaner(), min_sync_period=0)
    p.on_node(node("node-a", NODE_IP))
    return p


def web_objects(topo: Topology, ips: list[str] | None = None) -> tuple[dict, dict]:  # type: ignore[type-arg]
    svc = service("web", CLUSTER_IP, type_="NodePort", ports=[
        {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": NODE_PORT},
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 8053}])
    eps = endpoint_slice("web", [endpoint(ip, "node-a") for ip in (ips or topo.pod_ips)], ports=[
        {"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 8053, "protocol": "UDP"}])
    return svc, eps


def sync(topo: Topology, p: Proxier) -> None:
    assert topo.in_node(p.sync_once), "sync failed; see the log"


@pytest.fixture
def topo(netns_factory: Callable[[str], str]) -> Iterator[Topology]:
    t = topo_mod.build(netns_factory, n_pods=3)
    try:
        yield t
    finally:
        t.stop()


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_cluster_ip_spreads_uniformly_and_nodeport_and_hairpin(topo: Topology, mode: str) -> None:
    p = make_proxier(mode)
    svc, eps = web_objects(topo)
    p.on_service(None, svc)
    p.on_endpoint_slice(eps)
    sync(topo, p)

    # from a client routed through the node: every backend, close to uniform
    counts = connect_many(topo.client, CLUSTER_IP, 80, 600)
    assert set(counts) == set(topo.pods), counts
    assert chi_square(counts, topo.pods) < CHI2_CRIT_P001_DF2, counts

    # NodePort from outside the node
    outside = connect_many(topo.client, NODE_IP, NODE_PORT, 60)
    assert set(outside) == set(topo.pods), outside

    # hairpin: a backend reaching its own Service gets itself sometimes (masqueraded, or the
    # reply would go straight back and the connection would never complete)
    own = connect_many(topo.pods[0], CLUSTER_IP, 80, 40)
    assert sum(own.values()) == 40 and own[topo.pods[0]] > 0, own


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_removed_endpoint_gets_no_new_connections(topo: Topology, mode: str) -> None:
    p = make_proxier(mode)
    svc, eps = web_objects(topo)
    p.on_service(None, svc)
    p.on_endpoint_slice(eps)
    sync(topo, p)
    assert set(connect_many(topo.client, CLUSTER_IP, 80, 60)) == set(topo.pods)
    _, fewer = web_objects(topo, topo.pod_ips[:2])
    p.on_endpoint_slice(fewer)
    sync(topo, p)
    counts = connect_many(topo.client, CLUSTER_IP, 80, 200)
    assert topo.pods[2] not in counts and set(counts) == set(topo.pods[:2]), counts
    # no endpoints at all: connections are rejected at once, not left hanging
    _, none = web_objects(topo, [])
    p.on_endpoint_slice({**none, "endpoints": []})
    sync(topo, p)
    assert try_connect(topo.client, CLUSTER_IP, 80) == "REFUSED"


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_restarted_proxy_keeps_connections_and_rules(topo: Topology, mode: str) -> None:
    import socket

    from nodeagent.netns import run_in_netns

    p = make_proxier(mode)
    svc, eps = web_objects(topo)
    p.on_service(None, svc)
    p.on_endpoint_slice(eps)
    sync(topo, p)
    before = topo_mod.iptables_save(topo.node) if mode == "iptables" else topo_mod.nft_ruleset(topo.node)

    conn = run_in_netns(topo.client, socket.create_connection, (CLUSTER_IP, 80), 3)
    try:
        f = conn.makefile("rw")
        first = f.readline().strip()
        assert first in topo.pods
        # a new proxy process: fresh state, a full sync of the same objects
        p2 = make_proxier(mode)
        p2.on_service(None, svc)
        p2.on_endpoint_slice(eps)
        sync(topo, p2)
        after = topo_mod.iptables_save(topo.node) if mode == "iptables" else topo_mod.nft_ruleset(topo.node)
        assert after == before
        f.write("still here\n")
        f.flush()
        assert f.readline().strip() == "still here"
    finally:
        conn.close()


def test_udp_conntrack_entries_cleared_when_endpoint_goes(topo: Topology) -> None:
    p = make_proxier("iptables")
    svc, eps = web_objects(topo, topo.pod_ips[:1])
    p.on_service(None, svc)
    p.on_endpoint_slice(eps)
    sync(topo, p)
    # same source port each time: without cleanup the old conntrack entry keeps the dead backend
    assert udp_ask(topo.client, CLUSTER_IP, 53, src_port=40001) == topo.pods[0]
    _, moved = web_objects(topo, topo.pod_ips[1:2])
    p.on_endpoint_slice(moved)
    sync(topo, p)
    assert udp_ask(topo.client, CLUSTER_IP, 53, src_port=40001) == topo.pods[1]
