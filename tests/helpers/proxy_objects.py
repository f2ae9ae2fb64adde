"""Builders of Service / EndpointSlice / Node dicts shaped as the apiserver sends them."""

from __future__ import annotations

from typing import Any


def service(name: str, cluster_ip: str, ports: list[dict[str, Any]] | None = None, namespace: str = "default",
            type_: str = "ClusterIP", **spec: Any) -> dict[str, Any]:
    ports = ports if ports is not None else [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"type": type_, "clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ports": ports,
                 "selector": {"app": name}, **spec},
    }


def endpoint(ip: str, node: str = "", ready: bool = True, serving: bool | None = None,
             terminating: bool = False) -> dict[str, Any]:
    cond: dict[str, Any] = {"ready": ready, "terminating": terminating}
    cond["serving"] = ready if serving is None else serving
    out: dict[str, Any] = {"addresses": [ip], "conditions": cond}
    if node:
        out["nodeName"] = node
    return out


def endpoint_slice(service_name: str, endpoints: list[dict[str, Any]], ports: list[dict[str, Any]] | None = None,
                   namespace: str = "default", name: str | None = None) -> dict[str, Any]:
    ports = ports if ports is not None else [{"name": "http", "port": 8080, "protocol": "TCP"}]
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name or f"{service_name}-abc12", "namespace": namespace,
                     "labels": {"kubernetes.io/service-name": service_name}},
        "addressType": "IPv4", "endpoints": endpoints, "ports": ports,
    }


def node(name: str, ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]}}
