"""Which node announces a Service's address (MetalLB layer2_controller.go ShouldAnnounce): among the
Ready nodes that have a ready endpoint of the Service, the first by sha256(node + "#" + address).
Every speaker computes the same answer from the same objects, so exactly one answers ARP; when the
only endpoint moves to another node, so does the announcement. Pure functions."""

from __future__ import annotations

import hashlib
from typing import Any

Obj = dict[str, Any]
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def node_ready(node: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


def nodes_with_ready_endpoints(slices: list[Obj]) -> set[str]:
    out = set()
    for s in slices:
        for ep in s.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False or not ep.get("nodeName"):
                continue
            out.add(str(ep["nodeName"]))
    return out


def announcer(address: str, slices: list[Obj], nodes: dict[str, Obj]) -> str | None:
    candidates = [n for n in nodes_with_ready_endpoints(slices) if n in nodes and node_ready(nodes[n])]
    if not candidates:
        return None
    return min(candidates, key=lambda n: (hashlib.sha256(f"{n}#{address}".encode()).digest(), n))


def wants_announcement(svc: Obj, lb_class: str | None = None) -> bool:
    spec = svc.get("spec") or {}
    if spec.get("type") != "LoadBalancer":
        return False
    cls = spec.get("loadBalancerClass")
    return (not cls) or (lb_class is not None and cls == lb_class)


def lb_addresses(svc: Obj) -> list[str]:
    return [str(i["ip"]) for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if isinstance(i, dict) and i.get("ip") and ":" not in str(i["ip"])]
