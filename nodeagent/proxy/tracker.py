"""Change trackers shared by every back end (upstream pkg/proxy/servicechangetracker.go and
endpointschangetracker.go; ARCHITECTURE.md practice 5).

Informer handlers call `update`; they are quick and only record {previous, current} per Service.
A change that returns a Service to what the proxy last applied is dropped, so a resync or a
status-only update costs nothing. The sync loop then calls `ServiceMap.apply` / `EndpointsMap.apply`,
which fold the pending changes in and return the set of changed Services, which is what a partial
sync re-renders. Back ends never see informer events; they only render the two maps.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from nodeagent.proxy.model import (
    TRIGGER_TIME_ANNOTATION,
    Endpoint,
    ServicePort,
    ServicePortName,
    service_ports,
    slice_endpoints,
    slice_service_name,
)

ServicePorts = dict[ServicePortName, ServicePort]
EndpointsByPort = dict[ServicePortName, tuple[Endpoint, ...]]


class ChangeReporter(Protocol):
    """Where a tracker reports for upstream's kubeproxy_sync_proxy_rules_{service,endpoint}_changes_*
    metrics (metrics.ChangeMetrics); kept a protocol so the trackers need no Prometheus."""

    def observed(self) -> None:
        """An informer event the tracker considered (no-ops included, as upstream counts them)."""

    def pending(self, count: int) -> None:
        """How many Services have changes waiting for the next sync."""


@dataclass
class _Change:
    previous: Any
    current: Any


def _svc_key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta['name']}"


class ServiceChangeTracker:
    """Pending Service changes, {previous, current} service ports per ns/name."""

    def __init__(self, reporter: ChangeReporter | None = None) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, _Change] = {}
        self._reporter = reporter

    def update(self, previous: dict[str, Any] | None, current: dict[str, Any] | None) -> bool:
        """Record a Service add (previous None), update or delete (current None). Returns whether
        anything is pending for that Service afterwards."""
        obj = current if current is not None else previous
        if obj is None:
            return False
        if self._reporter is not None:
            self._reporter.observed()
        key = _svc_key(obj)
        cur = service_ports(current) if current is not None else {}
        with self._lock:
            change = self._items.get(key)
            if change is None:
                prev = service_ports(previous) if previous is not None else {}
                change = self._items[key] = _Change(prev, cur)
            else:
                change.current = cur
            if change.previous == change.current:  # no-op: back to what was last applied
                del self._items[key]
            self._report_pending()
            return key in self._items

    def _report_pending(self) -> None:
        # under the lock, so that a take() on the sync thread and an update here cannot leave the
        # gauge showing the older of the two counts
        if self._reporter is not None:
            self._reporter.pending(len(self._items))

    def take(self) -> dict[str, _Change]:
        with self._lock:
            items, self._items = self._items, {}
            self._report_pending()
            return items

    def pending(self) -> bool:
        with self._lock:
            return bool(self._items)


@dataclass
class ServiceUpdateResult:
    changed: set[str] = field(default_factory=set)  # ns/name of Services whose ports changed
    deleted_udp_cluster_ips: set[str] = field(default_factory=set)  # for conntrack cleanup
    previous: dict[ServicePortName, ServicePort] = field(default_factory=dict)  # before, of changed ones


class ServiceMap:
    """The applied Services: ServicePortName -> ServicePort."""

    def __init__(self) -> None:
        self.ports: ServicePorts = {}
        self.by_service: dict[str, list[ServicePortName]] = {}  # ns/name -> its ports
        # ns/name -> healthCheckNodePort, kept here so the health server's input costs O(changed)
        self.health_check_ports: dict[str, int] = {}

    def apply(self, tracker: ServiceChangeTracker) -> ServiceUpdateResult:
        result = ServiceUpdateResult()
        for key, change in tracker.take().items():
            for spn in self.by_service.get(key, ()):
                result.previous[spn] = self.ports[spn]
            for spn, sp in change.previous.items():
                if spn not in change.current:
                    self.ports.pop(spn, None)
                    if sp.protocol == "UDP":
                        result.deleted_udp_cluster_ips.add(sp.cluster_ip)
            self.ports.update(change.current)
            if change.current:
                self.by_service[key] = sorted(change.current, key=lambda s: (s.port, s.protocol))
            else:
                self.by_service.pop(key, None)
            # one per Service (a Service field): any of its ports carries it
            hc = next((sp.health_check_node_port for sp in change.current.values() if sp.health_check_node_port), 0)
            if hc:
                self.health_check_ports[key] = hc
            else:
                self.health_check_ports.pop(key, None)
            result.changed.add(key)
        # an IP still used by another UDP port must keep its entries
        still = {sp.cluster_ip for sp in self.ports.values() if sp.protocol == "UDP"}
        result.deleted_udp_cluster_ips -= still
        return result


def _trigger_time(obj: dict[str, Any]) -> float | None:
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(TRIGGER_TIME_ANNOTATION)
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class EndpointsChangeTracker:
    """Pending EndpointSlice changes, merged per Service: {previous, current} endpoints by port.

    The slices of a Service are cached by slice name, because one Service's endpoints are the union
    of its slices (upstream EndpointSliceCache)."""

    def __init__(self, node_name: str, clock: Any = time.time, reporter: ChangeReporter | None = None) -> None:
        self.node_name = node_name
        self._clock = clock
        self._reporter = reporter
        self._lock = threading.Lock()
        self._slices: dict[str, dict[str, EndpointsByPort]] = {}  # svc -> slice name -> endpoints
        self._items: dict[str, _Change] = {}
        self._trigger: dict[str, float] = {}  # svc -> earliest unapplied change time

    def _merged(self, svc: str) -> EndpointsByPort:
        merged: dict[ServicePortName, dict[str, Endpoint]] = {}
        for by_port in self._slices.get(svc, {}).values():
            for spn, eps in by_port.items():
                bucket = merged.setdefault(spn, {})
                for e in eps:
                    old = bucket.get(e.address)
                    if old is None or (e.ready and not old.ready):  # duplicates: prefer ready
                        bucket[e.address] = e
        return {spn: tuple(sorted(b.values())) for spn, b in merged.items()}

    def update(self, eps: dict[str, Any], removed: bool = False) -> bool:
        """Record an EndpointSlice add/update (removed False) or delete. Returns whether anything
        is pending for its Service afterwards."""
        svc = slice_service_name(eps)
        # another address family's slice never changes what this IPv4 proxy programs (and upstream
        # does not count it as a change either)
        if svc is None or (eps.get("addressType") or "IPv4") != "IPv4":
            return False
        if self._reporter is not None:
            self._reporter.observed()
        slice_name = (eps.get("metadata") or {}).get("name") or ""
        with self._lock:
            before = self._merged(svc)
            slices = self._slices.setdefault(svc, {})
            if removed:
                slices.pop(slice_name, None)
                if not slices:
                    del self._slices[svc]
            else:
                slices[slice_name] = slice_endpoints(eps, self.node_name)
            after = self._merged(svc)
            change = self._items.get(svc)
            if change is None:
                change = self._items[svc] = _Change(before, after)
            else:
                change.current = after
            if change.previous == change.current:
                del self._items[svc]
                self._trigger.pop(svc, None)
                self._report_pending()
                return False
            t = _trigger_time(eps) if not removed else None
            t = t if t is not None else self._clock()
            self._trigger[svc] = min(self._trigger.get(svc, t), t)
            self._report_pending()
            return True

    def _report_pending(self) -> None:
        # Services with pending endpoint changes. Upstream adds one per slice event instead, but our
        # tracker merges a Service's slices and drops changes that cancel out, so what waits for
        # the next sync is this count (the same measure as the Service changes gauge).
        if self._reporter is not None:
            self._reporter.pending(len(self._items))

    def take(self) -> tuple[dict[str, _Change], dict[str, float]]:
        with self._lock:
            items, self._items = self._items, {}
            trig, self._trigger = self._trigger, {}
            self._report_pending()
            return items, trig

    def pending(self) -> bool:
        with self._lock:
            return bool(self._items)


@dataclass
class EndpointsUpdateResult:
    changed: set[str] = field(default_factory=set)
    previous: dict[ServicePortName, tuple[Endpoint, ...]] = field(default_factory=dict)  # before, of changed
    # (service port, endpoint) pairs that went away, for UDP conntrack cleanup
    deleted_endpoints: set[tuple[ServicePortName, Endpoint]] = field(default_factory=set)
    trigger_times: dict[str, float] = field(default_factory=dict)  # svc -> change time


class EndpointsMap:
    """The applied endpoints: ServicePortName -> endpoints."""

    def __init__(self) -> None:
        self.endpoints: EndpointsByPort = {}

    def apply(self, tracker: EndpointsChangeTracker) -> EndpointsUpdateResult:
        items, trig = tracker.take()
        result = EndpointsUpdateResult(trigger_times=trig)
        for svc, change in items.items():
            for spn in change.previous.keys() | change.current.keys():
                result.previous[spn] = self.endpoints.get(spn, ())
            for spn, old in change.previous.items():
                new_addrs = {e.address for e in change.current.get(spn, ())}
                for e in old:
                    if e.address not in new_addrs:
                        result.deleted_endpoints.add((spn, e))
                if spn not in change.current:
                    self.endpoints.pop(spn, None)
            self.endpoints.update(change.current)
            result.changed.add(svc)
        return result
