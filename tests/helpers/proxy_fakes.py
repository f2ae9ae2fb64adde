"""Proxier set-ups over the fake executors, for unit tests."""

from __future__ import annotations

from nodeagent.proxy.iptables.fake import FakeIptables, Tracer
from nodeagent.proxy.iptables.proxier import IptablesBackend
from nodeagent.proxy.proxier import Proxier
from tests.helpers.proxy_objects import node

NODE_IP = "192.168.56.10"
CLUSTER_CIDR = "10.244.0.0/16"


def iptables_proxier(node_name: str = "n1") -> tuple[Proxier, FakeIptables, Tracer]:
    ipt = FakeIptables()
    p = Proxier(IptablesBackend(ipt), node_name, CLUSTER_CIDR, min_sync_period=0, sync_period=30)
    p.on_node(node(node_name, NODE_IP))
    return p, ipt, Tracer(ipt, (NODE_IP,))
