"""Routes to the other nodes' pod subnets, from Node objects (the "host-gw" and "vxlan" back ends).

Desired state is computed from the Node informer's cache alone: for every other node that has a
podCIDR and an InternalIP, its pod subnet must be reachable. host-gw keeps exactly one route
`<podCIDR> via <InternalIP>` per node (the nodes share an L2 segment); vxlan keeps, per node, a
route `<podCIDR> via <its VTEP address> dev nodeagent.1 onlink` plus the neighbour and FDB entries
that send it to the node's InternalIP over UDP 4789 (flannel's layout, with each VTEP's MAC derived
from its node's InternalIP so no annotation is needed). Routes carry our own rtnetlink protocol
number, so a sync can tell ours apart and remove those of deleted nodes without touching others.
A route removed by hand is put back at once: a deletion of ours wakes the sync (routewatch.py);
a periodic resync is the safety net.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from nodeagent.netns import netns_path, setns

log = logging.getLogger("nodeagent.cni.routes")

RTPROT_NODEAGENT = 151  # rtnetlink "protocol" marking our routes (unused by known daemons)
MAIN_TABLE = 254
VXLAN_DEVICE = "nodeagent.1"
VXLAN_VNI = 1
VXLAN_PORT = 4789
RTNH_F_ONLINK = 4
NUD_PERMANENT = 0x80
NTF_SELF = 2  # the entry belongs to the vxlan device itself, not a bridge above it

Obj = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True)
class NodeRoute:
    node: str
    pod_cidr: str  # canonical network, e.g. 10.244.2.0/24
    node_ip: str  # the node's InternalIP on the underlay


def pod_cidrs(node: Obj) -> list[str]:
    spec = node.get("spec") or {}
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    out = []
    for c in cidrs:
        try:
            out.append(str(ipaddress.ip_network(c, strict=False)))
        except ValueError:
            log.warning("node has an invalid podCIDR node=%s cidr=%r", node.get("metadata", {}).get("name"), c)
    return out


def internal_ip(node: Obj, version: int = 4) -> str | None:
    for a in (node.get("status") or {}).get("addresses") or []:
        if a.get("type") == "InternalIP":
            try:
                if ipaddress.ip_address(a.get("address", "")).version == version:
                    return str(a["address"])
            except ValueError:
                continue
    return None


def desired_routes(nodes: Iterable[Obj], self_name: str) -> dict[str, NodeRoute]:
    """podCIDR -> route, for every other node with a podCIDR and an InternalIP of its family."""
    out: dict[str, NodeRoute] = {}
    for node in sorted(nodes, key=lambda n: n.get("metadata", {}).get("name", "")):
        name = node.get("metadata", {}).get("name", "")
        if name == self_name:
            continue
        for cidr in pod_cidrs(node):
            ip = internal_ip(node, ipaddress.ip_network(cidr).version)
            if ip is not None:
                out[cidr] = NodeRoute(name, cidr, ip)
    return out


@dataclass(frozen=True)
class SyncResult:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


class Backend(Protocol):
    def sync(self, desired: dict[str, NodeRoute]) -> SyncResult: ...


class RouteTable(Protocol):
    """Our routes in the node's main table: dst -> gateway."""

    def routes(self) -> dict[str, str | None]: ...
    def replace(self, dst: str, gateway: str, dev: str | None = None, onlink: bool = False) -> None: ...
    def delete(self, dst: str) -> None: ...


class HostGw:
    """Exactly one route `<podCIDR> via <InternalIP>` per other node."""

    def __init__(self, table: RouteTable) -> None:
        self.table = table

    def sync(self, desired: dict[str, NodeRoute]) -> SyncResult:
        have = self.table.routes()
        added, removed = [], []
        for dst in sorted(set(have) - set(desired)):
            self.table.delete(dst)
            removed.append(dst)
        for dst, r in sorted(desired.items()):
            if have.get(dst) != r.node_ip:
                try:
                    self.table.replace(dst, r.node_ip)
                    added.append(dst)
                except OSError as e:  # e.g. ENETUNREACH: the node is not on our L2 segment
                    log.warning("route add failed dst=%s via=%s node=%s err=%s (use --backend vxlan "
                                "for nodes on other segments)", dst, r.node_ip, r.node, e)
        return SyncResult(tuple(added), tuple(removed))


def vtep_mac(node_ip: str) -> str:
    """A locally administered unicast MAC (0a:4e:...) derived from the node's IPv4 address."""
    b = ipaddress.IPv4Address(node_ip).packed
    return "0a:4e:" + ":".join(f"{x:02x}" for x in b)


