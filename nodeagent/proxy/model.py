"""What the proxy knows about Services and endpoints, as plain immutable values.

A Service with N ports becomes N service ports, each named `ns/name:portname` exactly as upstream's
ServicePortName prints (pkg/proxy/types.go); back ends key everything by that name. EndpointSlices
become Endpoint values per service port. Values compare by content so the change trackers can drop
no-op changes (an update that only touched the resourceVersion).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

log = logging.getLogger(__name__)

MASQ_MARK = "0x4000"  # upstream's --masquerade-bit 14: every mode marks packets to masquerade with it
DEFAULT_AFFINITY_TIMEOUT = 10800  # seconds; core/v1 defaults sessionAffinityConfig.clientIP.timeoutSeconds
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SERVICE_PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"
HEADLESS_LABEL = "service.kubernetes.io/headless"
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"
ZONE_LABEL = "topology.kubernetes.io/zone"  # core/v1 LabelTopologyZone, on Nodes
# Topology aware routing (KEP-2433): the annotation names since 1.27 and before it
TOPOLOGY_MODE_ANNOTATION = "service.kubernetes.io/topology-mode"
TOPOLOGY_HINTS_ANNOTATION = "service.kubernetes.io/topology-aware-hints"
# spec.trafficDistribution values that mean "same zone" (KEP-4444; PreferSameZone is KEP-3015's
# alias of PreferClose, and the EndpointSlice controller gives PreferSameNode endpoints zone hints
# too, for proxies that know only zones)
ZONE_TRAFFIC_DISTRIBUTIONS = frozenset({"PreferClose", "PreferSameZone", "PreferSameNode"})


@dataclass(frozen=True, order=True)
class ServicePortName:
    namespace: str
    name: str
    port: str  # the port's name, "" for a single unnamed port
    protocol: str  # "TCP" | "UDP" | "SCTP"

    @property
    def service(self) -> str:
        return f"{self.namespace}/{self.name}"

    def __str__(self) -> str:
        # upstream ServicePortName.String(): ns/name, plus ":port" when the port has a name
        return f"{self.namespace}/{self.name}:{self.port}" if self.port else f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ServicePort:
    """One port of one Service, with everything a back end renders."""

    name: ServicePortName
    cluster_ip: str
    port: int
    protocol: str
    node_port: int = 0
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()
    session_affinity_seconds: int = 0  # 0 = no ClientIP affinity
    external_policy_local: bool = False  # externalTrafficPolicy: Local (NodePort/LoadBalancer only)
    internal_policy_local: bool = False  # internalTrafficPolicy: Local
    # LoadBalancer only: client CIDRs allowed to reach the load-balancer IPs (spec.loadBalancerSourceRanges)
    load_balancer_source_ranges: tuple[str, ...] = ()
    # LoadBalancer with externalTrafficPolicy Local: the port the proxy answers health checks on
    health_check_node_port: int = 0
    # the Service asks for topology aware routing (annotation or trafficDistribution): categorize
    # then follows the endpoints' zone hints when they are complete (upstream topologyModeFromHints)
    topology_aware: bool = False

    @property
    def proto(self) -> str:
        return self.protocol.lower()

    @property
    def externally_accessible(self) -> bool:
        return bool(self.node_port or self.external_ips or self.load_balancer_ips)


@dataclass(frozen=True, order=True)
class Endpoint:
    ip: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: str = ""
    is_local: bool = False
    zone_hints: tuple[str, ...] = ()  # hints.forZones[].name, sorted: the zones that should use it

    @cached_property
    def address(self) -> str:  # hot in rendering: computed once per endpoint
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class NodeInfo:
    """This node, from its Node object: the name for the Local policies, the IPs for NodePorts,
    the zone (label topology.kubernetes.io/zone) for topology aware routing."""

    name: str
    ips: tuple[str, ...] = ()
    zone: str = ""


def _is_ipv4(ip: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(ip), ipaddress.IPv4Address)
    except ValueError:
        return False


def ips_in(cidrs: tuple[str, ...], ips: tuple[str, ...]) -> tuple[str, ...]:
    """The IPs (in their order) inside any of the CIDRs; an unparsable IP is in none."""
    nets = [ipaddress.ip_network(c) for c in cidrs]
    out = []
    for ip in ips:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            continue
        if any(addr in net for net in nets):
            out.append(ip)
    return tuple(out)


def _cidr(text: str) -> str:
    """An IPv4 CIDR in canonical form ("10.0.0.1/8" -> "10.0.0.0/8"), "" for anything else
    (upstream ignores source ranges it cannot parse, and IPv6 ones in an IPv4 proxier)."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return ""
    return str(net) if isinstance(net, ipaddress.IPv4Network) else ""


