"""Small helpers over plain JSON objects shared by the loops: keys, owner references, pod state,
and timestamps in the apiserver's formats."""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime
from typing import Any

from nodeagent.client.selectors import Requirement, labels_match, selector_from_dict
from nodeagent.machinery.kinds import Kind

Obj = dict[str, Any]

# The alphabet of apimachinery's rand.String / SafeEncodeString (no vowels, no confusable digits).
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def name_of(obj: Obj) -> str:
    return str(meta(obj).get("name", ""))


def namespace_of(obj: Obj) -> str:
    return str(meta(obj).get("namespace") or "")


def uid_of(obj: Obj) -> str:
    return str(meta(obj).get("uid", ""))


def key_of(obj: Obj) -> str:
    ns = namespace_of(obj)
    return f"{ns}/{name_of(obj)}" if ns else name_of(obj)


def split_key(key: str) -> tuple[str | None, str]:
    if "/" in key:
        ns, name = key.split("/", 1)
        return ns, name
    return None, key


def labels_of(obj: Obj) -> dict[str, str]:
    return dict(meta(obj).get("labels") or {})


def is_deleting(obj: Obj) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def random_suffix(n: int = 5) -> str:
    """The 5-character suffix generateName adds (names made client-side to need no server support)."""
    return "".join(random.choice(SAFE_ALPHABET) for _ in range(n))


def deep(obj: Any) -> Any:
    return copy.deepcopy(obj)


# -- selectors -------------------------------------------------------------------------------

def label_selector(sel: Obj | None) -> list[Requirement] | None:
    """A metav1.LabelSelector as requirements; None for a missing selector (which selects nothing)."""
    if sel is None:
        return None
    return selector_from_dict(sel.get("matchLabels"), sel.get("matchExpressions"))


def selector_matches(sel: Obj | None, labels: dict[str, str] | None) -> bool:
    reqs = label_selector(sel)
    if reqs is None or not reqs:
        return False  # upstream: an empty or nil selector in a controller matches nothing
    return labels_match(reqs, labels)


# -- owner references ------------------------------------------------------------------------

def controller_ref(obj: Obj) -> Obj | None:
    for ref in meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def owner_reference(owner: Obj, kind: Kind, block: bool = True, controller: bool = True) -> Obj:
    return {"apiVersion": kind.api_version, "kind": kind.kind, "name": name_of(owner), "uid": uid_of(owner),
            "controller": controller, "blockOwnerDeletion": block}


def is_controlled_by(obj: Obj, owner: Obj) -> bool:
    ref = controller_ref(obj)
    return ref is not None and ref.get("uid") == uid_of(owner)


# -- pods ------------------------------------------------------------------------------------

def pod_condition(pod: Obj, ctype: str) -> Obj | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return None


def is_pod_ready(pod: Obj) -> bool:
    c = pod_condition(pod, "Ready")
    return c is not None and c.get("status") == "True"


def is_pod_available(pod: Obj, min_ready_seconds: int, now: float) -> bool:
    """Ready for at least minReadySeconds (podutil.IsPodAvailable)."""
    if not is_pod_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    c = pod_condition(pod, "Ready") or {}
    since = parse_time(c.get("lastTransitionTime"))
    return since is not None and since + min_ready_seconds <= now


def pod_phase(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def is_pod_terminal(pod: Obj) -> bool:
    return pod_phase(pod) in ("Succeeded", "Failed")


def is_pod_active(pod: Obj) -> bool:
    """Counted by ReplicaSets: not finished and not being deleted (controller.IsPodActive)."""
    return not is_pod_terminal(pod) and not is_deleting(pod)


# -- time ------------------------------------------------------------------------------------

def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(ts: float) -> str:
    """metav1.MicroTime as the apiserver serialises it (Leases' acquireTime/renewTime)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    v = value.replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(v).timestamp()
    except ValueError:
        return None


def creation_time(obj: Obj) -> float:
    return parse_time(meta(obj).get("creationTimestamp")) or 0.0
