"""Node IPAM (range allocator): each Node gets spec.podCIDR / spec.podCIDRs, a /24 (by default) of
--cluster-cidr. The set of used ranges is rebuilt from the Nodes themselves at every start; there
is no other state (pkg/controller/nodeipam/ipam/range_allocator.go)."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from nodeagent.controllers.base import Context, Controller
from nodeagent.controllers.objects import name_of
from nodeagent.machinery.kinds import NODES

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class CIDRSet:
    def __init__(self, cluster_cidr: str, mask: int) -> None:
        self.net = ipaddress.ip_network(cluster_cidr, strict=False)
        if mask < self.net.prefixlen:
            raise ValueError(f"--node-cidr-mask-size {mask} is larger than --cluster-cidr {cluster_cidr}")
        self.mask = mask
        self.size = 2 ** (mask - self.net.prefixlen)
        self.used: set[int] = set()
        self.next = 0

    def index_of(self, cidr: str) -> int | None:
        try:
            sub = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return None
        if sub.version != self.net.version or not sub.subnet_of(self.net) or sub.prefixlen != self.mask:  # type: ignore[arg-type]
            return None
        return (int(sub.network_address) - int(self.net.network_address)) >> (self.net.max_prefixlen - self.mask)

    def occupy(self, cidr: str) -> None:
        i = self.index_of(cidr)
        if i is not None:
            self.used.add(i)

    def release(self, cidr: str) -> None:
        i = self.index_of(cidr)
        if i is not None:
            self.used.discard(i)

    def allocate(self) -> str:
        for step in range(self.size):
            i = (self.next + step) % self.size
            if i not in self.used:
                self.used.add(i)
                self.next = (i + 1) % self.size
                base = int(self.net.network_address) + (i << (self.net.max_prefixlen - self.mask))
                return str(ipaddress.ip_network((base, self.mask)))
        raise RuntimeError(f"CIDR allocation failed: all {self.size} /{self.mask} ranges of {self.net} are in use")


class NodeIpamController(Controller):
    name = "nodeipam"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder("cidrAllocator")
        self.cidrs = CIDRSet(ctx.options.cluster_cidr, ctx.options.node_cidr_mask_size)
        self.node_inf = ctx.informers.get(NODES)
        self.node_inf.add_handlers(on_add=self._seen, on_update=lambda _o, n: self._seen(n),
                                   on_delete=self._deleted)

    def _seen(self, node: Obj) -> None:
        spec = node.get("spec") or {}
        cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
        for c in cidrs:
            self.cidrs.occupy(c)
        if not cidrs:
            self.enqueue(node)

    def _deleted(self, node: Obj) -> None:
        for c in (node.get("spec") or {}).get("podCIDRs") or []:
            self.cidrs.release(c)

    async def reconcile(self, key: str) -> None:
        # every known Node's range must be counted before a new one is handed out
        if not self.node_inf.has_synced:
            self.queue.add_after(key, 0.5)
            return
        node = self.node_inf.get(key)
        if node is None or (node.get("spec") or {}).get("podCIDR"):
            return
        cidr = self.cidrs.allocate()
        try:
            await self.client.patch(NODES, name_of(node), {"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})
        except Exception:
            self.cidrs.release(cidr)
            self.recorder.event(node, "Warning", "CIDRNotAvailable", f"Node {name_of(node)} status is now: CIDRNotAvailable")
            raise
        log.info("allocated pod CIDR node=%s cidr=%s", name_of(node), cidr)
