"""IPVS against the kernel. This VM's kernel has no IP_VS (/proc/net/ip_vs is absent), so here the
IPVS logic is covered by tests/unit/proxy/test_nftables_ipvs.py through a fake netlink layer; this
test runs where the kernel has IP_VS."""

from __future__ import annotations

import pytest

from nodeagent.proxy.iptables.executor import LegacyExecutor
from nodeagent.proxy.ipvs import IpvsBackend, PyrouteIpvs, ipvs_available
from nodeagent.proxy.proxier import Proxier
from tests.helpers.proxy_objects import endpoint, endpoint_slice, node, service
from tests.helpers.proxy_topology import CLUSTER_CIDR, NODE_IP, Topology, connect_many

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not ipvs_available(), reason="kernel has no IP_VS (/proc/net/ip_vs absent); "
                       "IPVS logic is tested through the fake netlink layer in tests/unit/proxy"),
]


def test_ipvs_cluster_ip_reaches_every_backend(topo: Topology) -> None:
    def sync() -> bool:
        nl = PyrouteIpvs()
        try:
            p = Proxier(IpvsBackend(nl, LegacyExecutor()), "node-a", CLUSTER_CIDR, min_sync_period=0)
            p.on_node(node("node-a", NODE_IP))
            p.on_service(None, service("web", "10.96.0.50"))
            p.on_endpoint_slice(endpoint_slice("web", [endpoint(ip, "node-a") for ip in topo.pod_ips]))
            return p.sync_once()
        finally:
            nl.close()

    assert topo.in_node(sync)
    counts = connect_many(topo.client, "10.96.0.50", 80, 60)
    assert set(counts) == set(topo.pods), counts
