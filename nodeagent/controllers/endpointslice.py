"""The EndpointSlice controller: one or more discovery.k8s.io/v1 EndpointSlices per Service with a
selector, each labelled kubernetes.io/service-name and endpointslice.kubernetes.io/managed-by, owned by
the Service, holding up to 100 endpoints that share one resolved port set.

Endpoint conditions as upstream (endpointslice/utils.go podToEndpoint): serving = pod Ready,
terminating = pod being deleted, ready = serving and not terminating; a Service with
publishNotReadyAddresses marks every endpoint ready. Slices of selector-less Services and slices
managed by anyone else are never touched.
"""

from __future__ import annotations

import logging
from typing import Any

from nodeagent.client.errors import NotFound
from nodeagent.controllers.base import Context, Controller
from nodeagent.controllers.endpoints_common import (
    ServicePodHandlers,
    pod_address_family,
    pod_hostname,
    publish_not_ready,
    resolved_ports,
    selects,
    service_families,
    service_selector,
    should_include,
    sorted_pods,
    target_ref,
)
from nodeagent.controllers.objects import (
    deep,
    is_deleting,
    is_pod_ready,
    labels_of,
    meta,
    name_of,
    namespace_of,
    owner_reference,
    random_suffix,
)
from nodeagent.machinery.kinds import ENDPOINTSLICES, NODES, PODS, SERVICES

log = logging.getLogger(__name__)

Obj = dict[str, Any]
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
MAX_ENDPOINTS_PER_SLICE = 100
ZONE_LABEL = "topology.kubernetes.io/zone"


def endpoint_for(pod: Obj, svc: Obj, zone: str | None) -> Obj:
    terminating = is_deleting(pod)
    serving = is_pod_ready(pod)
    ready = True if publish_not_ready(svc) else (serving and not terminating)
    ep: Obj = {
        "addresses": [str((pod.get("status") or {}).get("podIP"))],
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "targetRef": target_ref(pod),
    }
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        ep["nodeName"] = node
    if zone:
        ep["zone"] = zone
    host = pod_hostname(pod, svc)
    if host:
        ep["hostname"] = host
    return ep


def port_objects(ports: tuple[tuple[str, int, str, str | None], ...]) -> list[Obj]:
    out = []
    for name, port, proto, app in ports:
        p: Obj = {"name": name, "port": port, "protocol": proto}
        if app:
            p["appProtocol"] = app
        out.append(p)
    return out


def desired_slices(svc: Obj, pods: list[Obj], zones: dict[str, str]) -> list[tuple[str, list[Obj], list[Obj]]]:
    """(addressType, ports, endpoints) per slice to have, endpoints grouped by their port set."""
    groups: dict[tuple[str, tuple[Any, ...]], list[Obj]] = {}
    families = service_families(svc)
    for pod in sorted_pods(pods):
        if not should_include(pod, include_terminating=True):
            continue
        fam = pod_address_family(pod)
        if fam not in families:
            continue
        ports = resolved_ports(pod, svc)
        if (svc.get("spec") or {}).get("ports") and not ports:
            continue
        node = (pod.get("spec") or {}).get("nodeName") or ""
        groups.setdefault((fam, ports), []).append(endpoint_for(pod, svc, zones.get(node)))
    out: list[tuple[str, list[Obj], list[Obj]]] = []
    for (fam, ports), eps in sorted(groups.items(), key=lambda kv: (kv[0][0], repr(kv[0][1]))):
        for i in range(0, len(eps), MAX_ENDPOINTS_PER_SLICE):
            out.append((fam, port_objects(ports), eps[i:i + MAX_ENDPOINTS_PER_SLICE]))
    if not out:
        # upstream keeps one empty placeholder slice (no ports) so consumers see "no endpoints"
        out.append((families[0], [], []))
    return out


