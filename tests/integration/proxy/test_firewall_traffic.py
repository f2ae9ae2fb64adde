"""loadBalancerSourceRanges and --nodeport-addresses with real traffic, in namespaces, for both
iptables back ends (legacy and nft) and nftables mode.

The topology of proxy_topology.build plus a second client on a second node interface:

    client A (192.168.56.2) --vc--  node (192.168.56.10, 192.168.57.10) --br0-- pods
    client B (192.168.57.2) --vc2-/

Both clients route everything through the node, so a packet to the load-balancer IP arrives at
the node still addressed to it, as a VIP-preserving load balancer delivers it. The node also has
the LB IP as a local address (as VIP-style load balancers often arrange) with a process of its own
listening there: a packet that the proxy neither DNATs nor drops would get that process's answer,
so a time-out can only come from the firewall's DROP.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from nodeagent.netns import run_in_netns
from nodeagent.proxy.iptables import names
from nodeagent.proxy.iptables.executor import make_executor
from nodeagent.proxy.iptables.proxier import IptablesBackend, cleanup_iptables
from nodeagent.proxy.nftables import NftablesBackend, cleanup_nftables
from nodeagent.proxy.proxier import Proxier
from tests.helpers import proxy_topology as topo_mod
from tests.helpers.proxy_objects import endpoint, endpoint_slice, node, service
from tests.helpers.proxy_topology import CLUSTER_CIDR, NODE_IP, Topology, connect_many, ip, try_connect

pytestmark = pytest.mark.root

NODE_IP2 = "192.168.57.10"
CLIENT_B_IP = "192.168.57.2"
CLUSTER_IP = "10.96.0.80"
LB_IP = "198.51.100.7"
NODE_PORT = 30080
RANGE_A = "192.168.56.0/24"  # holds client A, not client B
FW = names.fw_chain("default/lb:http", "tcp")
BACKENDS = ["legacy", "nft", "nftables"]  # the iptables back ends, and nftables mode


def lb_service(ranges: list[str] | None) -> dict:  # type: ignore[type-arg]
    spec = {"loadBalancerSourceRanges": ranges} if ranges is not None else {}
    svc = service("lb", CLUSTER_IP, type_="LoadBalancer", ports=[
        {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": NODE_PORT}], **spec)
    return {**svc, "status": {"loadBalancer": {"ingress": [{"ip": LB_IP}]}}}


def make_proxier(backend: str, topo: Topology, nodeport_addresses: tuple[str, ...] = ()) -> Proxier:
    be = NftablesBackend() if backend == "nftables" else IptablesBackend(make_executor(backend))
    p = Proxier(be, "node-a", CLUSTER_CIDR, min_sync_period=0, nodeport_addresses=nodeport_addresses)
    p.on_node(node("node-a", NODE_IP))
    p.on_endpoint_slice(endpoint_slice("lb", [endpoint(a, "node-a") for a in topo.pod_ips]))
    return p


def sync(topo: Topology, p: Proxier) -> None:
    assert topo.in_node(p.sync_once), "sync failed; see the log"


def firewall_rules(topo: Topology, backend: str) -> str:
    """The rules that drop other sources, as the back end shows them ("" when there are none)."""
    if backend == "nftables":
        text = topo_mod.nft_ruleset(topo.node)
        return "\n".join(ln.strip() for ln in text.splitlines()
                         if "chain firewall-" in ln and "firewall-check" not in ln or "saddr !=" in ln and "drop" in ln)
    saved = topo_mod.iptables_save(topo.node, backend)
    return "\n".join(ln for ln in saved.splitlines() if FW in ln or "-A KUBE-PROXY-FIREWALL" in ln)


def reaches_backends(topo: Topology, ns: str, ip_: str, port: int, count: int = 12) -> bool:
    answers = connect_many(ns, ip_, port, count)
    return sum(answers.values()) == count and set(answers) <= set(topo.pods)


@pytest.fixture
def client_b(topo: Topology, netns_factory: Callable[[str], str]) -> str:
    """A second client, on a second interface of the node (removed with the namespaces)."""
    ns = netns_factory("pxb")
    ip("-n", topo.node, "link", "add", "vc2", "type", "veth", "peer", "name", "eth0", "netns", ns)
    ip("-n", topo.node, "addr", "add", f"{NODE_IP2}/24", "dev", "vc2")
    ip("-n", topo.node, "link", "set", "vc2", "up")
    ip("-n", ns, "addr", "add", f"{CLIENT_B_IP}/24", "dev", "eth0")
    ip("-n", ns, "link", "set", "eth0", "up")
    ip("-n", ns, "route", "add", "default", "via", NODE_IP2)
    return ns


def _answer_as_node(lsock: socket.socket) -> None:
    """Answer every connection with "node-local" until the socket is shut down."""
    while True:
        try:
            conn, _ = lsock.accept()
        except OSError:
            return
        with conn:
            conn.sendall(b"node-local\n")


@contextlib.contextmanager
def node_listener(topo: Topology, ip_: str, port: int) -> Iterator[None]:
    """A process of the node itself listening on ip_:port (a socket opened in the node's netns
    stays there; a thread of the test answers)."""
    lsock = run_in_netns(topo.node, socket.create_server, (ip_, port))
    threading.Thread(target=_answer_as_node, args=(lsock,), daemon=True).start()
    try:
        yield
    finally:
        lsock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (a close alone would not)
        lsock.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_source_ranges_admit_only_allowed_clients_to_the_lb_ip(topo: Topology, client_b: str,
                                                                backend: str) -> None:
    ip("-n", topo.node, "addr", "add", f"{LB_IP}/32", "dev", "lo")
    with node_listener(topo, LB_IP, 80):
        _source_ranges(topo, client_b, backend)


def _source_ranges(topo: Topology, client_b: str, backend: str) -> None:
    assert try_connect(client_b, LB_IP, 80) == "node-local"  # the set-up: no proxy rules yet
    p = make_proxier(backend, topo)
    p.on_service(None, lb_service([RANGE_A]))
    sync(topo, p)
    rules = firewall_rules(topo, backend)
    if backend == "nftables":
        # the node's own address is in the range: the LB IP itself is allowed too (allowFromNode)
        assert "ip saddr != { 192.168.56.0/24, 198.51.100.7 } drop" in rules
    else:
        assert f":{FW} -" in rules and f"-j {FW}" in rules and "-A KUBE-PROXY-FIREWALL" in rules

    assert reaches_backends(topo, topo.client, LB_IP, 80)
    # dropped, not rejected: the connection attempt times out
    assert try_connect(client_b, LB_IP, 80).startswith("ERROR:TimeoutError"), "client B got through"
    # the node port and the cluster IP are not filtered (as upstream)
    assert reaches_backends(topo, client_b, NODE_IP, NODE_PORT)
    assert reaches_backends(topo, client_b, CLUSTER_IP, 80)

    # client B's range added: a partial sync opens the LB IP to it
    p.on_service(lb_service([RANGE_A]), lb_service([RANGE_A, "192.168.57.0/24"]))
    sync(topo, p)
    assert reaches_backends(topo, client_b, LB_IP, 80)
    # no ranges any more: the firewall chain is deleted, everyone gets in
    p.on_service(lb_service([RANGE_A, "192.168.57.0/24"]), lb_service(None))
    sync(topo, p)
    assert firewall_rules(topo, backend) == ""
    assert reaches_backends(topo, client_b, LB_IP, 80)

    # ranges again, then --cleanup's removal takes the firewall chains and their jumps too
    p.on_service(lb_service(None), lb_service([RANGE_A]))
    sync(topo, p)
    assert try_connect(client_b, LB_IP, 80).startswith("ERROR:TimeoutError")
    if backend == "nftables":
        topo.in_node(cleanup_nftables)
        assert "kube-proxy" not in topo_mod.nft_ruleset(topo.node)
    else:
        topo.in_node(cleanup_iptables, make_executor(backend))
        assert "KUBE-" not in topo_mod.iptables_save(topo.node, backend)
    assert try_connect(client_b, LB_IP, 80) == "node-local"


@pytest.mark.parametrize("backend", BACKENDS)
def test_nodeport_addresses_serve_node_ports_only_inside_the_cidrs(topo: Topology, client_b: str,
                                                                  backend: str) -> None:
    # a process of the node owns port 30080 on the address outside --nodeport-addresses
    with node_listener(topo, NODE_IP, NODE_PORT):
        p = make_proxier(backend, topo, nodeport_addresses=("192.168.57.0/24",))
        p.on_service(None, lb_service(None))
        sync(topo, p)
        assert reaches_backends(topo, topo.client, NODE_IP2, NODE_PORT)
        assert try_connect(topo.client, NODE_IP, NODE_PORT) == "node-local"
        # no endpoints: the node port is rejected inside the CIDRs only
        p.on_endpoint_slice(endpoint_slice("lb", []))
        sync(topo, p)
        assert try_connect(topo.client, NODE_IP2, NODE_PORT) == "REFUSED"
        assert try_connect(topo.client, NODE_IP, NODE_PORT) == "node-local"

        # without the flag (a restart), every local address serves the node port, as before
        p2 = make_proxier(backend, topo)
        p2.on_service(None, lb_service(None))
        sync(topo, p2)
        assert reaches_backends(topo, topo.client, NODE_IP, NODE_PORT)
        assert reaches_backends(topo, client_b, NODE_IP2, NODE_PORT)
