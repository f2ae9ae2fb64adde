"""Create and reconcile upstream's bootstrap RBAC policy at every start (upstream's
rbac/bootstrap-roles post-start hook, pkg/registry/rbac/reconciliation): a missing object is
created; one annotated rbac.authorization.kubernetes.io/autoupdate=true gets the rules, subjects,
labels and annotations it lacks added (nothing an administrator added is removed); one annotated
"false" is left alone. Aggregated ClusterRoles (admin, edit, view) get their first rules here;
the clusterrole-aggregation controller keeps them current afterwards."""

from __future__ import annotations

import logging
from typing import Any

from nodeagent.api.auth import policy
from nodeagent.machinery import kinds
from nodeagent.machinery.kinds import Kind
from nodeagent.machinery.rbac import aggregated_rules, is_aggregated

log = logging.getLogger(__name__)
Obj = dict[str, Any]


def _merge(cur: Obj, want: Obj) -> Obj | None:
    """cur with what want adds, or None when nothing is missing."""
    meta, wmeta = cur.setdefault("metadata", {}), want["metadata"]
    changed = False
    for key in ("labels", "annotations"):
        have = meta.get(key) or {}
        for k, v in (wmeta.get(key) or {}).items():
            if have.get(k) != v:
                have[k] = v
                changed = True
        if have:
            meta[key] = have
    for key in ("rules", "subjects"):
        if key not in want:
            continue
        have_list = list(cur.get(key) or [])
        for item in want[key]:
            if item not in have_list:
                have_list.append(item)
                changed = True
        cur[key] = have_list
    if "aggregationRule" in want and cur.get("aggregationRule") != want["aggregationRule"]:
        cur["aggregationRule"] = want["aggregationRule"]
        changed = True
    return cur if changed else None


async def _reconcile(registry: Any, kind: Kind, want: Obj) -> None:
    from nodeagent.api.errors import ApiError

    ns = (want["metadata"].get("namespace") or None) if kind.namespaced else None
    name = want["metadata"]["name"]
    try:
        cur = (await registry.get(kind, ns, name)).obj
    except ApiError as e:
        if e.code != 404:
            raise
        await registry.create(kind, ns, _copy(want))
        return
    if ((cur.get("metadata") or {}).get("annotations") or {}).get(policy.AUTOUPDATE) == "false":
        return
    if "roleRef" in want and cur.get("roleRef") != want["roleRef"]:
        log.warning("msg=\"bootstrap binding names another role, left as is\" kind=%s name=%s", kind.kind, name)
        return
    merged = _merge(_copy(cur), want)
    if merged is not None:
        await registry.update(kind, ns, name, merged)


def _copy(obj: Obj) -> Obj:
    import json

    out: Obj = json.loads(json.dumps(obj))
    return out


async def reconcile(registry: Any) -> None:
    for role in policy.cluster_roles():
        await _reconcile(registry, kinds.CLUSTERROLES, role)
    for b in policy.cluster_role_bindings():
        await _reconcile(registry, kinds.CLUSTERROLEBINDINGS, b)
    for role in policy.namespaced_roles():
        await _reconcile(registry, kinds.ROLES, role)
    for b in policy.namespaced_role_bindings():
        await _reconcile(registry, kinds.ROLEBINDINGS, b)
    await aggregate(registry)


async def aggregate(registry: Any) -> None:
    """Fill every aggregated ClusterRole from the roles its selectors match (admin <- edit <- view:
    repeated until nothing changes, since an aggregated role can feed another)."""
    from nodeagent.api.registry import ListOptions

    for _ in range(5):
        roles = [e.obj for e in (await registry.list(kinds.CLUSTERROLES, None, ListOptions())).items]
        changed = False
        for role in roles:
            if not is_aggregated(role):
                continue
            rules = aggregated_rules(role, roles)
            if rules != (role.get("rules") or []):
                new = _copy(role)
                new["rules"] = rules
                await registry.update(kinds.CLUSTERROLES, None, role["metadata"]["name"], new)
                changed = True
        if not changed:
            return
