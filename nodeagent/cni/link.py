"""Netlink work for the bridge plugin, through pyroute2 (never by running `ip`).

Host-side calls use an IPRoute opened in the node's namespace (the process's own: the daemon and
the standalone plugin both run inside it). Container-side work runs through nodeagent.netns on a
thread that has entered the pod's namespace and returns plain data (practice 1).
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from dataclasses import dataclass
from typing import Any

from nodeagent.cni.config import IPAddress
from nodeagent.cni.errors import INVALID_CONFIG, CNIError
from nodeagent.netns import run_in_netns

HOST_VETH_PREFIX = "veth"
IFF_PROMISC = 0x100


def host_veth_name(network: str, container_id: str, ifname: str) -> str:
    """Deterministic host-side name: a retried ADD (after a crash) finds and replaces its own
    half-made veth instead of leaking one, and GC can tell ours from the attachment list."""
    digest = hashlib.sha256(f"{network}/{container_id}/{ifname}".encode()).hexdigest()
    return HOST_VETH_PREFIX + digest[:11]


def _iproute() -> Any:
    from pyroute2 import IPRoute  # ~190 ms: imported only where netlink is really used

    return IPRoute()


def is_errno(e: BaseException, *codes: int) -> bool:
    return getattr(e, "code", None) in codes


@dataclass(frozen=True)
class HostVeth:
    index: int
    mac: str
    peer_index: int
    mtu: int


def pod_mac(ip: IPAddress) -> str:
    """The pod end's MAC, derived from its IPv4 address (0a:58 + the address, as ovn-kubernetes
    does): known without asking the kernel, and stable across a retried ADD."""
    if ip.version == 4:
        return "0a:58:" + ":".join(f"{b:02x}" for b in ip.packed)
    return "0a:58:" + ":".join(f"{b:02x}" for b in ip.packed[-4:])


class HostLinks:
    """Operations on the node side: the bridge and the host ends of the veth pairs."""

    def __init__(self) -> None:
        # pyroute2 0.9 keeps one netlink socket per calling thread (in that thread's namespace);
        # every thread calling in here is in the node's namespace.
        self.ipr = _iproute()
        self.lock = threading.RLock()
        # Each ADD would otherwise spend 3-4 netlink round trips re-checking cni0; a bridge deleted
        # behind our back shows up as a failed attach, which invalidates the cache (forget_bridge).
        self._bridges: dict[str, tuple[int, str]] = {}
        self._gateways: set[tuple[int, str]] = set()

    def forget_bridge(self, name: str) -> None:
        with self.lock:
            idx = self._bridges.pop(name, (None, ""))[0]
            self._gateways = {g for g in self._gateways if g[0] != idx}

    def close(self) -> None:
        self.ipr.close()

    def index(self, name: str) -> int | None:
        with self.lock:
            found = self.ipr.link_lookup(ifname=name)
        return found[0] if found else None

    def link(self, index: int) -> Any:
        with self.lock:
            return self.ipr.link("get", index=index)[0]

    def kind(self, index: int) -> str | None:
        info = self.link(index).get("IFLA_LINKINFO")
        return info.get("IFLA_INFO_KIND") if info else None

    def ensure_bridge(self, name: str, mtu: int, promisc: bool) -> tuple[int, str]:
        """cni0, created once; concurrent ADDs racing to create it all end with the same one.
        Returns its index and MAC."""
        with self.lock:
            if name in self._bridges:
                return self._bridges[name]
            idx = self.index(name)
            if idx is None:
                # An explicit MAC: otherwise the kernel keeps changing the bridge's address to the
                # lowest of its ports' as pods come and go, and the MAC in our results goes stale.
                mac = "0a:58:" + ":".join(f"{b:02x}" for b in os.urandom(4))
                kw: dict[str, Any] = {"ifname": name, "kind": "bridge", "address": mac}
                if mtu:
                    kw["mtu"] = mtu
                try:
                    self.ipr.link("add", **kw)
                except Exception as e:
                    if not is_errno(e, errno.EEXIST):
                        raise
                idx = self.index(name)
                if idx is None:
                    raise RuntimeError(f"bridge {name} vanished right after it was created")
            if self.kind(idx) != "bridge":
                raise CNIError(INVALID_CONFIG, "bridge name is taken",
                               f"{name!r} exists and is a {self.kind(idx)}, not a bridge; choose another \"bridge\"")
            link = self.link(idx)
            flags = link["flags"]
            if not flags & 1 or (promisc and not flags & IFF_PROMISC):
                kw = {"index": idx, "state": "up"}
                if promisc:
                    kw.update(flags=flags | IFF_PROMISC | 1, change=IFF_PROMISC | 1)
                    kw.pop("state")
                self.ipr.link("set", **kw)
            self._bridges[name] = (idx, str(link.get("IFLA_ADDRESS")))
            return self._bridges[name]

    def ensure_address(self, index: int, ip: IPAddress, prefixlen: int) -> None:
        key = (index, f"{ip}/{prefixlen}")
        with self.lock:
            if key in self._gateways:
                return
            try:
                self.ipr.addr("add", index=index, address=str(ip), prefixlen=prefixlen)
            except Exception as e:
                if not is_errno(e, errno.EEXIST):
                    raise
            self._gateways.add(key)

    def delete(self, name: str) -> bool:
        """Delete a link by name; a missing link is not an error (DEL is idempotent)."""
        with self.lock:
            try:
                self.ipr.link("del", ifname=name)
                return True
            except Exception as e:
                if is_errno(e, errno.ENODEV, errno.ENOENT):
                    return False
                raise

    def create_veth(self, host_name: str, netns_path: str, ifname: str, mtu: int, peer_mac: str,
                    bridge_index: int, hairpin: bool) -> HostVeth:
        """A veth pair whose peer is born inside the pod's namespace with its final name and MAC
        (IFLA_NET_NS_FD on the peer), so no half-moved interface is ever left in the node; the host
        end is created already up and enslaved to the bridge (IFLA_MASTER at RTM_NEWLINK), which
        saves a round trip per ADD. Raises FileExistsError when a link of either name exists."""
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            peer: dict[str, Any] = {"ifname": ifname, "net_ns_fd": fd, "address": peer_mac}
            kw: dict[str, Any] = {"ifname": host_name, "kind": "veth", "peer": peer, "master": bridge_index,
                                  "state": "up"}
            if mtu:
                kw["mtu"] = mtu
                peer["mtu"] = mtu
            try:
                self.ipr.link("add", **kw)
            except Exception as e:
                if is_errno(e, errno.EEXIST):
                    raise FileExistsError(errno.EEXIST, f"{host_name} or {ifname} in {netns_path} exists") from e
                raise
        finally:
            os.close(fd)
        # looked up again by name (practice 1); IFLA_LINK is the peer's index in the pod's netns
        link = self.ipr.link("get", ifname=host_name)[0]
        if link.get("IFLA_MASTER") != bridge_index:
            raise RuntimeError(f"{host_name} was created but is not attached to bridge index {bridge_index}")
        if hairpin:
            self.ipr.brport("set", index=link["index"], mode=1)  # IFLA_BRPORT_MODE = hairpin
        return HostVeth(link["index"], str(link.get("IFLA_ADDRESS")), int(link.get("IFLA_LINK")),
                        int(link.get("IFLA_MTU")))

    def master(self, index: int) -> int | None:
        return self.link(index).get("IFLA_MASTER")

    def bridge_ports(self, bridge_index: int) -> list[str]:
        with self.lock:
            return [str(link.get("IFLA_IFNAME")) for link in self.ipr.get_links() if link.get("IFLA_MASTER") == bridge_index]


def set_ip_forward(family: int = 4) -> None:
    """Routing between pods and nodes needs forwarding in the node's namespace (/proc/sys/net
    is per network namespace; the caller is inside the node's)."""
    path = "/proc/sys/net/ipv4/ip_forward" if family == 4 else "/proc/sys/net/ipv6/conf/all/forwarding"
    with open(path, "r+") as f:
        if f.read().strip() != "1":
            f.seek(0)
            f.write("1")


