"""Find a pod's network namespace and links on a local cluster, from the host, or on a real host that
runs `nodeagent up` (a Vagrant VM), where the node is the host's root namespace (HostNodes).

A pod's namespace is held by its pause process, a child of a containerd shim; the shim runs in the
node's namespace (containerd started it there). So: processes of the node namespace -> their
children in another namespace -> the one whose local addresses include the pod IP (read from
/proc/PID/net/fib_trie, which shows the namespace of PID without entering it).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nodeagent.cluster import procs
from nodeagent.cluster.topology import UNDERLAY_IF, Member
from nodeagent.netns import nsenter_argv

ROOT_NETNS = "/proc/1/ns/net"  # a real host's node parts run in its root namespace


class PodNetError(RuntimeError):
    pass


class Nodes(Protocol):
    """Where a node's namespace is: a local cluster's plan, or HostNodes on a real host."""

    def member(self, name: str) -> Member: ...


@dataclass(frozen=True)
class HostNodes:
    """A real host running `nodeagent up` is one node, its root namespace; every other node is
    another machine, whose pods cannot be entered from here."""

    name: str
    ip: str
    data_dir: Path = Path("/var/lib/nodeagent/host")

    def member(self, name: str) -> Member:
        if name != self.name:
            raise PodNetError(f"node {name} is another machine (this host is node {self.name}); "
                              "look at it from there")
        return Member("node", self.name, ROOT_NETNS, self.ip, "", self.data_dir)


@dataclass(frozen=True)
class PodNet:
    namespace: str
    name: str
    ip: str
    node: Member
    pid: int               # a process holding the pod's network namespace (the pause container)
    host_veth: str | None  # the pod's eth0 peer in the node namespace

    @property
    def netns_path(self) -> str:
        return f"/proc/{self.pid}/ns/net"


def local_addresses(fib_trie: str) -> set[str]:
    """Addresses marked `/32 host LOCAL` in /proc/net/fib_trie (the namespace's own IPv4s)."""
    out: set[str] = set()
    last: str | None = None
    for line in fib_trie.splitlines():
        s = line.strip()
        if s.startswith("|--"):
            last = s[3:].strip()
        elif s.startswith("/32 host LOCAL") and last:
            out.add(last)
    return out


def find_pod_pid(node: Member, pod_ip: str, proc: Path = Path("/proc")) -> int:
    ino = procs.netns_inode(node.netns_path)
    if ino is None:
        raise PodNetError(f"node {node.name}: namespace {node.netns} does not exist")
    node_pids = procs.pids_in_netns({ino}, proc)
    seen: set[int] = set()
    for pid in sorted(procs.process_tree(node_pids, proc) - node_pids):
        try:
            pino = os.stat(proc / str(pid) / "ns" / "net").st_ino
            if pino in seen or pino == ino:
                continue
            seen.add(pino)
            if pod_ip in local_addresses((proc / str(pid) / "net" / "fib_trie").read_text()):
                return pid
        except OSError:
            continue
    raise PodNetError(f"no process on node {node.name} holds a namespace with address {pod_ip}; "
                      "is the pod running?")


def _ip_json(netns_path: str, *args: str) -> list[dict[str, Any]]:
    p = subprocess.run([*nsenter_argv(netns_path), "ip", "-j", *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise PodNetError(f"`ip {' '.join(args)}` in {netns_path} failed: {p.stderr.strip()}")
    out: list[dict[str, Any]] = json.loads(p.stdout or "[]")
    return out


def host_veth(node: Member, pod_pid: int, ifname: str = "eth0") -> str | None:
    """The node-side end of the pod's veth: the pod's eth0 `link_index` is its peer's ifindex."""
    links = _ip_json(f"/proc/{pod_pid}/ns/net", "link", "show", "dev", ifname)
    if not links or "link_index" not in links[0]:
        return None
    peer = links[0]["link_index"]
    for link in _ip_json(node.netns_path, "link", "show"):
        if link.get("ifindex") == peer:
            return str(link["ifname"])
    return None


def underlay_iface(node: Member) -> str:
    """The interface that holds the node's address: eth0 in a local cluster's node namespace, the
    private network's interface (eth1) on a Vagrant VM."""
    for link in _ip_json(node.netns_path, "-4", "addr", "show"):
        if any(a.get("local") == node.ip for a in link.get("addr_info") or []):
            return str(link["ifname"])
    return UNDERLAY_IF


def lookup(plan: Nodes, pod: dict[str, Any]) -> PodNet:
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    ns, name = meta.get("namespace", "default"), meta["name"]
    node_name, ip = spec.get("nodeName"), status.get("podIP")
    if not node_name or not ip:
        raise PodNetError(f"pod {ns}/{name} has no node or no IP yet (phase {status.get('phase')})")
    node = plan.member(node_name)
    pid = find_pod_pid(node, ip)
    return PodNet(ns, name, ip, node, pid, host_veth(node, pid))
