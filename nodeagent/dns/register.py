"""Self-registration as the kube-dns Service.

The DNS server runs as a process of the server role, not as a pod, so no selector can find it: the
kube-dns Service is selector-less and this process writes its own EndpointSlice (the endpoints
controller leaves selector-less Services alone, as upstream's does). The proxy then serves the
Service's fixed ClusterIP like any other. Objects follow kubeadm's CoreDNS add-on: kube-system/kube-dns,
ports dns 53/UDP, dns-tcp 53/TCP, metrics 9153/TCP, labels k8s-app=kube-dns.

One slice per DNS process (named after its advertised address), so several servers can register
side by side; it is deleted at a clean shutdown so the proxy stops sending queries to a dead process.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import logging
import random
from dataclasses import dataclass
from typing import Any

from nodeagent.client import AlreadyExists, ApiError, Conflict, NotFound
from nodeagent.client.interface import ClientProtocol
from nodeagent.dns.index import SERVICE_NAME_LABEL, dashed
from nodeagent.machinery.kinds import ENDPOINTSLICES, NAMESPACES, SERVICES

log = logging.getLogger(__name__)

NAMESPACE = "kube-system"
SERVICE = "kube-dns"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "nodeagent-dns"
SERVICE_LABELS = {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"}

Obj = dict[str, Any]


@dataclass(frozen=True)
class Registration:
    service_ip: str          # the fixed ClusterIP (10.96.0.10)
    advertise_address: str   # where this process answers, reachable from every node
    port: int = 53           # the port this process listens on (the Service's targetPort)
    metrics_port: int = 9153  # 0 = no metrics port

    @property
    def slice_name(self) -> str:
        return f"{SERVICE}-{dashed(self.advertise_address)}"

    def service_ports(self) -> list[Obj]:
        ports = [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": self.port},
                 {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": self.port}]
        if self.metrics_port:
            ports.append({"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": self.metrics_port})
        return ports

    def slice_ports(self) -> list[Obj]:
        ports = [{"name": "dns", "port": self.port, "protocol": "UDP"},
                 {"name": "dns-tcp", "port": self.port, "protocol": "TCP"}]
        if self.metrics_port:
            ports.append({"name": "metrics", "port": self.metrics_port, "protocol": "TCP"})
        return ports


def desired_service(reg: Registration) -> Obj:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": SERVICE, "namespace": NAMESPACE, "labels": dict(SERVICE_LABELS)},
        "spec": {"type": "ClusterIP", "clusterIP": reg.service_ip, "ports": reg.service_ports()},
    }


def desired_slice(reg: Registration, service: Obj | None) -> Obj:
    family = "IPv6" if ipaddress.ip_address(reg.advertise_address).version == 6 else "IPv4"
    meta: Obj = {"name": reg.slice_name, "namespace": NAMESPACE,
                 "labels": {SERVICE_NAME_LABEL: SERVICE, MANAGED_BY_LABEL: MANAGED_BY}}
    if service and (service.get("metadata") or {}).get("uid"):
        # Owned by the Service: deleting kube-dns collects the slice (as the endpointslice controller does).
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Service", "name": SERVICE,
                                    "uid": service["metadata"]["uid"], "controller": True,
                                    "blockOwnerDeletion": True}]
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta,
        "addressType": family,
        "endpoints": [{"addresses": [reg.advertise_address],
                       "conditions": {"ready": True, "serving": True, "terminating": False}}],
        "ports": reg.slice_ports(),
    }


def _ports_key(ports: list[Obj]) -> list[tuple[Any, ...]]:
    return sorted((p.get("name"), p.get("port"), p.get("protocol", "TCP"), str(p.get("targetPort", "")))
                  for p in ports)


async def ensure_namespace(client: ClientProtocol) -> None:
    try:
        await client.get(NAMESPACES, NAMESPACE)
    except NotFound:
        try:
            await client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                             "metadata": {"name": NAMESPACE}})
        except AlreadyExists:
            pass


async def ensure_service(client: ClientProtocol, reg: Registration) -> Obj:
    want = desired_service(reg)
    try:
        cur = await client.get(SERVICES, SERVICE, namespace=NAMESPACE)
    except NotFound:
        try:
            created: Obj = await client.create(SERVICES, want, namespace=NAMESPACE)
            log.info("created service=%s/%s clusterIP=%s", NAMESPACE, SERVICE, reg.service_ip)
            return created
        except AlreadyExists:
            cur = await client.get(SERVICES, SERVICE, namespace=NAMESPACE)
    spec = cur.get("spec") or {}
    if spec.get("clusterIP") not in (reg.service_ip, None, ""):
        # clusterIP is immutable: we cannot fix it, only say what to do. DNS still answers on the
        # advertised address, but pods whose resolv.conf says reg.service_ip get no answer.
        log.error("service=%s/%s has clusterIP=%s but pods are told nameserver %s: delete it "
                  "(kubectl -n %s delete service %s) and restart nodeagent dns",
                  NAMESPACE, SERVICE, spec.get("clusterIP"), reg.service_ip, NAMESPACE, SERVICE)
    labels = (cur.get("metadata") or {}).get("labels") or {}
    if (_ports_key(spec.get("ports") or []) == _ports_key(want["spec"]["ports"])
            and all(labels.get(k) == v for k, v in SERVICE_LABELS.items()) and not spec.get("selector")):
        return dict(cur)
    new = copy.deepcopy(cur)
    new["metadata"].setdefault("labels", {}).update(SERVICE_LABELS)
    new["spec"]["ports"] = want["spec"]["ports"]
    new["spec"].pop("selector", None)  # a selector would hand the endpoints to the endpoints controller
    updated: Obj = await client.update(SERVICES, new)
    log.info("updated service=%s/%s ports and labels", NAMESPACE, SERVICE)
    return updated


async def ensure_slice(client: ClientProtocol, reg: Registration, service: Obj | None) -> Obj:
    want = desired_slice(reg, service)
    try:
        cur = await client.get(ENDPOINTSLICES, reg.slice_name, namespace=NAMESPACE)
    except NotFound:
        created: Obj = await client.create(ENDPOINTSLICES, want, namespace=NAMESPACE)
        log.info("created endpointslice=%s/%s address=%s", NAMESPACE, reg.slice_name, reg.advertise_address)
        return created
    same = (cur.get("endpoints") == want["endpoints"] and cur.get("addressType") == want["addressType"]
            and _ports_key(cur.get("ports") or []) == _ports_key(want["ports"])
            and (cur.get("metadata") or {}).get("labels") == want["metadata"]["labels"]
            and (cur.get("metadata") or {}).get("ownerReferences") == want["metadata"].get("ownerReferences"))
    if same:
        return dict(cur)
    new = copy.deepcopy(want)
    new["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
    updated: Obj = await client.update(ENDPOINTSLICES, new)
    log.info("updated endpointslice=%s/%s address=%s", NAMESPACE, reg.slice_name, reg.advertise_address)
    return updated


async def ensure_kube_dns(client: ClientProtocol, reg: Registration) -> None:
    await ensure_namespace(client)
    svc = await ensure_service(client, reg)
    await ensure_slice(client, reg, svc)


async def remove_slice(client: ClientProtocol, reg: Registration) -> None:
    try:
        await client.delete(ENDPOINTSLICES, reg.slice_name, namespace=NAMESPACE)
        log.info("deleted endpointslice=%s/%s", NAMESPACE, reg.slice_name)
    except NotFound:
        pass


class Registrar:
    """Keeps kube-dns and our slice as they should be: at start (retrying until the apiserver takes
    them) and again whenever a watch shows someone changed or deleted them."""

    def __init__(self, client: ClientProtocol, reg: Registration) -> None:
        self.client = client
        self.reg = reg
        self._wake = asyncio.Event()
        self._wake.set()
        self.registered = asyncio.Event()

    def concerns(self, obj: Obj) -> bool:
        md = obj.get("metadata") or {}
        if md.get("namespace") != NAMESPACE:
            return False
        return md.get("name") in (SERVICE, self.reg.slice_name)

    # informer handlers: quick, only wake the loop
    def on_add(self, obj: Obj) -> None:
        if self.concerns(obj) and self.registered.is_set():
            self._wake.set()

    def on_update(self, old: Obj, new: Obj) -> None:
        self.on_add(new)

    def on_delete(self, obj: Obj) -> None:
        if self.concerns(obj):
            self._wake.set()

    async def run(self) -> None:
        backoff = 0.5
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await ensure_kube_dns(self.client, self.reg)
                self.registered.set()
                backoff = 0.5
            except (ApiError, OSError) as e:
                if isinstance(e, Conflict):
                    backoff = 0.1  # someone wrote between our get and update: read again
                log.warning("registering service=%s/%s failed error=%s retry_in=%.1fs",
                            NAMESPACE, SERVICE, e, backoff)
                await asyncio.sleep(backoff * (1 + random.random() * 0.2))
                backoff = min(backoff * 2, 10.0)
                self._wake.set()
