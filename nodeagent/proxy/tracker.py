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
from typing import Any

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


@dataclass
class _Change:
    previous: Any
    current: Any


def _svc_key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta['name']}"


class ServiceChangeTracker:
    """Pending Service changes, {previous, current} service ports per ns/name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, _Change] = {}

    def update(self, previous: dict[str, Any] | None, current: dict[str, Any] | None) -> bool:
        """Record a Service add (previous None), update or delete (current None). Returns whether
        anything is pending for that Service afterwards."""
        obj = current if current is not None else previous
        if obj is None:
            return False
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
                return False
            return True

    def take(self) -> dict[str, _Change]:
        with self._lock:
            items, self._items = self._items, {}
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

    def __init__(self, node_name: str, clock: Any = time.time) -> None:
        self.node_name = node_name
        self._clock = clock
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
        if svc is None:
            return False
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
                return False
            t = _trigger_time(eps) if not removed else None
            t = t if t is not None else self._clock()
            self._trigger[svc] = min(self._trigger.get(svc, t), t)
            return True

    def take(self) -> tuple[dict[str, _Change], dict[str, float]]:
        with self._lock:
            items, self._items = self._items, {}
            trig, self._trigger = self._trigger, {}
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
