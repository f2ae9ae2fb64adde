"""A pod's DNS configuration from its dnsPolicy (upstream pkg/kubelet/network/dns/dns.go)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DNSConfig:
    servers: list[str] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


def parse_resolv_conf(text: str) -> DNSConfig:
    cfg = DNSConfig()
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        if parts[0] == "nameserver" and len(parts) > 1:
            cfg.servers.append(parts[1])
        elif parts[0] in ("search", "domain"):
            cfg.searches = parts[1:]
        elif parts[0] == "options":
            cfg.options.extend(parts[1:])
    return cfg


def read_host_resolv_conf(path: str = "/etc/resolv.conf") -> DNSConfig:
    try:
        with open(path) as f:
            return parse_resolv_conf(f.read())
    except OSError:
        return DNSConfig()


def _merge_options(base: list[str], extra: list[dict[str, Any]]) -> list[str]:
    """Options from dnsConfig override same-named ones (upstream mergeDNSOptions)."""
    out: dict[str, str] = {}
    for o in base:
        k, _, v = o.partition(":")
        out[k] = o
    for opt in extra:
        name = opt.get("name", "")
        out[name] = f"{name}:{opt['value']}" if opt.get("value") not in (None, "") else name
    return list(out.values())


def pod_dns_config(pod: dict[str, Any], cluster_dns: list[str], cluster_domain: str,
                   host: DNSConfig) -> DNSConfig:
    spec = pod.get("spec", {})
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    ns = pod.get("metadata", {}).get("namespace", "default")
    host_network = bool(spec.get("hostNetwork"))
    # ClusterFirst on a hostNetwork pod falls back to Default; ClusterFirstWithHostNet does not.
    if policy == "ClusterFirst" and host_network:
        policy = "Default"
    if policy == "ClusterFirstWithHostNet":
        policy = "ClusterFirst"
    if policy == "None":
        cfg = DNSConfig()
    elif policy == "Default" or not cluster_dns:
        cfg = DNSConfig(list(host.servers), list(host.searches), list(host.options))
    else:
        searches = [f"{ns}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain]
        searches += [s for s in host.searches if s not in searches]
        cfg = DNSConfig(list(cluster_dns), searches, ["ndots:5"])
    extra = spec.get("dnsConfig") or {}
    for s in extra.get("nameservers") or []:
        if s not in cfg.servers:
            cfg.servers.append(s)
    for s in extra.get("searches") or []:
        if s not in cfg.searches:
            cfg.searches.append(s)
    if extra.get("options"):
        cfg.options = _merge_options(cfg.options, extra["options"])
    # resolv.conf limits (upstream validation): 3 nameservers, 32 search domains
    cfg.servers = cfg.servers[:3]
    cfg.searches = cfg.searches[:32]
    return cfg