class EndpointSliceController(Controller, ServicePodHandlers):
    name = "endpointslice"
    workers = 2

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder("endpoint-slice-controller")
        self.svc_inf = self.watch_primary(SERVICES)
        self.pods = ctx.informers.get(PODS)
        self.slices = ctx.informers.get(ENDPOINTSLICES)
        self.nodes = ctx.informers.get(NODES)
        self.pods.add_handlers(on_add=self._pod_event, on_update=self._pod_updated, on_delete=self._pod_event)
        self.slices.add_handlers(on_add=self._slice_event, on_update=lambda _o, n: self._slice_event(n),
                                 on_delete=self._slice_event)

    def _slice_event(self, sl: Obj) -> None:
        labels = labels_of(sl)
        if labels.get(MANAGED_BY_LABEL) == MANAGED_BY and labels.get(SERVICE_NAME_LABEL):
            self.queue.add(f"{namespace_of(sl)}/{labels[SERVICE_NAME_LABEL]}")

    def _zones(self) -> dict[str, str]:
        return {name_of(n): labels_of(n)[ZONE_LABEL] for n in self.nodes.list() if ZONE_LABEL in labels_of(n)}

    async def reconcile(self, key: str) -> None:
        ns, name = key.split("/", 1)
        svc = self.svc_inf.get(key)
        existing = [s for s in self.slices.list() if namespace_of(s) == ns
                    and labels_of(s).get(SERVICE_NAME_LABEL) == name
                    and labels_of(s).get(MANAGED_BY_LABEL) == MANAGED_BY]
        if svc is not None and service_selector(svc) is None:
            # upstream: a Service without a selector gets no slices from this controller, and the
            # ones it has (the apiserver's own for `kubernetes`) are not this controller's to remove
            return
        if svc is None or is_deleting(svc):
            # the Service is gone: our slices go with it
            for s in existing:
                try:
                    await self.client.delete(ENDPOINTSLICES, name_of(s), namespace=ns)
                except NotFound:
                    pass
            return
        sel = service_selector(svc) or {}
        pods = [p for p in self.pods.list() if namespace_of(p) == ns and selects(sel, p)]
        want = desired_slices(svc, pods, self._zones())
        labels = {k: v for k, v in labels_of(svc).items() if k not in (SERVICE_NAME_LABEL, MANAGED_BY_LABEL)}
        labels.update({SERVICE_NAME_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY})
        if (svc.get("spec") or {}).get("clusterIP") == "None":
            labels["service.kubernetes.io/headless"] = ""
        # reuse existing slices in order of name so unchanged slices are not rewritten
        pool = sorted(existing, key=name_of)
        for fam, ports, eps in want:
            match = next((s for s in pool if s.get("addressType") == fam and (s.get("ports") or []) == ports), None)
            if match is None:
                match = next((s for s in pool if s.get("addressType") == fam), None)
            if match is not None:
                pool.remove(match)
                await self._update(match, svc, labels, ports, eps)
            else:
                await self._create(svc, fam, labels, ports, eps)
        for s in pool:
            try:
                await self.client.delete(ENDPOINTSLICES, name_of(s), namespace=ns)
            except NotFound:
                pass

    async def _create(self, svc: Obj, fam: str, labels: dict[str, str], ports: list[Obj], eps: list[Obj]) -> None:
        body = {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name_of(svc)}-{random_suffix()}", "namespace": namespace_of(svc),
                         "labels": labels, "ownerReferences": [owner_reference(svc, SERVICES)]},
            "addressType": fam, "endpoints": eps, "ports": ports,
        }
        await self.client.create(ENDPOINTSLICES, body)

    async def _update(self, sl: Obj, svc: Obj, labels: dict[str, str], ports: list[Obj], eps: list[Obj]) -> None:
        if ((sl.get("endpoints") or []) == eps and (sl.get("ports") or []) == ports
                and labels_of(sl) == labels):
            return
        body = deep(sl)
        body["metadata"]["labels"] = labels
        body["endpoints"] = eps
        body["ports"] = ports
        if not meta(body).get("ownerReferences"):
            body["metadata"]["ownerReferences"] = [owner_reference(svc, SERVICES)]
        await self.client.update(ENDPOINTSLICES, body)