def vtep_ip(pod_cidr: str) -> str:
    """The VTEP's own address: its node's podCIDR network address (flannel's x.y.z.0/32)."""
    return str(ipaddress.ip_network(pod_cidr).network_address)


class VxlanLinks(Protocol):
    def ensure_device(self, local_ip: str, mac: str, address: str) -> int: ...
    def routes(self) -> dict[str, str | None]: ...
    def replace_route(self, dst: str, gateway: str, index: int) -> None: ...
    def delete_route(self, dst: str) -> None: ...
    def peers(self, index: int) -> dict[str, str]: ...  # fdb: mac -> remote ip
    def replace_peer(self, index: int, mac: str, remote_ip: str, vtep: str) -> None: ...
    def delete_peer(self, index: int, mac: str, remote_ip: str, vtep: str | None) -> None: ...


class Vxlan:
    def __init__(self, links: VxlanLinks, local_ip: str, own_pod_cidr: str) -> None:
        self.links = links
        self.local_ip = local_ip
        self.own_pod_cidr = own_pod_cidr

    def sync(self, desired: dict[str, NodeRoute]) -> SyncResult:
        idx = self.links.ensure_device(self.local_ip, vtep_mac(self.local_ip), vtep_ip(self.own_pod_cidr))
        desired = {k: v for k, v in desired.items() if ipaddress.ip_network(k).version == 4}
        have_routes = self.links.routes()
        have_peers = self.links.peers(idx)
        want_peers = {vtep_mac(r.node_ip): r for r in desired.values()}
        added, removed = [], []
        for dst in sorted(set(have_routes) - set(desired)):
            self.links.delete_route(dst)
            removed.append(dst)
        for mac in sorted(set(have_peers) - set(want_peers)):
            self.links.delete_peer(idx, mac, have_peers[mac], None)
        for dst, r in sorted(desired.items()):
            mac = vtep_mac(r.node_ip)
            if have_peers.get(mac) != r.node_ip:
                self.links.replace_peer(idx, mac, r.node_ip, vtep_ip(dst))
            if have_routes.get(dst) != vtep_ip(dst):
                self.links.replace_route(dst, vtep_ip(dst), idx)
                added.append(dst)
        return SyncResult(tuple(added), tuple(removed))


# --- netlink implementations -----------------------------------------------------------------

def _route_dst(r: Any) -> str:
    dst = r.get("RTA_DST")
    return f"{dst}/{r['dst_len']}" if dst else ("0.0.0.0/0" if r["family"] == 2 else "::/0")


