"""Validation of the rbac.authorization.k8s.io/v1 kinds (upstream pkg/apis/rbac/validation)."""

from __future__ import annotations

from typing import Any

from nodeagent.api.validation import Cause

Obj = dict[str, Any]
RBAC_GROUP = "rbac.authorization.k8s.io"


def _rule_causes(rules: Any, namespaced: bool) -> list[Cause]:
    if rules is None:
        return []
    if not isinstance(rules, list):
        return [("rules", "FieldValueInvalid", "Invalid value: must be a list")]
    out: list[Cause] = []
    for i, r in enumerate(rules):
        f = f"rules[{i}]"
        if not isinstance(r, dict):
            out.append((f, "FieldValueInvalid", "Invalid value: must be an object"))
            continue
        for key in ("verbs", "apiGroups", "resources", "resourceNames", "nonResourceURLs"):
            v = r.get(key)
            if v is not None and (not isinstance(v, list) or not all(isinstance(x, str) for x in v)):
                out.append((f"{f}.{key}", "FieldValueInvalid", "Invalid value: must be a list of strings"))
        if not r.get("verbs"):
            out.append((f"{f}.verbs", "FieldValueRequired", "Required value: verbs must contain at least one value"))
        if r.get("nonResourceURLs"):
            if namespaced:
                out.append((f"{f}.nonResourceURLs", "FieldValueInvalid",
                            f"Invalid value: {r['nonResourceURLs']}: namespaced rules cannot apply to non-resource "
                            "URLs"))
            if r.get("apiGroups") or r.get("resources") or r.get("resourceNames"):
                out.append((f"{f}.nonResourceURLs", "FieldValueInvalid",
                            f"Invalid value: {r['nonResourceURLs']}: rules cannot apply to both regular resources "
                            "and non-resource URLs"))
            continue
        if not r.get("apiGroups"):
            out.append((f"{f}.apiGroups", "FieldValueRequired",
                        "Required value: resource rules must supply at least one api group"))
        if not r.get("resources"):
            out.append((f"{f}.resources", "FieldValueRequired",
                        "Required value: resource rules must supply at least one resource"))
    return out


def validate_role(obj: Obj, namespaced: bool) -> list[Cause]:
    causes = _rule_causes(obj.get("rules"), namespaced)
    agg = obj.get("aggregationRule")
    if agg is not None and not namespaced:
        if not isinstance(agg, dict) or not isinstance(agg.get("clusterRoleSelectors"), list) or \
                not agg["clusterRoleSelectors"]:
            causes.append(("aggregationRule.clusterRoleSelectors", "FieldValueRequired",
                           "Required value: at least one clusterRoleSelector required if aggregationRule is non-nil"))
    return causes


def validate_binding(obj: Obj, namespaced: bool, old: Obj | None = None) -> list[Cause]:
    causes: list[Cause] = []
    ref = obj.get("roleRef")
    if not isinstance(ref, dict):
        return [("roleRef", "FieldValueRequired", "Required value")]
    if ref.get("apiGroup") != RBAC_GROUP:
        causes.append(("roleRef.apiGroup", "FieldValueNotSupported",
                       f'Unsupported value: "{ref.get("apiGroup", "")}": supported values: "{RBAC_GROUP}"'))
    allowed = ("Role", "ClusterRole") if namespaced else ("ClusterRole",)
    if ref.get("kind") not in allowed:
        causes.append(("roleRef.kind", "FieldValueNotSupported",
                       f'Unsupported value: "{ref.get("kind", "")}": supported values: '
                       + ", ".join(f'"{k}"' for k in allowed)))
    if not ref.get("name"):
        causes.append(("roleRef.name", "FieldValueRequired", "Required value"))
    if old is not None and old.get("roleRef") != ref:
        causes.append(("roleRef", "FieldValueInvalid", "Invalid value: cannot change roleRef"))
    subjects = obj.get("subjects")
    if subjects is not None and not isinstance(subjects, list):
        return causes + [("subjects", "FieldValueInvalid", "Invalid value: must be a list")]
    for i, s in enumerate(subjects or []):
        f = f"subjects[{i}]"
        if not isinstance(s, dict):
            causes.append((f, "FieldValueInvalid", "Invalid value: must be an object"))
            continue
        if not s.get("name"):
            causes.append((f"{f}.name", "FieldValueRequired", "Required value"))
        kind = s.get("kind")
        if kind == "ServiceAccount":
            if s.get("apiGroup"):
                causes.append((f"{f}.apiGroup", "FieldValueNotSupported",
                               f'Unsupported value: "{s["apiGroup"]}": supported values: ""'))
            if not namespaced and not s.get("namespace"):
                causes.append((f"{f}.namespace", "FieldValueRequired", "Required value"))
        elif kind in ("User", "Group"):
            if s.get("apiGroup") != RBAC_GROUP:
                causes.append((f"{f}.apiGroup", "FieldValueNotSupported",
                               f'Unsupported value: "{s.get("apiGroup", "")}": supported values: "{RBAC_GROUP}"'))
        else:
            causes.append((f"{f}.kind", "FieldValueNotSupported",
                           f'Unsupported value: "{kind or ""}": supported values: "ServiceAccount", "User", "Group"'))
    return causes
