"""Subresources with rules of their own: scale (Deployments, ReplicaSets), pods/binding (also the
`bindings` collection) and pods/eviction. Upstream keeps each as a REST object beside the kind's
store (pkg/registry/apps/deployment/storage ScaleREST, pkg/registry/core/pod/storage BindingREST,
EvictionREST)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nodeagent.api import errors
from nodeagent.api.registry.generic import GenericStore
from nodeagent.api.registry.options import DeleteOptions, WriteContext, now_rfc3339
from nodeagent.api.store import Entry
from nodeagent.machinery.selectors import selector_from_match_labels

Obj = dict[str, Any]


def to_scale(obj: Obj) -> Obj:
    meta = obj.get("metadata") or {}
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                     if k in meta},
        "spec": {"replicas": spec.get("replicas", 0)},
        "status": {"replicas": status.get("replicas", 0),
                   "selector": selector_from_match_labels(spec.get("selector"))},
    }


async def get_scale(gs: GenericStore, namespace: str | None, name: str) -> Obj:
    return to_scale((await gs.get(namespace, name)).obj)


async def update_scale(gs: GenericStore, namespace: str | None, name: str, change: Callable[[Obj], Obj],
                       ctx: WriteContext, precondition_rv: str | None = None) -> Obj:
    def mutate(cur: Obj, _e: Entry) -> Obj:
        scale = change(to_scale(cur))
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise errors.invalid("Scale", "autoscaling", name, [(
                "spec.replicas", "FieldValueInvalid", f"Invalid value: {replicas}: must be greater than or "
                                                      "equal to 0")])
        cur.setdefault("spec", {})["replicas"] = replicas
        return cur

    obj, _ = await gs.guaranteed_update(namespace, name, mutate, ctx, precondition_rv=precondition_rv)
    return to_scale(obj)


async def bind(pods: GenericStore, namespace: str, name: str, binding: Obj) -> Obj:
    """Set spec.nodeName once and the PodScheduled condition; 409 when bound or being deleted."""
    target = binding.get("target") if isinstance(binding, dict) else None
    node = target.get("name") if isinstance(target, dict) else None
    if not node or (isinstance(target, dict) and target.get("kind") not in (None, "", "Node")):
        raise errors.invalid("Binding", "", name, [("target.name", "FieldValueRequired", "Required value")])
    want_uid = ((binding.get("metadata") or {}).get("uid")) if isinstance(binding.get("metadata"), dict) else None

    def mutate(cur: Obj) -> Obj:
        meta = cur.get("metadata") or {}
        if want_uid and meta.get("uid") != want_uid:
            raise errors.conflict("pods", "", name, f"Precondition failed: UID in precondition: {want_uid}, "
                                                    f"UID in object meta: {meta.get('uid')}")
        if meta.get("deletionTimestamp"):
            raise errors.conflict("pods", "", name, "pod is being deleted, cannot be assigned to a host")
        spec = cur.setdefault("spec", {})
        if spec.get("nodeName"):
            raise errors.conflict("pods", "", name, f"pod {name} is already assigned to node "
                                                    f'"{spec["nodeName"]}"')
        spec["nodeName"] = node
        status = cur.setdefault("status", {})
        conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                      "lastTransitionTime": now_rfc3339()})
        status["conditions"] = conds
        return cur

    await pods.update_unchecked(namespace, name, mutate)
    return errors.status_body(201, "", "")


async def evict(pods: GenericStore, namespace: str | None, name: str, dry_run: bool = False) -> Obj:
    """pods/eviction: a graceful delete (no PodDisruptionBudgets yet)."""
    await pods.delete(namespace, name, DeleteOptions(dry_run=dry_run))
    return errors.status_body(201, "", "")
