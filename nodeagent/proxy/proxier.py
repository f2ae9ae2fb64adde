"""The sync loop shared by every back end.

Informer handlers feed the change trackers and wake the loop. The loop waits at least
`min_sync_period` between syncs (batching a burst of changes into one), and syncs at least every
`sync_period` anyway (partial, but a vanished canary turns it into a full one). A sync applies the
trackers to the maps, hands the back end the changed Services, and on success deletes stale UDP
conntrack entries, records metrics and tells the healthCheckNodePort server (healthcheck.py) how
many ready endpoints each Service has here. A failed sync is retried, as a full sync, after
`min_sync_period` (upstream's BoundedFrequencyRunner and syncProxyRules).

Metrics follow upstream's names (metrics.py): the trackers report Service/EndpointSlice changes
seen and pending, and each successful sync recounts the service ports with a Local policy but no
local endpoint (kubeproxy_sync_proxy_rules_no_local_endpoints_total), for changed Services only.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nodeagent.proxy.backend import Backend, ProxyState
from nodeagent.proxy.conntrack import ConntrackCleaner
from nodeagent.proxy.healthcheck import ServiceHealthUpdater, local_ready_endpoints
from nodeagent.proxy.metrics import TRAFFIC_POLICIES, Health, ProxyMetrics
from nodeagent.proxy.model import ZONE_LABEL, Endpoint, NodeInfo, ServicePort, ServicePortName, categorize
from nodeagent.proxy.tracker import (
    EndpointsChangeTracker,
    EndpointsMap,
    EndpointsUpdateResult,
    ServiceChangeTracker,
    ServiceMap,
    ServiceUpdateResult,
)

log = logging.getLogger(__name__)

# Periodic syncs are partial (cheap, and they check the canary); everything is rewritten at least
# this often anyway, as upstream's proxyutil.FullSyncPeriod.
FULL_SYNC_PERIOD = 3600.0


def node_ips(node: dict[str, Any]) -> tuple[str, ...]:
    addrs = ((node.get("status") or {}).get("addresses")) or []
    return tuple(a["address"] for a in addrs if a.get("type") in ("InternalIP", "ExternalIP") and a.get("address"))


def node_info(name: str, node: dict[str, Any] | None) -> NodeInfo:
    """What the back ends need of this Node (a deleted Node leaves only the name)."""
    if node is None:
        return NodeInfo(name)
    labels = (node.get("metadata") or {}).get("labels") or {}
    return NodeInfo(name, node_ips(node), zone=labels.get(ZONE_LABEL) or "")


def _had_endpoints(spn: ServicePortName, state: ProxyState, svc_res: ServiceUpdateResult,
                   ep_res: EndpointsUpdateResult) -> bool:
    """Whether the port was served before this sync's changes (a new port was not)."""
    sp = svc_res.previous.get(spn) if spn.service in svc_res.changed else state.services.get(spn)
    eps = ep_res.previous.get(spn, state.endpoints.get(spn, ()))
    return sp is not None and bool(categorize(sp, eps, zone=state.node.zone).cluster)


def no_local_endpoints(sp: ServicePort, endpoints: tuple[Endpoint, ...]) -> tuple[bool, bool]:
    """(internal, external): whether the port's traffic under that policy is dropped for want of a
    local endpoint while the Service does have endpoints (upstream's syncProxyRules counts exactly
    these; a port with no endpoints at all is rejected, not counted). Zone hints never change it:
    they only narrow Cluster-policy endpoints, never to none."""
    if not (sp.internal_policy_local or sp.external_policy_local):
        return False, False  # the common case, without categorizing (hot at 10k Services)
    eps = categorize(sp, endpoints)
    if not eps.all_reachable or eps.local:
        return False, False
    return sp.internal_policy_local, sp.external_policy_local


