"""What the controllers that own pods (or ReplicaSets) share: a pod from a template, and claiming
(upstream pkg/controller/controller_ref_manager.go PodControllerRefManager and
controller_utils.go GetPodFromTemplate): pods we control that no longer match are released,
matching orphans are adopted with a controller ownerReference, others' pods are left alone."""

from __future__ import annotations

from typing import Any

from nodeagent.client.errors import NotFound
from nodeagent.client.interface import ClientProtocol
from nodeagent.controllers.objects import (
    controller_ref,
    deep,
    is_deleting,
    labels_of,
    name_of,
    namespace_of,
    owner_reference,
    random_suffix,
    selector_matches,
    uid_of,
)

Obj = dict[str, Any]


def pod_from_template(owner: Obj, template: Obj, owner_kind: Any, name_prefix: str) -> Obj:
    tmd = template.get("metadata") or {}
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": f"{name_prefix}-{random_suffix()}",
            "namespace": namespace_of(owner),
            "labels": dict(tmd.get("labels") or {}),
            "annotations": dict(tmd.get("annotations") or {}),
            "ownerReferences": [owner_reference(owner, owner_kind)],
        },
        "spec": deep(template.get("spec") or {}),
    }
    if tmd.get("finalizers"):
        pod["metadata"]["finalizers"] = list(tmd["finalizers"])
    return pod


async def _set_owners(client: ClientProtocol, kind: Any, obj: Obj, refs: list[Obj]) -> Obj:
    """Adopt or release with a patch, as upstream's ControllerRefManager (the controllers' roles
    grant patch, not update, on what they own); the uid guards against a namesake."""
    patch = {"metadata": {"ownerReferences": refs, "uid": uid_of(obj)}}
    out: Obj = await client.patch(kind, name_of(obj), patch, namespace=namespace_of(obj) or None)
    return out


async def claim(client: ClientProtocol, owner: Obj, owner_kind: Any, kind: Any, candidates: list[Obj],
                selector: Obj | None) -> list[Obj]:
    """Adopt matching orphans, release non-matching owned objects; return the ones we own."""
    owned: list[Obj] = []
    uid = uid_of(owner)
    for obj in candidates:
        ref = controller_ref(obj)
        matches = selector_matches(selector, labels_of(obj))
        if ref is not None:
            if ref.get("uid") != uid:
                continue
            if matches:
                owned.append(obj)
            elif not is_deleting(owner):
                refs = [r for r in (obj.get("metadata") or {}).get("ownerReferences") or [] if r.get("uid") != uid]
                try:
                    await _set_owners(client, kind, obj, refs)
                except NotFound:
                    pass
            continue
        if not matches or is_deleting(owner) or is_deleting(obj):
            continue
        refs = [*((obj.get("metadata") or {}).get("ownerReferences") or []), owner_reference(owner, owner_kind)]
        try:
            owned.append(await _set_owners(client, kind, obj, refs))
        except NotFound:
            pass
    return owned
