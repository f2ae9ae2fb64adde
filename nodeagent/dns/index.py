"""The DNS server's view of the cluster: Services and their EndpointSlices, indexed for lookups.

The shared client's Informers keep the caches; this index is fed by their handlers (quick, plain
callables) and reshapes the objects into what a query needs: a Service by (namespace, name), the
ready endpoints of a Service merged over all its slices, and a reverse map for PTR queries.

Cached answers are dropped by what they read, not all at once: while `recording` is a set, every
lookup adds the Dep it read (a Service's name, a namespace's presence, the reverse map), and every
change calls the `on_change` listeners with the Deps it touched. An EndpointSlice update of one
Service then drops that Service's answers only, and the answers to everything else stay cached
(issue 23: the watch side kept off the answer path). `generation` still counts every change.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# discovery.k8s.io/v1: the label naming the Service a slice belongs to.
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

Obj = dict[str, Any]

# What an answer can depend on: ("svc", namespace, name) (the Service, its slices, its endpoints),
# ("ns", namespace) (whether any Service lives there), ("rev",) (the reverse map over all Services).
Dep = tuple[str, ...]
REVERSE: Dep = ("rev",)


def service_dep(namespace: str, name: str) -> Dep:
    return ("svc", namespace, name)


@dataclass(frozen=True)
class Endpoint:
    """One ready address of a Service (an endpoint of one of its EndpointSlices)."""

    address: str
    hostname: str  # endpoint.hostname, else "" (the DNS name then uses the dashed address)

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.address).version

    @property
    def label(self) -> str:
        """The leftmost label of this endpoint's own name (kubernetes/dns specification 2.4.1):
        its hostname, else the address with dots (or colons) replaced by dashes, as CoreDNS does."""
        return self.hostname or dashed(self.address)


@dataclass(frozen=True)
class EndpointPort:
    name: str
    port: int
    protocol: str  # "TCP" | "UDP" | "SCTP"


def dashed(address: str) -> str:
    return address.replace(".", "-").replace(":", "-")


def is_headless(svc: Obj) -> bool:
    return (svc.get("spec") or {}).get("clusterIP") == "None"


def cluster_ips(svc: Obj) -> list[str]:
    """spec.clusterIPs (dual stack), falling back to spec.clusterIP; never "None" or ""."""
    spec = svc.get("spec") or {}
    ips = list(spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []))
    return [ip for ip in ips if ip and ip != "None" and _valid_ip(ip)]


def _valid_ip(addr: str) -> bool:
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        return False
    return True


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or "default"), str(meta.get("name") or ""))


class ClusterIndex:
    """Services and EndpointSlices by name, kept current by informer handlers."""

    def __init__(self) -> None:
        self.generation = 0
        self._services: dict[tuple[str, str], Obj] = {}
        # (namespace, service name) -> {slice name: slice}
        self._slices: dict[tuple[str, str], dict[str, Obj]] = defaultdict(dict)
        self._ns_counts: dict[str, int] = defaultdict(int)
        self._reverse: dict[str, list[str]] | None = None  # built on first PTR query after a change
        self.recording: set[Dep] | None = None
        self.on_change: list[Callable[[list[Dep]], None]] = []

    # ---- informer handlers (plain callables, quick) ----
    def service_added(self, svc: Obj) -> None:
        key = _key(svc)
        deps = [service_dep(*key)]
        if key not in self._services:
            self._ns_counts[key[0]] += 1
            if self._ns_counts[key[0]] == 1:
                deps.append(("ns", key[0]))
        self._services[key] = svc
        self._changed(deps)

    def service_updated(self, old: Obj, new: Obj) -> None:
        self.service_added(new)

    def service_deleted(self, svc: Obj) -> None:
        key = _key(svc)
        deps = [service_dep(*key)]
        if self._services.pop(key, None) is not None:
            self._ns_counts[key[0]] -= 1
            if self._ns_counts[key[0]] <= 0:
                del self._ns_counts[key[0]]
                deps.append(("ns", key[0]))
        self._changed(deps)

    def slice_added(self, eps: Obj) -> None:
        ns, name = _key(eps)
        owner = ((eps.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not owner:
            return  # a slice of no Service gives no names
        self._slices[(ns, owner)][name] = eps
        self._changed([service_dep(ns, owner)])

    def slice_updated(self, old: Obj, new: Obj) -> None:
        old_owner = ((old.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
        new_owner = ((new.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
        if old_owner != new_owner:
            self.slice_deleted(old)
        self.slice_added(new)

    def slice_deleted(self, eps: Obj) -> None:
        ns, name = _key(eps)
        owner = ((eps.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not owner:
            return
        slices = self._slices.get((ns, owner))
        if slices is not None:
            slices.pop(name, None)
            if not slices:
                del self._slices[(ns, owner)]
        self._changed([service_dep(ns, owner)])

    def _changed(self, deps: list[Dep]) -> None:
        self.generation += 1
        self._reverse = None
        deps.append(REVERSE)  # every Service and slice change may change a PTR answer
        for listener in self.on_change:
            listener(deps)

    # ---- lookups (each records what it read while `recording` is set) ----
    def service(self, namespace: str, name: str) -> Obj | None:
        if self.recording is not None:
            self.recording.add(service_dep(namespace, name))
        return self._services.get((namespace, name))

    def has_namespace(self, namespace: str) -> bool:
        """A namespace is known when a Service lives in it (we watch no Namespaces)."""
        if self.recording is not None:
            self.recording.add(("ns", namespace))
        return namespace in self._ns_counts

    def endpoints(self, namespace: str, name: str) -> list[Endpoint]:
        """Ready endpoints of the Service over all its slices, each address once.

        EndpointConditions.ready: "nil should be interpreted as true". A Service with
        publishNotReadyAddresses also publishes the endpoints that are not ready.
        """
        if self.recording is not None:
            self.recording.add(service_dep(namespace, name))
        svc = self._services.get((namespace, name))
        publish_all = bool(svc and (svc.get("spec") or {}).get("publishNotReadyAddresses"))
        seen: dict[str, Endpoint] = {}
        for _, eps in sorted(self._slices.get((namespace, name), {}).items()):
            for ep in eps.get("endpoints") or []:
                ready = (ep.get("conditions") or {}).get("ready")
                if ready is False and not publish_all:
                    continue
                for addr in ep.get("addresses") or []:
                    if addr not in seen and _valid_ip(addr):
                        seen[addr] = Endpoint(addr, str(ep.get("hostname") or ""))
        return list(seen.values())

    def endpoint_ports(self, namespace: str, name: str) -> list[EndpointPort]:
        """The ports of the Service's slices (endpoint ports: targetPort numbers), each once."""
        if self.recording is not None:
            self.recording.add(service_dep(namespace, name))
        out: dict[tuple[str, str], EndpointPort] = {}
        for _, eps in sorted(self._slices.get((namespace, name), {}).items()):
            for p in eps.get("ports") or []:
                port = EndpointPort(str(p.get("name") or ""), int(p.get("port") or 0),
                                    str(p.get("protocol") or "TCP"))
                out.setdefault((port.name, port.protocol), port)
        return list(out.values())

    def reverse(self, pointer: str, domain: str) -> list[str]:
        """Names for a reverse-pointer owner name (4.3.2.1.in-addr.arpa): the Services whose
        ClusterIP it is, and the endpoints of headless Services (specification 2.3.4, 2.4.3)."""
        if self.recording is not None:
            self.recording.add(REVERSE)
        if self._reverse is None:
            recording, self.recording = self.recording, None  # the build reads every Service: one Dep
            try:
                self._reverse = self._build_reverse(domain)
            finally:
                self.recording = recording
        return self._reverse.get(pointer.rstrip(".").lower(), [])

    def _build_reverse(self, domain: str) -> dict[str, list[str]]:
        rev: dict[str, list[str]] = defaultdict(list)
        for (ns, name), svc in sorted(self._services.items()):
            for ip in cluster_ips(svc):
                try:
                    rev[ipaddress.ip_address(ip).reverse_pointer].append(f"{name}.{ns}.svc.{domain}")
                except ValueError:
                    continue
            if is_headless(svc):
                for ep in self.endpoints(ns, name):
                    rev[ipaddress.ip_address(ep.address).reverse_pointer].append(
                        f"{ep.label}.{name}.{ns}.svc.{domain}")
        return dict(rev)
