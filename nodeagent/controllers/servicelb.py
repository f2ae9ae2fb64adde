"""LoadBalancer Services get an address from a pool (`--lb-address-pool`), as MetalLB's controller
and upstream's cloud service controller do (pkg/controller/service in cloud-provider): the address
goes into status.loadBalancer.ingress, where kube-proxy serves it and `nodeagent speaker` announces
it on the underlay.

The pool's state is the Services themselves: every address in a Service's status is taken, and
nothing is handed out before the informer has synced, so a restarted controller never gives an
address twice; when two Services claim one address (written by hand), the one seen first keeps it
and the other gets a new one. A Service that is deleted, changes type or sets spec.loadBalancerClass
(another implementation's, upstream's opt-out) gives its address back.

API needs (issue 14): get/list/watch services; patch services/status; create/patch events.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterator
from typing import Any

from nodeagent.controllers.base import Context, Controller
from nodeagent.machinery.kinds import SERVICES

log = logging.getLogger(__name__)

Obj = dict[str, Any]
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_pool(spec: str) -> list[tuple[IPAddr, IPAddr]]:
    """Comma-separated CIDRs or first-last ranges (MetalLB's address pool syntax)."""
    out: list[tuple[IPAddr, IPAddr]] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if "-" in part:
            a, b = (ipaddress.ip_address(x.strip()) for x in part.split("-", 1))
            if a.version != b.version or int(a) > int(b):
                raise ValueError(f"address range {part!r}: the first address must not be after the last")
            out.append((a, b))
        else:
            net = ipaddress.ip_network(part, strict=False)
            out.append((net.network_address, net.broadcast_address))
    if not out:
        raise ValueError("empty address pool")
    return out


class Pool:
    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.ranges = parse_pool(spec)
        self.owner: dict[str, str] = {}  # address -> ns/name of the Service holding it

    def contains(self, ip: str) -> bool:
        try:
            a = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(lo.version == a.version and int(lo) <= int(a) <= int(hi) for lo, hi in self.ranges)

    def addresses(self) -> Iterator[str]:
        for lo, hi in self.ranges:
            for n in range(int(lo), int(hi) + 1):
                yield str(ipaddress.ip_address(n))

    def size(self) -> int:
        return sum(int(hi) - int(lo) + 1 for lo, hi in self.ranges)

    def held_by(self, svc: str) -> list[str]:
        return sorted(ip for ip, o in self.owner.items() if o == svc)

    def claim(self, ip: str, svc: str) -> bool:
        """Record that svc holds ip; false when somebody else does."""
        if not self.contains(ip):
            return False
        holder = self.owner.setdefault(ip, svc)
        return holder == svc

    def allocate(self, svc: str, wanted: str | None = None) -> str:
        if wanted:
            if not self.contains(wanted):
                raise ValueError(f"requested address {wanted} is not in the pool {self.spec}")
            if self.owner.get(wanted, svc) != svc:
                raise ValueError(f"requested address {wanted} is already in use by {self.owner[wanted]}")
            self.owner[wanted] = svc
            return wanted
        for ip in self.addresses():
            if ip not in self.owner:
                self.owner[ip] = svc
                return ip
        raise ValueError(f"no available IPs: all {self.size()} addresses of the pool {self.spec} are in use")

    def release_all(self, svc: str) -> list[str]:
        freed = self.held_by(svc)
        for ip in freed:
            del self.owner[ip]
        return freed


def svc_key(svc: Obj) -> str:
    md = svc.get("metadata") or {}
    return f"{md.get('namespace', '')}/{md.get('name', '')}"


def status_ips(svc: Obj) -> list[str]:
    return [str(i["ip"]) for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if isinstance(i, dict) and i.get("ip")]


def wants_address(svc: Obj, lb_class: str | None = None) -> bool:
    """type LoadBalancer, not being deleted, and no loadBalancerClass (or ours): upstream's
    wantsLoadBalancer with the loadBalancerClass opt-out."""
    spec = svc.get("spec") or {}
    if spec.get("type") != "LoadBalancer" or (svc.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return spec.get("loadBalancerClass") in (None, "", lb_class) if lb_class else not spec.get("loadBalancerClass")


class ServiceLBController(Controller):
    name = "servicelb"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        spec = str(ctx.options.extra.get("lb_address_pool") or "")
        self.lb_class: str | None = ctx.options.extra.get("load_balancer_class") or None
        self.pool = Pool(spec) if spec else None
        self.recorder = ctx.recorder("service-lb-controller")
        self.services = ctx.informers.get(SERVICES)
        self.services.add_handlers(on_add=self._seen, on_update=lambda _o, n: self._seen(n), on_delete=self._deleted)
        if self.pool is None:
            log.info("no --lb-address-pool: LoadBalancer Services keep <pending> external IPs")

    def _seen(self, svc: Obj) -> None:
        if self.pool is None:
            return
        k = svc_key(svc)
        for ip in status_ips(svc):
            self.pool.claim(ip, k)
        if svc.get("spec", {}).get("type") == "LoadBalancer" or self.pool.held_by(k):
            self.queue.add(k)

    def _deleted(self, svc: Obj) -> None:
        if self.pool is None:
            return
        freed = self.pool.release_all(svc_key(svc))
        if freed:
            log.info("released load-balancer addresses service=%s ips=%s", svc_key(svc), ",".join(freed))
            self._wake_waiting()

    def _wake_waiting(self) -> None:
        """An address came free: the Services still waiting for one try again."""
        for s in self.services.list():
            if wants_address(s, self.lb_class) and not status_ips(s):
                self.queue.add(svc_key(s))

    async def reconcile(self, key: str) -> None:
        if self.pool is None:
            return
        if not self.services.has_synced:
            self.queue.add_after(key, 0.5)  # every held address must be known before one is handed out
            return
        svc = self.services.get(key)
        if svc is None:
            self.pool.release_all(key)
            return
        if not wants_address(svc, self.lb_class):
            await self._give_back(key, svc)
            return
        mine = [ip for ip in status_ips(svc) if self.pool.contains(ip) and self.pool.claim(ip, key)]
        wanted = (svc.get("spec") or {}).get("loadBalancerIP") or None
        if mine and (not wanted or wanted in mine):
            return
        for ip in mine:
            del self.pool.owner[ip]
        try:
            ip = self.pool.allocate(key, wanted)
        except ValueError as e:
            self.recorder.event(svc, "Warning", "SyncLoadBalancerFailed", f"Error syncing load balancer: {e}")
            log.warning("no load-balancer address service=%s error=%s", key, e)
            return
        ns, _, name = key.partition("/")
        try:
            await self.client.patch(SERVICES, name, {"status": {"loadBalancer": {"ingress": [
                {"ip": ip, "ipMode": "VIP"}]}}}, namespace=ns, subresource="status")
        except Exception:
            self.pool.owner.pop(ip, None)
            raise
        self.recorder.event(svc, "Normal", "IPAllocated", f'Assigned IP ["{ip}"]')
        log.info("assigned load-balancer address service=%s ip=%s", key, ip)

    async def _give_back(self, key: str, svc: Obj) -> None:
        """Type changed or another class: free our addresses and clear what we wrote."""
        assert self.pool is not None
        ours = [ip for ip in status_ips(svc) if self.pool.owner.get(ip) == key]
        self.pool.release_all(key)
        if ours:
            ns, _, name = key.partition("/")
            # a merge patch: null removes the list ({} would merge into the old value and keep it)
            await self.client.patch(SERVICES, name, {"status": {"loadBalancer": {"ingress": None}}}, namespace=ns,
                                    subresource="status")
            self._wake_waiting()
            log.info("cleared load-balancer status service=%s ips=%s", key, ",".join(ours))
