"""A tiny DNS client for tests: one query over UDP or TCP with dnslib, plus object builders."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from dnslib import EDNS0, DNSRecord


def make_query(name: str, qtype: str = "A", edns: int | None = None) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns))
    return q


def query_sync(host: str, port: int, name: str, qtype: str = "A", tcp: bool = False,
               edns: int | None = None, timeout: float = 3.0) -> DNSRecord:
    """Blocking query (usable inside run_in_netns); raises TimeoutError when no answer comes."""
    q = make_query(name, qtype, edns)
    raw = send_raw_sync(host, port, q.pack(), tcp=tcp, timeout=timeout)
    if raw is None:
        raise TimeoutError(f"no answer from {host}:{port} for {name} {qtype}")
    return DNSRecord.parse(raw)


def send_raw_sync(host: str, port: int, data: bytes, tcp: bool = False, timeout: float = 3.0) -> bytes | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if tcp:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(len(data).to_bytes(2, "big") + data)
            head = _recv_exact(s, 2)
            return _recv_exact(s, int.from_bytes(head, "big"))
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, (host, port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


async def query(host: str, port: int, name: str, qtype: str = "A", tcp: bool = False,
                edns: int | None = None, timeout: float = 3.0) -> DNSRecord:
    return await asyncio.to_thread(query_sync, host, port, name, qtype, tcp, edns, timeout)


async def send_raw(host: str, port: int, data: bytes, tcp: bool = False, timeout: float = 3.0) -> bytes | None:
    return await asyncio.to_thread(send_raw_sync, host, port, data, tcp, timeout)


# ---- objects as the apiserver stores them ----
def service(name: str, ns: str = "default", cluster_ip: str | None = "10.96.0.20",
            ports: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "ClusterIP", "ports": ports if ports is not None else
                            [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
    if cluster_ip is not None:
        body["clusterIP"] = cluster_ip
        body["clusterIPs"] = [cluster_ip]
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": body}


def endpoint_slice(svc: str, ns: str = "default", endpoints: list[dict[str, Any]] | None = None,
                   ports: list[dict[str, Any]] | None = None, name: str | None = None,
                   address_type: str = "IPv4") -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name or f"{svc}-abcde", "namespace": ns,
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": address_type,
        "endpoints": endpoints or [],
        "ports": ports if ports is not None else [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def ep(address: str, ready: bool | None = True, hostname: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"addresses": [address]}
    if ready is not None:
        out["conditions"] = {"ready": ready}
    if hostname:
        out["hostname"] = hostname
    return out