def _wants_topology(meta: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Whether a Service asks for topology aware routing. The annotation wins over the field when
    both are set (KEP-4444); any annotation value but "disabled"/"Disabled" enables it, as upstream's
    proxy reads it (the controller only writes hints for "Auto")."""
    annotations = meta.get("annotations") or {}
    mode = annotations.get(TOPOLOGY_MODE_ANNOTATION) or annotations.get(TOPOLOGY_HINTS_ANNOTATION) or ""
    if mode:
        return mode not in ("disabled", "Disabled")
    return spec.get("trafficDistribution") in ZONE_TRAFFIC_DISTRIBUTIONS


def service_ports(svc: dict[str, Any]) -> dict[ServicePortName, ServicePort]:
    """The service ports of a Service object; empty for headless, ExternalName and IPv6-only ones
    (upstream skips them too: there is no virtual IP to program)."""
    meta = svc.get("metadata") or {}
    spec = svc.get("spec") or {}
    labels = meta.get("labels") or {}
    if SERVICE_PROXY_NAME_LABEL in labels:  # served by another proxy (upstream's label filter)
        return {}
    if spec.get("type") == "ExternalName":
        return {}
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    cluster_ip = next((ip for ip in ips if _is_ipv4(ip)), "")
    if not cluster_ip:
        return {}
    svc_type = spec.get("type") or "ClusterIP"
    external_capable = svc_type in ("NodePort", "LoadBalancer")
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        cfg = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        affinity = int(cfg.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT)
    external_ips = tuple(ip for ip in spec.get("externalIPs") or [] if _is_ipv4(ip))
    lb_ips: tuple[str, ...] = ()
    source_ranges: tuple[str, ...] = ()
    health_check_port = 0
    external_local = external_capable and (spec.get("externalTrafficPolicy") or "Cluster") == "Local"
    if svc_type == "LoadBalancer":
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        lb_ips = tuple(i["ip"] for i in ingress if i.get("ip") and _is_ipv4(i["ip"]))
        source_ranges = tuple(sorted({_cidr(r) for r in spec.get("loadBalancerSourceRanges") or []} - {""}))
        if external_local:
            health_check_port = int(spec.get("healthCheckNodePort") or 0)
    topology = _wants_topology(meta, spec)
    out: dict[ServicePortName, ServicePort] = {}
    for p in spec.get("ports") or []:
        proto = p.get("protocol") or "TCP"
        spn = ServicePortName(meta.get("namespace") or "default", meta["name"], p.get("name") or "", proto)
        out[spn] = ServicePort(
            name=spn,
            cluster_ip=cluster_ip,
            port=int(p["port"]),
            protocol=proto,
            node_port=int(p.get("nodePort") or 0) if external_capable else 0,
            external_ips=external_ips,
            load_balancer_ips=lb_ips,
            session_affinity_seconds=affinity,
            external_policy_local=external_local,
            internal_policy_local=(spec.get("internalTrafficPolicy") or "Cluster") == "Local",
            load_balancer_source_ranges=source_ranges,
            health_check_node_port=health_check_port,
            topology_aware=topology,
        )
    return out


def slice_service_name(eps: dict[str, Any]) -> str | None:
    """ns/name of the Service an EndpointSlice belongs to, or None if it belongs to none."""
    meta = eps.get("metadata") or {}
    svc = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    if not svc:
        return None
    return f"{meta.get('namespace') or 'default'}/{svc}"


def _zone_hints(ep: dict[str, Any]) -> tuple[str, ...]:
    zones = ((ep.get("hints") or {}).get("forZones")) or []
    return tuple(sorted({z["name"] for z in zones if isinstance(z, dict) and z.get("name")}))


def slice_endpoints(eps: dict[str, Any], node_name: str) -> dict[ServicePortName, tuple[Endpoint, ...]]:
    """The endpoints of one EndpointSlice per service port. Conditions follow discovery/v1: a
    missing `ready` means ready, a missing `serving` means the value of ready."""
    svc = slice_service_name(eps)
    if svc is None or (eps.get("addressType") or "IPv4") != "IPv4":
        return {}
    ns, name = svc.split("/", 1)
    out: dict[ServicePortName, tuple[Endpoint, ...]] = {}
    hints = [_zone_hints(ep) for ep in eps.get("endpoints") or []]
    for p in eps.get("ports") or []:
        if p.get("port") is None:
            continue
        spn = ServicePortName(ns, name, p.get("name") or "", p.get("protocol") or "TCP")
        found: list[Endpoint] = []
        for ep, zones in zip(eps.get("endpoints") or [], hints, strict=True):
            addrs = ep.get("addresses") or []
            if not addrs:
                continue
            cond = ep.get("conditions") or {}
            ready = cond.get("ready") is not False
            serving = cond["serving"] if cond.get("serving") is not None else ready
            node = ep.get("nodeName") or ""
            found.append(Endpoint(
                ip=addrs[0], port=int(p["port"]), ready=ready, serving=bool(serving),
                terminating=bool(cond.get("terminating")), node_name=node,
                is_local=bool(node_name) and node == node_name, zone_hints=zones,
            ))
        out[spn] = tuple(found)
    return out


@dataclass
class CategorizedEndpoints:
    """Which endpoints a service port's traffic may go to (upstream CategorizeEndpoints)."""

    cluster: list[Endpoint] = field(default_factory=list)  # for externalTrafficPolicy Cluster
    local: list[Endpoint] = field(default_factory=list)  # this node's, for the Local policies
    all_reachable: list[Endpoint] = field(default_factory=list)  # every endpoint some chain uses


def _usable(eps: list[Endpoint]) -> list[Endpoint]:
    """Ready endpoints; if none, serving-and-terminating ones (KEP-1669 fallback)."""
    ready = [e for e in eps if e.ready]
    if ready:
        return ready
    return [e for e in eps if e.serving and e.terminating]


def _zone_filtered(sp: ServicePort, eps: list[Endpoint], zone: str) -> list[Endpoint] | None:
    """For a Service that asked for topology aware routing: the ready endpoints hinted for `zone`,
    or None when the hints must not be followed (upstream topologyModeFromHints, KEP-2433): the
    node has no zone, a ready endpoint has no hint (hints half-written by the controller would
    overload the hinted ones), or no ready endpoint is hinted for this zone (its clients would get
    nothing)."""
    ready = [e for e in eps if e.ready]
    if not ready:
        return None  # nothing to prefer; the terminating fallback applies to all of them
    if not zone:
        log.debug("ignoring topology hints service=%s: node has no %s label", sp.name, ZONE_LABEL)
        return None
    if any(not e.zone_hints for e in ready):
        log.debug("ignoring topology hints service=%s: an endpoint has no zone hint", sp.name)
        return None
    mine = [e for e in ready if zone in e.zone_hints]
    if not mine:
        log.debug("ignoring topology hints service=%s: no endpoint is hinted for zone=%s", sp.name, zone)
        return None
    return mine


def categorize(sp: ServicePort, endpoints: tuple[Endpoint, ...], *, zone: str = "") -> CategorizedEndpoints:
    """`endpoints` come sorted from the tracker, so every list here is in a stable order (the
    rendered rules must be identical for identical input). `zone` is this node's zone: with it,
    Cluster-policy traffic of a topology aware Service keeps to the endpoints hinted for the zone
    when the hints allow; the Local policies never look at hints (upstream CategorizeEndpoints)."""
    eps = list(endpoints)
    out = CategorizedEndpoints()
    hinted = _zone_filtered(sp, eps, zone) if sp.topology_aware else None  # (a call less per port at 10k)
    out.cluster = hinted if hinted is not None else _usable(eps)
    if sp.internal_policy_local or sp.external_policy_local:
        out.local = _usable([e for e in eps if e.is_local])
        seen = {e.address: e for e in out.cluster}
        for e in out.local:
            seen.setdefault(e.address, e)
        out.all_reachable = sorted(seen.values())
    else:
        out.all_reachable = out.cluster
    return out
