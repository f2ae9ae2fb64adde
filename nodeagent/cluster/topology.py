"""The address plan of a local cluster: pure data, no side effects.

A cluster named NAME is a set of network namespaces on one host (docs/components.md, "Cluster
defaults"):

    na-NAME-sw   the "switch": bridge br0 (192.168.56.1/24, like the host side of Vagrant's private
                 network) with one veth per member; nothing of the cluster touches the root namespace
    na-NAME-cp   the control plane (192.168.56.2): apiserver, controllers, dns
    na-NAME-nI   node I (192.168.56.10+I): kubelet (with its managed containerd), proxy, cni-daemon

Every namespace sees the same 192.168.56.0/24, so two clusters with different names coexist: they
never share a link. The host reaches the apiserver only through a loopback forwarder
(nodeagent/cluster/forwarder.py) whose port differs per cluster.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_NAME = "demo"
BASE_DIR = Path(os.environ.get("NODEAGENT_CLUSTERS_DIR", "/var/lib/nodeagent/clusters"))
UNDERLAY = ipaddress.IPv4Network("192.168.56.0/24")
SWITCH_IP = "192.168.56.1"
CONTROL_PLANE_IP = "192.168.56.2"
FIRST_NODE_HOST = 11  # node I gets 192.168.56.(10+I), as the Vagrantfile's agents
CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/12"
CLUSTER_DNS = "10.96.0.10"
API_PORT = 6443
BRIDGE = "br0"
UNDERLAY_IF = "eth0"  # the member's end of its veth, as on a VM
MAX_NODES = 200

# A name becomes part of netns names, interface-free, and of directory names.
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$")


class PlanError(ValueError):
    """A cluster name or size that cannot be planned."""


@dataclass(frozen=True)
class Member:
    """One namespace joined to the switch: the control plane or a node. A real host that runs
    `nodeagent up` is a Member too, with its root namespace as netns (podnet.host_member)."""

    role: str          # "control-plane" | "node"
    name: str          # Kubernetes node name for nodes, "cp" for the control plane
    netns: str         # ip-netns name, or a path (/proc/1/ns/net for a real host)
    ip: str            # underlay address
    switch_port: str   # the veth's name on the switch side (<= 15 chars, IFNAMSIZ)
    data_dir: Path

    @property
    def netns_path(self) -> str:
        return self.netns if "/" in self.netns else f"/var/run/netns/{self.netns}"


@dataclass(frozen=True)
class ClusterPlan:
    name: str
    nodes: int
    base_dir: Path = field(default=BASE_DIR)

    def __post_init__(self) -> None:
        validate_name(self.name)
        if not 1 <= self.nodes <= MAX_NODES:
            raise PlanError(f"cluster {self.name!r}: --nodes must be between 1 and {MAX_NODES}, got {self.nodes}")
        check_socket_room(self.node(self.nodes).data_dir)

    @property
    def dir(self) -> Path:
        return self.base_dir / self.name

    @property
    def run_dir(self) -> Path:
        """pid files"""
        return self.dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def state_file(self) -> Path:
        return self.dir / "cluster.json"

    @property
    def kubeconfig(self) -> Path:
        """admin kubeconfig for the host (server = the loopback forwarder)"""
        return self.dir / "kubeconfig"

    @property
    def internal_kubeconfig(self) -> Path:
        """admin kubeconfig for processes inside the cluster (server = the cp's underlay address)"""
        return self.dir / "cp" / "admin-internal.kubeconfig"

    @property
    def switch_netns(self) -> str:
        return f"na-{self.name}-sw"

    @property
    def control_plane(self) -> Member:
        return Member("control-plane", "cp", f"na-{self.name}-cp", CONTROL_PLANE_IP, "p-cp", self.dir / "cp")

    @property
    def node_members(self) -> list[Member]:
        return [self.node(i) for i in range(1, self.nodes + 1)]

    def node(self, index: int) -> Member:
        name = node_name(self.name, index)
        return Member("node", name, f"na-{self.name}-n{index}", node_ip(index), f"p-n{index}", self.dir / name)

    @property
    def members(self) -> list[Member]:
        return [self.control_plane, *self.node_members]

    @property
    def netns_names(self) -> list[str]:
        return [self.switch_netns, *(m.netns for m in self.members)]

    @property
    def api_url_internal(self) -> str:
        return f"https://{CONTROL_PLANE_IP}:{API_PORT}"

    def member(self, name: str) -> Member:
        for m in self.members:
            if name in (m.name, m.netns):
                return m
        raise PlanError(f"cluster {self.name!r} has no member {name!r} (have {[m.name for m in self.members]})")


SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with its NUL


def check_socket_room(data_dir: Path) -> None:
    """containerd puts its sockets under DATA_DIR/containerd (the longest is
    containerd.sock.ttrpc); a path over sun_path's size makes it exit at start."""
    longest = data_dir / "containerd" / "containerd.sock.ttrpc"
    if len(str(longest).encode()) > SUN_PATH_MAX:
        raise PlanError(f"data dir {data_dir} is too long: containerd's socket {longest} would exceed "
                        f"{SUN_PATH_MAX} bytes; use a shorter --base-dir/--data-dir or cluster name")


def validate_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise PlanError(
            f"cluster name {name!r} is not valid: use 1-20 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )


def node_name(cluster: str, index: int) -> str:
    return f"{cluster}-n{index}"


def node_ip(index: int) -> str:
    host = FIRST_NODE_HOST - 1 + index
    addr = UNDERLAY.network_address + host
    if addr not in UNDERLAY or addr == UNDERLAY.broadcast_address:
        raise PlanError(f"node {index} does not fit in the underlay {UNDERLAY}")
    return str(addr)


def cluster_netns_prefix(name: str) -> str:
    return f"na-{name}-"
