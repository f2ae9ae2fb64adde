"""Deployment arithmetic (pkg/controller/deployment/util/deployment_util.go), pure functions over
plain objects so the rolling-update rules are unit-tested without a loop: fenceposts from
maxSurge/maxUnavailable (surge rounds up, unavailable rounds down, never both zero), revisions,
the pod-template-hash, the new ReplicaSet's next size, and the status conditions."""

from __future__ import annotations

import json
import math
from typing import Any

from nodeagent.controllers.objects import SAFE_ALPHABET, creation_time, deep, meta, rfc3339

Obj = dict[str, Any]

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
HASH_LABEL = "pod-template-hash"
# annotations of the Deployment not copied to its ReplicaSets (deployment_util annotationsToSkip)
SKIP_ANNOTATIONS = {
    "kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY, DESIRED_REPLICAS,
    MAX_REPLICAS, "deprecated.deployment.rollback.to",
}


def replicas_of(obj: Obj) -> int:
    r = (obj.get("spec") or {}).get("replicas")
    return 1 if r is None else int(r)


def status_int(obj: Obj, field: str) -> int:
    return int((obj.get("status") or {}).get(field) or 0)


def scaled_value(value: int | str | None, total: int, round_up: bool, default: str) -> int:
    """intstr.GetScaledValueFromIntOrPercent."""
    if value is None:
        value = default
    if isinstance(value, int):
        return value
    s = str(value)
    if s.endswith("%"):
        pct = int(s[:-1])
        exact = pct * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(s)


def is_rolling(d: Obj) -> bool:
    return ((d.get("spec") or {}).get("strategy") or {}).get("type", "RollingUpdate") != "Recreate"


def fenceposts(d: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) in pods for a rolling update (ResolveFenceposts)."""
    ru = (((d.get("spec") or {}).get("strategy") or {}).get("rollingUpdate")) or {}
    desired = replicas_of(d)
    surge = scaled_value(ru.get("maxSurge"), desired, True, "25%")
    unavailable = scaled_value(ru.get("maxUnavailable"), desired, False, "25%")
    if surge == 0 and unavailable == 0:
        unavailable = 1  # the rollout must be able to make progress
    return surge, unavailable


def max_unavailable(d: Obj) -> int:
    if not is_rolling(d) or replicas_of(d) == 0:
        return 0
    return min(fenceposts(d)[1], replicas_of(d))


def max_surge(d: Obj) -> int:
    return fenceposts(d)[0] if is_rolling(d) else 0


def fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def template_hash(template: Obj, collision_count: int | None = None) -> str:
    """ComputeHash: FNV-32a of the template (and collisionCount), encoded as SafeEncodeString does."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += str(collision_count).encode()
    return "".join(SAFE_ALPHABET[ord(c) % len(SAFE_ALPHABET)] for c in str(fnv32a(data)))


