"""The bridge plugin's commands: ADD, DEL, CHECK, GC and STATUS (the dispatcher handles VERSION).

ADD: reserve addresses (host-local store), make sure the bridge exists (and holds the gateway when
isGateway), create the veth pair with the pod end born in the pod's namespace as CNI_IFNAME, put the
host end on the bridge, address the pod end and add its routes; any failure undoes all of it.
DEL releases the addresses first and always, then removes the veth; every missing piece counts as
already deleted (bridge.go cmdAdd/cmdDel, host-local main.go).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from nodeagent.cni import masq
from nodeagent.cni.config import IPAMConfig, NetConf, Range
from nodeagent.cni.dispatcher import Request
from nodeagent.cni.errors import INVALID_CONFIG, NOT_AVAILABLE, UNKNOWN_CONTAINER, CNIError
from nodeagent.cni.ipam.allocator import Allocation, Allocator
from nodeagent.cni.ipam.store import DiskStore, Reservation
from nodeagent.cni.link import (
    HOST_VETH_PREFIX,
    HostLinks,
    configure_container,
    delete_container_link,
    host_veth_name,
    inspect_container,
    pod_mac,
    set_ip_forward,
)

log = logging.getLogger("nodeagent.cni")

CHECK_FAILED = 101
# Fault injection for the crash-recovery tests: the standalone plugin SIGKILLs itself at the named
# step of ADD ("ipam", "veth", "address"), exactly like a `kill -9` from outside at that moment.
CRASH_ENV = "NODEAGENT_CNI_TEST_CRASH_AT"
# A reservation younger than this may belong to an ADD still in flight: never reclaim it.
RECLAIM_MIN_AGE = 30.0


def _crash_point(step: str) -> None:
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


class BridgePlugin:
    """One instance serves many requests in the daemon (netlink socket and caches kept), or one
    request in a standalone exec."""

    def __init__(self) -> None:
        self._host: HostLinks | None = None
        self._stores: dict[tuple[str, str], DiskStore] = {}
        self._masq_done: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()
        self._forwarding = False

    # --- shared pieces ---------------------------------------------------------------------
    @property
    def host(self) -> HostLinks:
        with self._lock:
            if self._host is None:
                self._host = HostLinks()
            return self._host

    def close(self) -> None:
        if self._host is not None:
            self._host.close()

    def store(self, ipam: IPAMConfig, network: str) -> DiskStore:
        key = (ipam.data_dir, network)
        with self._lock:
            if key not in self._stores:
                self._stores[key] = DiskStore(ipam.data_dir, network)
            return self._stores[key]

    def allocator(self, conf: NetConf) -> Allocator:
        assert conf.ipam is not None
        return Allocator(conf.ipam, self.store(conf.ipam, conf.name))

    def is_stale(self, network: str, r: Reservation) -> bool:
        """A reservation whose host veth is gone belongs to a pod whose namespace vanished (node
        reboot, netns deleted without DEL): the address can be handed out again."""
        if time.time() - r.mtime < RECLAIM_MIN_AGE:
            return False
        return self.host.index(host_veth_name(network, r.container_id, r.ifname)) is None

    def recover(self, conf: NetConf) -> list[Reservation]:
        freed = self.allocator(conf).release_unless(lambda r: not self.is_stale(conf.name, r))
        for r in freed:
            log.info("ipam recovered network=%s ip=%s container=%s ifname=%s", conf.name, r.ip, r.container_id, r.ifname)
        return freed

    def resync(self, conf: NetConf) -> None:
        """The daemon's periodic look at the machine for its network: addresses of vanished pods
        back to the pool, the masquerade chain and forwarding put back if someone removed them."""
        self.recover(conf)
        assert conf.ipam is not None
        ranges = [rs[0] for rs in conf.ipam.range_sets]
        if conf.ip_masq:
            for r in ranges:
                self._ensure_masq(conf, r, force=True)
        if conf.is_gateway and self.host.index(conf.bridge) is not None:
            for family in sorted({r.subnet.version for r in ranges}):
                set_ip_forward(family)

    # --- ADD -------------------------------------------------------------------------------
    def add(self, req: Request) -> dict[str, Any]:
        conf = req.conf
        if not os.path.exists(req.netns):
            raise CNIError(UNKNOWN_CONTAINER, "pod network namespace not found",
                           f"CNI_NETNS={req.netns} does not exist")
        alloc = self.allocator(conf)
        allocations = alloc.allocate(req.container_id, req.ifname,
                                     is_stale=lambda r: self.is_stale(conf.name, r))
        host_name = host_veth_name(conf.name, req.container_id, req.ifname)
        created = False
        try:
            result = self._add_links(req, allocations, host_name)
            created = True
            return result
        finally:
            if not created:
                self._rollback(req, host_name)

    def _rollback(self, req: Request, host_name: str) -> None:
        log.info("cni add rollback container=%s ifname=%s", req.container_id, req.ifname)
        try:
            self.host.delete(host_name)
        except Exception:
            log.exception("rollback: deleting veth %s failed", host_name)
        try:
            self.allocator(req.conf).release(req.container_id, req.ifname)
        except Exception:
            log.exception("rollback: releasing addresses of %s failed", req.container_id)

    def _add_links(self, req: Request, allocations: list[Allocation], host_name: str) -> dict[str, Any]:
        conf = req.conf
        _crash_point("ipam")
        host = self.host
        br, br_mac = host.ensure_bridge(conf.bridge, conf.mtu, conf.promisc_mode)
        if conf.is_gateway:
            for a in allocations:
                host.ensure_address(br, a.range.gateway, a.range.subnet.prefixlen)
            self._ensure_forwarding(allocations)
        mac = pod_mac(allocations[0].ip)
        create = (host_name, req.netns, req.ifname, conf.mtu, mac)
        try:
            try:
                veth = host.create_veth(*create, br, conf.hairpin_mode)
            except FileExistsError:
                # Our own veth, left by an ADD killed half-way: replace it (its peer goes with it).
                if not host.delete(host_name):
                    raise CNIError(INVALID_CONFIG, "container interface name already exists",
                                   f"{req.ifname} already exists in {req.netns}; pick another CNI_IFNAME") from None
                log.info("cni add removed stale veth=%s container=%s", host_name, req.container_id)
                veth = host.create_veth(*create, br, conf.hairpin_mode)
        except CNIError:
            raise
        except Exception as e:
            # Most likely cni0 was deleted or replaced behind our back and the cached index is
            # stale (the kernel answers EINVAL/ENODEV for the master): look the bridge up (or
            # create it) again and retry once; a second failure is reported as it is.
            log.info("cni add retrying with a fresh bridge lookup bridge=%s err=%s", conf.bridge, e)
            host.delete(host_name)
            host.forget_bridge(conf.bridge)
            br, br_mac = host.ensure_bridge(conf.bridge, conf.mtu, conf.promisc_mode)
            if conf.is_gateway:
                for a in allocations:
                    host.ensure_address(br, a.range.gateway, a.range.subnet.prefixlen)
            veth = host.create_veth(*create, br, conf.hairpin_mode)
        _crash_point("veth")
        routes: list[tuple[str, str | None]] = []
        result_routes: list[dict[str, Any]] = []
        if conf.is_default_gateway:
            for a in allocations:
                dst = "0.0.0.0/0" if a.ip.version == 4 else "::/0"
                routes.append((dst, str(a.range.gateway)))
                result_routes.append({"dst": dst, "gw": str(a.range.gateway)})
        assert conf.ipam is not None
        for r in conf.ipam.routes:
            # A route without gw goes through the gateway of its family (host-local/bridge).
            gw = r.gw or next((a.range.gateway for a in allocations if a.ip.version == r.dst.version), None)
            if conf.is_default_gateway and r.dst.prefixlen == 0:
                continue
            routes.append((str(r.dst), str(gw) if gw else None))
            result_routes.append({"dst": str(r.dst), **({"gw": str(gw)} if gw else {})})
        configure_container(req.netns, veth.peer_index,
                            [(str(a.ip), a.range.subnet.prefixlen) for a in allocations], routes)
        _crash_point("address")
        if conf.ip_masq:
            for a in allocations:
                self._ensure_masq(conf, a.range)
        log.info("cni add container=%s ifname=%s veth=%s ips=%s", req.container_id, req.ifname, host_name,
                 ",".join(str(a.ip) for a in allocations))
        return {
            "cniVersion": req.conf.cni_version,
            "interfaces": [
                {"name": conf.bridge, "mac": br_mac},
                {"name": host_name, "mac": veth.mac},
                {"name": req.ifname, "mac": mac, "mtu": veth.mtu, "sandbox": req.netns},
            ],
            "ips": [
                {"address": a.range.prefixed(a.ip), "gateway": str(a.range.gateway), "interface": 2}
                for a in allocations
            ],
            "routes": result_routes,
            "dns": conf.dns,
        }

    def _ensure_masq(self, conf: NetConf, r: Range, force: bool = False) -> None:
        """Once per network and subnet in a daemon's life (its resync loop usually does it before
        the first ADD, which then pays no iptables exec); `force` re-checks the machine."""
        assert conf.ipam is not None
        key = (conf.name, str(r.subnet), str(conf.cluster_cidr))
        if force or key not in self._masq_done:
            masq.ensure(conf.name, r.subnet, conf.cluster_cidr or r.subnet, conf.ipam.data_dir)
            self._masq_done.add(key)

    def _ensure_forwarding(self, allocations: list[Allocation]) -> None:
        if self._forwarding:
            return
        for family in sorted({a.ip.version for a in allocations}):
            set_ip_forward(family)
        self._forwarding = True

    # --- DEL -------------------------------------------------------------------------------
    def delete(self, req: Request) -> None:
        conf = req.conf
        released = self.allocator(conf).release(req.container_id, req.ifname)  # always, first
        host_name = host_veth_name(conf.name, req.container_id, req.ifname)
        removed = self.host.delete(host_name)
        if not removed and req.netns and os.path.exists(req.netns):
            # Not our naming (or already half gone): remove the pod end if it is still there.
            try:
                removed = delete_container_link(req.netns, req.ifname)
            except OSError as e:  # the namespace vanished meanwhile: nothing left to delete
                log.info("cni del netns gone container=%s err=%s", req.container_id, e)
        log.info("cni del container=%s ifname=%s released=%s veth_removed=%s", req.container_id, req.ifname,
                 ",".join(map(str, released)), removed)

    # --- CHECK ------------------------------------------------------------------------------
    def check(self, req: Request) -> None:
        conf = req.conf
        prev = conf.prev_result
        if not prev:
            raise CNIError(INVALID_CONFIG, "prevResult is required for CHECK",
                           "the runtime must pass the ADD result as prevResult")
        want_ips = {ip["address"] for ip in prev.get("ips", []) if isinstance(ip, dict) and "address" in ip}
        held = {str(ip) for ip in self.allocator(conf).store.get_by_id(req.container_id, req.ifname)}
        for address in want_ips:
            if address.split("/")[0] not in held:
                raise CNIError(CHECK_FAILED, "address not reserved",
                               f"{address} of {req.container_id}/{req.ifname} is not in the IPAM store")
        br = self.host.index(conf.bridge)
        if br is None:
            raise CNIError(CHECK_FAILED, "bridge missing", f"bridge {conf.bridge} does not exist")
        host_name = host_veth_name(conf.name, req.container_id, req.ifname)
        idx = self.host.index(host_name)
        if idx is None or self.host.master(idx) != br:
            raise CNIError(CHECK_FAILED, "host veth missing",
                           f"{host_name} is missing or not attached to {conf.bridge}")
        state = inspect_container(req.netns, req.ifname)
        if not state.exists:
            raise CNIError(CHECK_FAILED, "container interface missing", f"{req.ifname} not found in {req.netns}")
        if state.kind != "veth":
            raise CNIError(CHECK_FAILED, "container interface is not a veth", f"{req.ifname} is a {state.kind}")
        for address in want_ips:
            if address not in state.addresses:
                raise CNIError(CHECK_FAILED, "container address missing",
                               f"{address} is not on {req.ifname} in {req.netns} (has {sorted(state.addresses)})")
        for route in prev.get("routes", []):
            key = (route.get("dst"), route.get("gw"))
            if key not in state.routes and (key[0], None) not in state.routes:
                raise CNIError(CHECK_FAILED, "container route missing",
                               f"route {key[0]} via {key[1]} is not in {req.netns}")

    # --- GC ---------------------------------------------------------------------------------
    def gc(self, req: Request) -> None:
        """Release every reservation (and remove every veth of ours on the bridge) whose attachment
        is not in cni.dev/valid-attachments (CNI spec 1.1.0, GC)."""
        conf = req.conf
        valid = set(conf.valid_attachments or ())
        freed = self.allocator(conf).release_unless(lambda r: (r.container_id, r.ifname) in valid)
        keep = {host_veth_name(conf.name, cid, ifn) for cid, ifn in valid}
        br = self.host.index(conf.bridge)
        removed = []
        if br is not None:
            for port in self.host.bridge_ports(br):
                if port.startswith(HOST_VETH_PREFIX) and len(port) == 15 and port not in keep:
                    self.host.delete(port)
                    removed.append(port)
        log.info("cni gc network=%s released=%s veths_removed=%s", conf.name,
                 ",".join(str(r.ip) for r in freed), ",".join(removed))

    # --- STATUS -----------------------------------------------------------------------------
    def status(self, req: Request) -> None:
        conf = req.conf
        assert conf.ipam is not None
        try:
            store = self.store(conf.ipam, conf.name)
            with store.lock():
                pass
        except OSError as e:
            raise CNIError(NOT_AVAILABLE, "IPAM store unavailable", f"{conf.ipam.data_dir}: {e}") from None
