"""What the proxy knows about Services and endpoints, as plain immutable values.

A Service with N ports becomes N service ports, each named `ns/name:portname` exactly as upstream's
ServicePortName prints (pkg/proxy/types.go); back ends key everything by that name. EndpointSlices
become Endpoint values per service port. Values compare by content so the change trackers can drop
no-op changes (an update that only touched the resourceVersion).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

DEFAULT_AFFINITY_TIMEOUT = 10800  # seconds; core/v1 defaults sessionAffinityConfig.clientIP.timeoutSeconds
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SERVICE_PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"
HEADLESS_LABEL = "service.kubernetes.io/headless"
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"


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

    @cached_property
    def address(self) -> str:  # hot in rendering: computed once per endpoint
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class NodeInfo:
    """This node, from its Node object: the name for the Local policies, the IPs for NodePorts."""

    name: str
    ips: tuple[str, ...] = ()


def _is_ipv4(ip: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(ip), ipaddress.IPv4Address)
    except ValueError:
        return False


def _cidr(text: str) -> str:
    """An IPv4 CIDR in canonical form ("10.0.0.1/8" -> "10.0.0.0/8"), "" for anything else
    (upstream ignores source ranges it cannot parse, and IPv6 ones in an IPv4 proxier)."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return ""
    return str(net) if isinstance(net, ipaddress.IPv4Network) else ""


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
        )
    return out


def slice_service_name(eps: dict[str, Any]) -> str | None:
    """ns/name of the Service an EndpointSlice belongs to, or None if it belongs to none."""
    meta = eps.get("metadata") or {}
    svc = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    if not svc:
        return None
    return f"{meta.get('namespace') or 'default'}/{svc}"


def slice_endpoints(eps: dict[str, Any], node_name: str) -> dict[ServicePortName, tuple[Endpoint, ...]]:
    """The endpoints of one EndpointSlice per service port. Conditions follow discovery/v1: a
    missing `ready` means ready, a missing `serving` means the value of ready."""
    svc = slice_service_name(eps)
    if svc is None or (eps.get("addressType") or "IPv4") != "IPv4":
        return {}
    ns, name = svc.split("/", 1)
    out: dict[ServicePortName, tuple[Endpoint, ...]] = {}
    for p in eps.get("ports") or []:
        if p.get("port") is None:
            continue
        spn = ServicePortName(ns, name, p.get("name") or "", p.get("protocol") or "TCP")
        found: list[Endpoint] = []
        for ep in eps.get("endpoints") or []:
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
                is_local=bool(node_name) and node == node_name,
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


def categorize(sp: ServicePort, endpoints: tuple[Endpoint, ...]) -> CategorizedEndpoints:
    """`endpoints` come sorted from the tracker, so every list here is in a stable order (the
    rendered rules must be identical for identical input)."""
    eps = list(endpoints)
    out = CategorizedEndpoints()
    out.cluster = _usable(eps)
    if sp.internal_policy_local or sp.external_policy_local:
        out.local = _usable([e for e in eps if e.is_local])
        seen = {e.address: e for e in out.cluster}
        for e in out.local:
            seen.setdefault(e.address, e)
        out.all_reachable = sorted(seen.values())
    else:
        out.all_reachable = out.cluster
    return out