def strip_hash(template: Obj) -> Obj:
    t = deep(template or {})
    labels = (t.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(HASH_LABEL, None)
    return t


def _normal(t: Obj) -> Obj:
    """Empty maps and missing maps compare equal, as Go's semantic equality sees them."""
    if isinstance(t, dict):
        return {k: _normal(v) for k, v in t.items() if v not in (None, {}, [])}
    if isinstance(t, list):
        return [_normal(v) for v in t]  # type: ignore[return-value]
    return t


def equal_ignore_hash(a: Obj, b: Obj) -> bool:
    return _normal(strip_hash(a)) == _normal(strip_hash(b))


def revision(rs: Obj) -> int:
    try:
        return int((meta(rs).get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def max_revision(rss: list[Obj]) -> int:
    return max((revision(rs) for rs in rss), default=0)


def by_creation(rss: list[Obj]) -> list[Obj]:
    return sorted(rss, key=lambda r: (creation_time(r), meta(r).get("name", "")))


def find_new_rs(d: Obj, rss: list[Obj]) -> Obj | None:
    template = (d.get("spec") or {}).get("template") or {}
    for rs in by_creation(rss):
        if equal_ignore_hash((rs.get("spec") or {}).get("template") or {}, template):
            return rs
    return None


def sum_spec(rss: list[Obj]) -> int:
    return sum(replicas_of(rs) for rs in rss)


def sum_status(rss: list[Obj], field: str) -> int:
    return sum(status_int(rs, field) for rs in rss)


def new_rs_new_replicas(d: Obj, all_rss: list[Obj], new_rs: Obj | None) -> int:
    """How big the new ReplicaSet may be now (NewRSNewReplicas)."""
    desired = replicas_of(d)
    if not is_rolling(d):
        return desired
    current_new = replicas_of(new_rs) if new_rs else 0
    current_total = sum_spec(all_rss)
    max_total = desired + max_surge(d)
    if current_total >= max_total:
        return current_new
    scale_up = min(max_total - current_total, desired - current_new)
    return current_new + max(0, scale_up)


def is_saturated(d: Obj, rs: Obj | None) -> bool:
    if rs is None:
        return False
    desired = (meta(rs).get("annotations") or {}).get(DESIRED_REPLICAS)
    return (str(desired) == str(replicas_of(d)) and replicas_of(rs) == replicas_of(d)
            and status_int(rs, "availableReplicas") == replicas_of(d))


def replicas_annotations_differ(rs: Obj, desired: int, max_total: int) -> bool:
    ann = meta(rs).get("annotations") or {}
    return ann.get(DESIRED_REPLICAS) != str(desired) or ann.get(MAX_REPLICAS) != str(max_total)


# -- status ----------------------------------------------------------------------------------

def condition(status: Obj, ctype: str) -> Obj | None:
    for c in status.get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def set_condition(status: Obj, ctype: str, cstatus: str, reason: str, message: str, now: float) -> None:
    """SetDeploymentCondition: same status and reason keeps lastTransitionTime; same everything is a no-op."""
    conds = list(status.get("conditions") or [])
    old = condition(status, ctype)
    ts = rfc3339(now)
    if old is not None and old.get("status") == cstatus and old.get("reason") == reason:
        if old.get("message") == message:
            return
        new = {**old, "message": message, "lastUpdateTime": ts}
    else:
        new = {"type": ctype, "status": cstatus, "lastUpdateTime": ts, "lastTransitionTime": ts,
               "reason": reason, "message": message}
        if old is not None and old.get("status") == cstatus:
            new["lastTransitionTime"] = old.get("lastTransitionTime", ts)
    status["conditions"] = [c for c in conds if c.get("type") != ctype] + [new]


def calculate_status(d: Obj, all_rss: list[Obj], new_rs: Obj | None, now: float) -> Obj:
    available = sum_status(all_rss, "availableReplicas")
    total = sum_status(all_rss, "replicas")
    status: Obj = deep(d.get("status") or {})
    status.update({
        "observedGeneration": meta(d).get("generation", 1),
        "replicas": total,
        "updatedReplicas": status_int(new_rs, "replicas") if new_rs else 0,
        "readyReplicas": sum_status(all_rss, "readyReplicas"),
        "availableReplicas": available,
        "unavailableReplicas": max(0, replicas_of(d) - available),
    })
    for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas"):
        if not status[k]:
            status.pop(k)  # omitempty, as the apiserver serialises zero counts
    if available >= replicas_of(d) - max_unavailable(d):
        set_condition(status, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.",
                      now)
    else:
        set_condition(status, "Available", "False", "MinimumReplicasUnavailable",
                      "Deployment does not have minimum availability.", now)
    return status


def deployment_complete(d: Obj, status: Obj) -> bool:
    want = replicas_of(d)
    return (int(status.get("updatedReplicas") or 0) == want and int(status.get("replicas") or 0) == want
            and int(status.get("availableReplicas") or 0) == want
            and int(status.get("observedGeneration") or 0) >= int(meta(d).get("generation") or 1))


def deployment_progressing(old: Obj, new: Obj) -> bool:
    def g(s: Obj, f: str) -> int:
        return int(s.get(f) or 0)
    return (g(new, "updatedReplicas") > g(old, "updatedReplicas")
            or g(new, "readyReplicas") > g(old, "readyReplicas")
            or (g(old, "replicas") - g(old, "updatedReplicas")) > (g(new, "replicas") - g(new, "updatedReplicas"))
            or g(new, "availableReplicas") > g(old, "availableReplicas"))
