"""Taints and tolerations (k8s.io/api/core/v1 toleration.go ToleratesTaint), shared by the scheduler,
node lifecycle (NoExecute eviction) and the DaemonSet controller."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]

TAINT_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"


def tolerates(toleration: Obj, taint: Obj) -> bool:
    """An empty effect matches every effect; an empty key with Exists matches every taint."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    op = toleration.get("operator") or "Equal"
    if op == "Exists":
        return True
    if op == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def pod_tolerations(pod: Obj) -> list[Obj]:
    return list((pod.get("spec") or {}).get("tolerations") or [])


def node_taints(node: Obj) -> list[Obj]:
    return list((node.get("spec") or {}).get("taints") or [])


def untolerated(taints: list[Obj], tolerations: list[Obj], effects: tuple[str, ...]) -> Obj | None:
    """The first taint with one of `effects` that no toleration tolerates, or None."""
    for t in taints:
        if t.get("effect") not in effects:
            continue
        if not any(tolerates(tol, t) for tol in tolerations):
            return t
    return None


def matching_tolerations(taint: Obj, tolerations: list[Obj]) -> list[Obj]:
    return [tol for tol in tolerations if tolerates(tol, taint)]
