"""Real traffic through the proxy's rules, in namespaces (issue 6, "How it is checked").

The proxier is driven directly with objects (no apiserver) and syncs inside the node's namespace
through nodeagent.netns.run_in_netns; test_process.py covers apiserver -> `nodeagent proxy`.
"""

from __future__ import annotations

import pytest

from nodeagent.proxy.conntrack import ConntrackCleaner
from nodeagent.proxy.iptables.executor import make_executor
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


# test mode -> iptables back end (None: nftables mode)
IPTABLES_BACKEND = {"iptables": "legacy", "iptables-nft": "nft", "nftables": None}


def make_proxier(mode: str) -> Proxier:
    ipt = IPTABLES_BACKEND[mode]
    backend = IptablesBackend(make_executor(ipt)) if ipt else NftablesBackend()
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


def saved_rules(topo: Topology, mode: str) -> str:
    """The rules as the back end that wrote them shows them."""
    ipt = IPTABLES_BACKEND[mode]
    return topo_mod.iptables_save(topo.node, ipt) if ipt else topo_mod.nft_ruleset(topo.node)


def sync(topo: Topology, p: Proxier) -> None:
    assert topo.in_node(p.sync_once), "sync failed; see the log"


def feed(p: Proxier, svc: dict, eps: dict) -> None:  # type: ignore[type-arg]
    p.on_service(None, svc)
    p.on_endpoint_slice(eps)


def web_proxier(topo: Topology, mode: str, ips: list[str] | None = None) -> tuple[Proxier, dict, dict]:  # type: ignore[type-arg]
    """A proxier of `mode` that has synced the web Service (backends `ips`, default every pod)."""
    p = make_proxier(mode)
    svc, eps = web_objects(topo, ips)
    feed(p, svc, eps)
    sync(topo, p)
    return p, svc, eps


@pytest.mark.parametrize("mode", ["iptables", "iptables-nft", "nftables"])
def test_cluster_ip_spreads_uniformly_and_nodeport_and_hairpin(topo: Topology, mode: str) -> None:
    p, svc, eps = web_proxier(topo, mode)

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


@pytest.mark.parametrize("mode", ["iptables", "iptables-nft", "nftables"])
def test_removed_endpoint_gets_no_new_connections(topo: Topology, mode: str) -> None:
    p, svc, eps = web_proxier(topo, mode)
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


@pytest.mark.parametrize("mode", ["iptables", "iptables-nft", "nftables"])
def test_restarted_proxy_keeps_connections_and_rules(topo: Topology, mode: str) -> None:
    import socket

    from nodeagent.netns import run_in_netns

    p, svc, eps = web_proxier(topo, mode)
    before = saved_rules(topo, mode)

    conn = run_in_netns(topo.client, socket.create_connection, (CLUSTER_IP, 80), 3)
    try:
        f = conn.makefile("rw")
        first = f.readline().strip()
        assert first in topo.pods
        # a new proxy process: fresh state, a full sync of the same objects
        p2 = make_proxier(mode)
        feed(p2, svc, eps)
        sync(topo, p2)
        after = saved_rules(topo, mode)
        assert after == before
        f.write("still here\n")
        f.flush()
        assert f.readline().strip() == "still here"
    finally:
        conn.close()


def test_udp_conntrack_entries_cleared_when_endpoint_goes(topo: Topology) -> None:
    p, _, _ = web_proxier(topo, "iptables", topo.pod_ips[:1])
    # same source port each time: without cleanup the old conntrack entry keeps the dead backend
    assert udp_ask(topo.client, CLUSTER_IP, 53, src_port=40001) == topo.pods[0]
    _, moved = web_objects(topo, topo.pod_ips[1:2])
    p.on_endpoint_slice(moved)
    sync(topo, p)
    assert udp_ask(topo.client, CLUSTER_IP, 53, src_port=40001) == topo.pods[1]


def test_nft_backend_writes_only_nf_tables_and_cleanup_removes_both(topo: Topology) -> None:
    """The nft back end's rules live in nf_tables (iptables-nft-save), none in x_tables; a legacy
    leftover beside them is removed too by --cleanup's cleanup_all."""
    from nodeagent.proxy.command import cleanup_all

    p = make_proxier("iptables-nft")
    svc, eps = web_objects(topo)
    feed(p, svc, eps)
    # enough other Services that the full sync is split into several restores
    for i in range(100):
        p.on_service(None, service(f"filler-{i:03d}", f"10.96.2.{i + 1}"))
        p.on_endpoint_slice(endpoint_slice(f"filler-{i:03d}", [endpoint(f"10.245.{i}.{j + 1}", "node-b")
                                                               for j in range(10)]))
    sync(topo, p)
    assert len(p.backend.last_transactions) > 2  # type: ignore[attr-defined]
    assert set(connect_many(topo.client, CLUSTER_IP, 80, 30)) == set(topo.pods)
    nft_rules = topo_mod.iptables_save(topo.node, "nft")
    assert nft_rules.count("-A KUBE-SERVICES") == 103 and "DNAT" in nft_rules  # 100 + web's 2 + nodeports
    assert "KUBE-" not in topo_mod.iptables_save(topo.node, "legacy")
    # a partial sync (one endpoint fewer) goes through the same back end
    _, fewer = web_objects(topo, topo.pod_ips[:2])
    p.on_endpoint_slice(fewer)
    sync(topo, p)
    assert topo_mod.iptables_save(topo.node, "nft").count("DNAT --to-destination 10.244.1.") == 4  # 2 ports x 2
    legacy = make_proxier("iptables")
    feed(legacy, svc, eps)
    sync(topo, legacy)
    assert "-A KUBE-SERVICES" in topo_mod.iptables_save(topo.node, "legacy")
    assert topo.in_node(cleanup_all) == []
    for backend in ("legacy", "nft"):
        assert "KUBE-" not in topo_mod.iptables_save(topo.node, backend), backend
