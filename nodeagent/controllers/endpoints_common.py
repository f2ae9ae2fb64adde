"""What the Endpoints and EndpointSlice controllers share: which pods back a Service, and each
pod's address, conditions and resolved ports (pkg/controller/util/endpoint, endpointslice/utils.go).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nodeagent.controllers.objects import (
    is_deleting,
    is_pod_ready,
    is_pod_terminal,
    labels_of,
    meta,
    name_of,
    namespace_of,
    uid_of,
)

Obj = dict[str, Any]


def service_selector(svc: Obj) -> dict[str, str] | None:
    """None for a selector-less Service: its endpoints are someone else's (left alone)."""
    sel = (svc.get("spec") or {}).get("selector")
    return dict(sel) if sel else None


class ServicePodHandlers:
    """Pod handlers of the Endpoints and EndpointSlice controllers: a pod change wakes every Service
    of its namespace that selects it, before and after a label change (endpoints_controller.go
    updatePod). The controller provides `svc_inf` (the Services' informer) and `enqueue`."""

    svc_inf: Any
    enqueue: Callable[[Obj], None]

    def _pod_event(self, pod: Obj) -> None:
        ns = namespace_of(pod)
        for svc in self.svc_inf.list():
            sel = service_selector(svc)
            if namespace_of(svc) == ns and sel and selects(sel, pod):
                self.enqueue(svc)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if old is not new and labels_of(old) != labels_of(new):
            self._pod_event(old)
        self._pod_event(new)


def selects(selector: dict[str, str], pod: Obj) -> bool:
    labels = labels_of(pod)
    return all(labels.get(k) == v for k, v in selector.items())


def should_include(pod: Obj, include_terminating: bool) -> bool:
    """ShouldPodBeInEndpoints: no terminal pods, no pods without an IP, terminating only if asked."""
    if is_pod_terminal(pod):
        return False
    if not (pod.get("status") or {}).get("podIP"):
        return False
    return include_terminating or not is_deleting(pod)


def publish_not_ready(svc: Obj) -> bool:
    return bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))


def target_ref(pod: Obj) -> Obj:
    return {"kind": "Pod", "namespace": namespace_of(pod), "name": name_of(pod), "uid": uid_of(pod)}


def pod_hostname(pod: Obj, svc: Obj) -> str | None:
    """A pod's hostname is published only when its subdomain is this Service (DNS for pods)."""
    spec = pod.get("spec") or {}
    if spec.get("hostname") and spec.get("subdomain") == name_of(svc) and namespace_of(pod) == namespace_of(svc):
        return str(spec["hostname"])
    return None


def find_port(pod: Obj, svc_port: Obj) -> int | None:
    """podutil.FindPort: an int targetPort is used as is; a name is looked up in the containers'
    ports of the same protocol; no targetPort means the Service port."""
    target = svc_port.get("targetPort")
    proto = svc_port.get("protocol") or "TCP"
    if target is None or target == "":
        return int(svc_port["port"])
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target and (p.get("protocol") or "TCP") == proto:
                return int(p["containerPort"])
    return None


def resolved_ports(pod: Obj, svc: Obj) -> tuple[tuple[str, int, str, str | None], ...]:
    """(name, port, protocol, appProtocol) for each Service port this pod can serve."""
    out = []
    for sp in (svc.get("spec") or {}).get("ports") or []:
        port = find_port(pod, sp)
        if port is None:
            continue  # upstream skips the pod for a port it cannot resolve
        out.append((sp.get("name") or "", port, sp.get("protocol") or "TCP", sp.get("appProtocol")))
    return tuple(out)


def pod_address_family(pod: Obj) -> str:
    ip = str((pod.get("status") or {}).get("podIP") or "")
    return "IPv6" if ":" in ip else "IPv4"


def service_families(svc: Obj) -> list[str]:
    fams = (svc.get("spec") or {}).get("ipFamilies")
    return list(fams) if fams else ["IPv4"]


def pod_ready(pod: Obj) -> bool:
    return is_pod_ready(pod)


def sorted_pods(pods: list[Obj]) -> list[Obj]:
    return sorted(pods, key=lambda p: (namespace_of(p), name_of(p)))


def resource_version(obj: Obj) -> str:
    return str(meta(obj).get("resourceVersion", ""))