class Proxier:
    def __init__(self, backend: Backend, node_name: str, cluster_cidr: str | None = None,
                 metrics: ProxyMetrics | None = None, conntrack: ConntrackCleaner | None = None,
                 min_sync_period: float = 1.0, sync_period: float = 30.0,
                 health: Health | None = None, wall_clock: Callable[[], float] = time.time,
                 nodeport_addresses: tuple[str, ...] = (),
                 service_health: ServiceHealthUpdater | None = None) -> None:
        self.backend = backend
        self.cluster_cidr = cluster_cidr
        self.nodeport_addresses = nodeport_addresses
        self.metrics = metrics or ProxyMetrics()
        self.conntrack = conntrack
        self.min_sync_period = min_sync_period
        self.sync_period = sync_period
        self.health = health or Health(timeout=2 * sync_period)
        self.service_health = service_health  # the healthCheckNodePort listeners, if any
        self.wall_clock = wall_clock
        self.node = NodeInfo(node_name)
        self.svc_tracker = ServiceChangeTracker(reporter=self.metrics.service_changes)
        self.ep_tracker = EndpointsChangeTracker(node_name, clock=wall_clock, reporter=self.metrics.endpoint_changes)
        self.svc_map = ServiceMap()
        self.ep_map = EndpointsMap()
        self._changed: set[str] = set()  # applied to the maps but not yet synced successfully
        self._pending_udp_ips: set[str] = set()
        self._pending_eps: set[tuple[ServicePortName, Endpoint]] = set()
        self._pending_trigger: dict[str, float] = {}
        # ns/name -> (internal, external) counts of its ports without local endpoints; only Services
        # with a non-zero count, so that a sync recounts changed Services and sums a short list
        self._no_local: dict[str, tuple[int, int]] = {}
        self.full_sync_period = FULL_SYNC_PERIOD
        self._force_full = True
        self._sync_lock = threading.Lock()
        self._wake: asyncio.Event | None = None
        self.services_synced = False
        self.endpoints_synced = False
        self.sync_count = 0

    # -- informer handlers (on the event loop; quick) ----------------------------------------
    def _queued(self) -> None:
        self.health.queued()
        self.metrics.last_queued.set(self.wall_clock())
        if self._wake is not None:
            self._wake.set()

    def on_service(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if self.svc_tracker.update(old, new):
            self._queued()

    def on_endpoint_slice(self, obj: dict[str, Any], removed: bool = False) -> None:
        if self.ep_tracker.update(obj, removed):
            self._queued()

    def on_node(self, node: dict[str, Any] | None) -> None:
        self.health.sync_node(node)
        info = node_info(self.node.name, node)
        if info != self.node:
            if info.zone != self.node.zone:
                log.info("node zone changed node=%s zone=%s previous=%s", info.name, info.zone or "-",
                         self.node.zone or "-")
            # every rendered rule may depend on the IPs (node ports) or the zone (topology hints)
            self.node = info
            self._force_full = True
            self._queued()

    def handlers(self) -> dict[str, dict[str, Callable[..., None]]]:
        """Informer handler sets for Services, EndpointSlices and this Node."""
        return {
            "services": {"on_add": lambda o: self.on_service(None, o),
                         "on_update": lambda a, b: self.on_service(a, b),
                         "on_delete": lambda o: self.on_service(o, None)},
            "endpointslices": {"on_add": lambda o: self.on_endpoint_slice(o),
                               "on_update": lambda a, b: self.on_endpoint_slice(b),
                               "on_delete": lambda o: self.on_endpoint_slice(o, removed=True)},
            "nodes": {"on_add": lambda o: self.on_node(o),
                      "on_update": lambda a, b: self.on_node(b),
                      "on_delete": lambda o: self.on_node(None)},
        }

    def state(self) -> ProxyState:
        """The applied maps themselves, not copies (O(1) per sync at 10k Services): back ends only
        read them, and only this loop, under the sync lock, changes them."""
        return ProxyState(self.svc_map.ports, self.ep_map.endpoints, self.node, self.cluster_cidr,
                          nodeport_addresses=self.nodeport_addresses, _by_service=self.svc_map.by_service)

    # -- one sync (blocking; call from a worker thread) ---------------------------------------
    def sync_once(self, force_full: bool = False) -> bool:
        """Apply pending changes and sync the back end. Returns True on success."""
        # A sync allocates a great many short-lived objects while the maps and render caches keep
        # ~1M long-lived ones tracked, so the cyclic GC's collections during a sync each walked
        # those: 0.2 s of a 0.5 s render of 10k Services (measured). Collection waits for the end.
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._sync_once(force_full)
        finally:
            if enabled:
                gc.enable()

    def _sync_once(self, force_full: bool) -> bool:
        with self._sync_lock:
            start = time.monotonic()
            svc_res = self.svc_map.apply(self.svc_tracker)
            ep_res = self.ep_map.apply(self.ep_tracker)
            self._changed |= svc_res.changed | ep_res.changed
            self._pending_udp_ips |= svc_res.deleted_udp_cluster_ips
            self._pending_eps |= ep_res.deleted_endpoints
            self._pending_trigger = {**ep_res.trigger_times, **self._pending_trigger}
            full = force_full or self._force_full
            state = self.state()
            try:
                result = self.backend.sync(state, None if full else set(self._changed))
            except Exception as e:
                self._force_full = True
                self.metrics.sync_failures.inc()
                log.error("sync failed backend=%s services=%d error=%s; retrying as a full sync",
                          self.backend.name, len(state.services), e)
                return False
            elapsed = time.monotonic() - start
            now = self.wall_clock()
            self._force_full = False
            self._count_no_local(state, None if full else self._changed)
            self._changed.clear()
            self.sync_count += 1
            self.metrics.sync_duration.observe(elapsed)
            (self.metrics.full_sync_duration if result.full else self.metrics.partial_sync_duration).observe(elapsed)
            self.metrics.last_timestamp.set(now)
            self.metrics.services.set(len(state.services))
            self.metrics.endpoints.set(sum(len(v) for v in state.endpoints.values()))
            for t in self._pending_trigger.values():
                self.metrics.network_programming.observe(max(0.0, now - t))
            self._pending_trigger = {}
            self.health.updated()
            if self.conntrack is not None:
                # UDP service ports that got their first usable endpoint (only changed ones can)
                newly: list[ServicePortName] = [
                    spn for svc in svc_res.changed | ep_res.changed for spn in state.ports_of(svc)
                    if spn.protocol == "UDP"
                    and not _had_endpoints(spn, state, svc_res, ep_res)
                    and categorize(state.services[spn], state.endpoints.get(spn, ()), zone=state.node.zone).cluster]
                try:
                    self.conntrack.cleanup(state.services, self._pending_udp_ips, self._pending_eps, newly,
                                           svc_res.previous)
                except OSError as e:
                    log.warning("conntrack cleanup failed error=%s", e)
            self._pending_udp_ips = set()
            self._pending_eps = set()
            self._update_service_health(state)
            log.info("synced backend=%s full=%s services=%d elapsed_ms=%.1f", self.backend.name, result.full,
                     len(state.services), elapsed * 1000)
            return True

    def _count_no_local(self, state: ProxyState, changed: set[str] | None) -> None:
        """Recount the ports without local endpoints of the `changed` Services (all on None) and
        set the gauge. Whether a port has local endpoints depends only on its Service and endpoints
        (a Node change forces a full sync), so recounting the changed ones keeps the totals exact."""
        if changed is None:
            self._no_local = {}
            changed = set(self.svc_map.by_service)
        for svc in changed:
            internal = external = 0
            for spn in state.ports_of(svc):
                i, e = no_local_endpoints(state.services[spn], state.endpoints.get(spn, ()))
                internal, external = internal + i, external + e
            if internal or external:
                self._no_local[svc] = (internal, external)
            else:
                self._no_local.pop(svc, None)
        totals = [sum(counts[i] for counts in self._no_local.values()) for i in range(len(TRAFFIC_POLICIES))]
        for policy, total in zip(TRAFFIC_POLICIES, totals, strict=True):
            self.metrics.no_local_endpoints.labels(traffic_policy=policy).set(total)

    def _update_service_health(self, state: ProxyState) -> None:
        """Hand the health server the Services with a healthCheckNodePort and their local ready
        endpoints. Never fails the sync: the rules are in place already."""
        if self.service_health is None:
            return
        ports = dict(self.svc_map.health_check_ports)
        try:
            self.service_health.update(ports, local_ready_endpoints(ports, state))
        except Exception as e:
            log.warning("health check update failed services=%d error=%s", len(ports), e)

    # -- the loop -----------------------------------------------------------------------------
    async def run(self, ready: Awaitable[Any] | None = None) -> None:
        """Sync whenever something changed (at most every min_sync_period) and at least every
        sync_period. `ready` gates the first sync until the informers have listed (a sync from
        half a list would delete rules of Services not seen yet)."""
        self._wake = asyncio.Event()
        if ready is not None:
            await ready
        loop = asyncio.get_running_loop()
        last_full = loop.time()
        while True:
            self._wake.clear()
            full = loop.time() - last_full >= self.full_sync_period
            ok = await asyncio.to_thread(self.sync_once, full)
            if ok and full:
                last_full = loop.time()
            await asyncio.sleep(self.min_sync_period)
            if not ok:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.sync_period)
            except TimeoutError:
                self.health.queued()  # the periodic sync is a queued sync too