class NetlinkRoutes:
    """RouteTable and VxlanLinks over pyroute2, for the namespace `netns` (default: ours).

    pyroute2 (0.9) opens one netlink socket per calling *thread*, in that thread's namespace, so
    every call runs on one worker thread that entered `netns` once (through nodeagent.netns) and
    owns the socket; callers on any thread (the event loop's to_thread workers) reach the right
    namespace, never the one they happen to be in."""

    def __init__(self, netns: str | None = None) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="netlink-routes")
        self.ipr: Any = None
        self._run(self._open, netns)

    def _open(self, netns: str | None) -> None:
        if netns:
            setns(netns_path(netns))  # this worker thread stays in the node's namespace
        from pyroute2 import IPRoute

        self.ipr = IPRoute()

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return self._pool.submit(fn, *args).result()

    def close(self) -> None:
        if self.ipr is not None:
            self._run(self.ipr.close)
        self._pool.shutdown(wait=True)

    def routes(self) -> dict[str, str | None]:
        return self._run(self._routes)

    def _routes(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for family in (2, 10):
            for r in self.ipr.get_routes(family=family, table=MAIN_TABLE):
                if r["proto"] == RTPROT_NODEAGENT:
                    out[_route_dst(r)] = r.get("RTA_GATEWAY")
        return out

    def replace(self, dst: str, gateway: str, dev: str | None = None, onlink: bool = False) -> None:
        self._run(self._replace, dst, gateway)

    def _replace(self, dst: str, gateway: str) -> None:
        try:
            self.ipr.route("replace", dst=dst, gateway=gateway, proto=RTPROT_NODEAGENT, table=MAIN_TABLE)
        except Exception as e:
            code = getattr(e, "code", None)
            if isinstance(code, int):
                raise OSError(code, f"route replace {dst} via {gateway}: {e}") from e
            raise

    def delete(self, dst: str) -> None:
        self._run(self._delete, dst)

    def _delete(self, dst: str) -> None:
        try:
            self.ipr.route("del", dst=dst, proto=RTPROT_NODEAGENT, table=MAIN_TABLE)
        except Exception as e:
            if getattr(e, "code", None) not in (errno.ESRCH, errno.ENOENT):
                raise

    delete_route = delete

    # vxlan
    def ensure_device(self, local_ip: str, mac: str, address: str) -> int:
        return self._run(self._ensure_device, local_ip, mac, address)

    def _ensure_device(self, local_ip: str, mac: str, address: str) -> int:
        found = self.ipr.link_lookup(ifname=VXLAN_DEVICE)
        if not found:
            self.ipr.link("add", ifname=VXLAN_DEVICE, kind="vxlan", vxlan_id=VXLAN_VNI,
                          vxlan_local=local_ip, vxlan_port=VXLAN_PORT, vxlan_learning=0, address=mac)
            found = self.ipr.link_lookup(ifname=VXLAN_DEVICE)
        idx = int(found[0])
        try:
            self.ipr.addr("add", index=idx, address=address, prefixlen=32)
        except Exception as e:
            if getattr(e, "code", None) != errno.EEXIST:
                raise
        self.ipr.link("set", index=idx, state="up")
        return idx

    def replace_route(self, dst: str, gateway: str, index: int) -> None:
        self._run(lambda: self.ipr.route("replace", dst=dst, gateway=gateway, oif=index, flags=RTNH_F_ONLINK,
                                         proto=RTPROT_NODEAGENT, table=MAIN_TABLE))

    def peers(self, index: int) -> dict[str, str]:
        return self._run(self._peers, index)

    def _peers(self, index: int) -> dict[str, str]:
        out = {}
        for e in self.ipr.fdb("dump", ifindex=index):
            mac, dst = e.get("NDA_LLADDR"), e.get("NDA_DST")
            if mac and dst and str(mac).startswith("0a:4e:"):
                out[str(mac)] = str(dst)
        return out

    def replace_peer(self, index: int, mac: str, remote_ip: str, vtep: str) -> None:
        def do() -> None:
            self.ipr.neigh("replace", ifindex=index, dst=vtep, lladdr=mac, state=NUD_PERMANENT)
            self.ipr.fdb("replace", ifindex=index, lladdr=mac, dst=remote_ip, state=NUD_PERMANENT, flags=NTF_SELF)

        self._run(do)

    def delete_peer(self, index: int, mac: str, remote_ip: str, vtep: str | None) -> None:
        self._run(self._delete_peer, index, mac, remote_ip)

    def _delete_peer(self, index: int, mac: str, remote_ip: str) -> None:
        for n in self.ipr.get_neighbours(ifindex=index):
            if n.get("NDA_LLADDR") == mac:
                try:
                    self.ipr.neigh("del", ifindex=index, dst=n.get("NDA_DST"), lladdr=mac)
                except Exception as e:
                    log.debug("neigh del failed mac=%s err=%s", mac, e)
        try:
            self.ipr.fdb("del", ifindex=index, lladdr=mac, dst=remote_ip, flags=NTF_SELF)
        except Exception as e:
            log.debug("fdb del failed mac=%s err=%s", mac, e)


class RouteSyncer:
    """The loop: Node informer events (and a periodic resync) -> desired routes -> backend.sync,
    run on a worker thread (netlink calls block)."""

    def __init__(self, informer: Any, node_name: str, backend_for: Callable[[Obj | None], Backend | None],
                 resync_period: float = 10.0) -> None:
        """backend_for(own Node or None) gives the back end to sync with, or None while it cannot
        be built yet (vxlan needs our own InternalIP and podCIDR)."""
        self.informer = informer
        self.node_name = node_name
        self.backend_for = backend_for
        self.resync_period = resync_period
        self._wake = asyncio.Event()
        self.last: SyncResult | None = None
        self.syncs = 0
        informer.add_handlers(on_add=lambda o: self._wake.set(), on_update=lambda a, b: self._wake.set(),
                              on_delete=lambda o: self._wake.set())

    def trigger(self) -> None:
        self._wake.set()

    async def sync_once(self) -> SyncResult | None:
        backend = self.backend_for(self.informer.get(self.node_name))
        if backend is None:
            return None
        desired = desired_routes(self.informer.list(), self.node_name)
        result = await asyncio.to_thread(backend.sync, desired)
        self.syncs += 1
        self.last = result
        if result.added or result.removed:
            log.info("routes synced node=%s added=%s removed=%s", self.node_name,
                     ",".join(result.added), ",".join(result.removed))
        return result

    async def run(self) -> None:
        await self.informer.wait_synced()
        while True:
            self._wake.clear()
            try:
                await self.sync_once()
            except Exception:  # a failed sync is retried on the next event or resync
                log.exception("route sync failed node=%s", self.node_name)
            try:
                await asyncio.wait_for(self._wake.wait(), self.resync_period)
            except TimeoutError:
                pass
