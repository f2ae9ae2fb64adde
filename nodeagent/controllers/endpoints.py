"""The Endpoints controller: the v1 Endpoints object named after each Service with a selector.

Subsets group addresses by their resolved port set; ready pods go to addresses, the others to
notReadyAddresses (all to addresses with publishNotReadyAddresses); terminating pods are left out
(pkg/controller/endpoint/endpoints_controller.go). Endpoints of selector-less Services are the
user's and are never touched.
"""

from __future__ import annotations

from typing import Any

from nodeagent.client.errors import AlreadyExists, NotFound
from nodeagent.controllers.base import Context, Controller
from nodeagent.controllers.endpoints_common import (
    ServicePodHandlers,
    pod_hostname,
    publish_not_ready,
    resolved_ports,
    selects,
    service_selector,
    should_include,
    sorted_pods,
    target_ref,
)
from nodeagent.controllers.objects import deep, is_pod_ready, labels_of, name_of, namespace_of
from nodeagent.machinery.kinds import ENDPOINTS, PODS, SERVICES

Obj = dict[str, Any]
MANAGED_BY_LABEL = "endpoints.kubernetes.io/managed-by"
MANAGED_BY = "endpoint-controller"


def desired_subsets(svc: Obj, pods: list[Obj]) -> list[Obj]:
    groups: dict[tuple[Any, ...], Obj] = {}
    for pod in sorted_pods(pods):
        if not should_include(pod, include_terminating=False):
            continue
        ports = resolved_ports(pod, svc)
        if (svc.get("spec") or {}).get("ports") and not ports:
            continue
        addr: Obj = {"ip": str((pod.get("status") or {}).get("podIP")), "targetRef": target_ref(pod)}
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            addr["nodeName"] = node
        host = pod_hostname(pod, svc)
        if host:
            addr["hostname"] = host
        sub = groups.setdefault(ports, {"ports": [
            {k: v for k, v in (("name", n), ("port", p), ("protocol", pr), ("appProtocol", a)) if v}
            for n, p, pr, a in ports]})
        field = "addresses" if (is_pod_ready(pod) or publish_not_ready(svc)) else "notReadyAddresses"
        sub.setdefault(field, []).append(addr)
    out = []
    for ports in sorted(groups, key=repr):
        sub = groups[ports]
        if not sub["ports"]:
            del sub["ports"]
        out.append(sub)
    return out


class EndpointsController(Controller, ServicePodHandlers):
    name = "endpoint"
    workers = 2

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.svc_inf = self.watch_primary(SERVICES)
        self.pods = ctx.informers.get(PODS)
        self.eps = ctx.informers.get(ENDPOINTS)
        self.pods.add_handlers(on_add=self._pod_event, on_update=self._pod_updated, on_delete=self._pod_event)
        self.eps.add_handlers(on_delete=self._ep_deleted)

    def _ep_deleted(self, ep: Obj) -> None:
        key = f"{namespace_of(ep)}/{name_of(ep)}"
        if self.svc_inf.get(key) is not None:
            self.queue.add(key)

    async def reconcile(self, key: str) -> None:
        ns, name = key.split("/", 1)
        svc = self.svc_inf.get(key)
        current = self.eps.get(key)
        if svc is None:
            # the Service is gone: delete the Endpoints we made for it (never a user's own)
            if current is not None and labels_of(current).get(MANAGED_BY_LABEL) == MANAGED_BY:
                try:
                    await self.client.delete(ENDPOINTS, name, namespace=ns)
                except NotFound:
                    pass
            return
        sel = service_selector(svc)
        if sel is None:
            return
        pods = [p for p in self.pods.list() if namespace_of(p) == ns and selects(sel, p)]
        subsets = desired_subsets(svc, pods)
        labels = {**labels_of(svc), MANAGED_BY_LABEL: MANAGED_BY}
        if (svc.get("spec") or {}).get("clusterIP") == "None":
            labels["service.kubernetes.io/headless"] = ""
        if current is None:
            body = {"apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": name, "namespace": ns, "labels": labels}, "subsets": subsets}
            try:
                await self.client.create(ENDPOINTS, body)
            except AlreadyExists:
                self.queue.add_after(key, 0.2)  # our cache is behind: retry against the live object
            return
        if (current.get("subsets") or []) == subsets and labels_of(current) == labels:
            return
        body = deep(current)
        body["metadata"]["labels"] = labels
        body["subsets"] = subsets
        await self.client.update(ENDPOINTS, body)