# --- inside the pod's namespace ------------------------------------------------------------

def _configure_container(index: int, addrs: list[tuple[str, int]], routes: list[tuple[str, str | None]]) -> None:
    ipr = _iproute()
    try:
        for address, prefixlen in addrs:
            ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
        ipr.link("set", index=index, state="up")
        for dst, gw in routes:
            kw: dict[str, Any] = {"dst": dst, "oif": index}
            if gw:
                kw["gateway"] = gw
            try:
                ipr.route("add", **kw)
            except Exception as e:
                if not is_errno(e, errno.EEXIST):
                    raise
    finally:
        ipr.close()


def configure_container(netns_path: str, index: int, addrs: list[tuple[str, int]],
                        routes: list[tuple[str, str | None]]) -> None:
    """Address the pod end (by the index the host end reported as its peer), bring it up, route."""
    run_in_netns(netns_path, _configure_container, index, addrs, routes)


def _delete_container_link(ifname: str) -> bool:
    ipr = _iproute()
    try:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return False
        try:
            ipr.link("del", index=found[0])
        except Exception as e:
            if not is_errno(e, errno.ENODEV):
                raise
        return True
    finally:
        ipr.close()


def delete_container_link(netns_path: str, ifname: str) -> bool:
    return run_in_netns(netns_path, _delete_container_link, ifname)


@dataclass(frozen=True)
class ContainerState:
    exists: bool
    kind: str | None = None
    addresses: frozenset[str] = frozenset()
    routes: frozenset[tuple[str, str | None]] = frozenset()


def _inspect_container(ifname: str) -> ContainerState:
    ipr = _iproute()
    try:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return ContainerState(False)
        idx = found[0]
        link = ipr.link("get", index=idx)[0]
        info = link.get("IFLA_LINKINFO")
        addrs = frozenset(f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=idx))
        routes = set()
        for family in (2, 10):
            for r in ipr.get_routes(family=family, oif=idx):
                if r.get("RTA_TABLE") != 254:
                    continue
                dst = r.get("RTA_DST")
                dst_s = f"{dst}/{r['dst_len']}" if dst else ("0.0.0.0/0" if family == 2 else "::/0")
                routes.add((dst_s, r.get("RTA_GATEWAY")))
        return ContainerState(True, info.get("IFLA_INFO_KIND") if info else None, addrs, frozenset(routes))
    finally:
        ipr.close()


def inspect_container(netns_path: str, ifname: str) -> ContainerState:
    return run_in_netns(netns_path, _inspect_container, ifname)

