"""PolicyRule matching (upstream plugin/pkg/auth/authorizer/rbac/rbac.go RuleAllows) and covering
(pkg/registry/rbac/validation/policy_comparator.go Covers), on rules as plain JSON dicts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nodeagent.api.auth.attributes import Attributes

Rule = dict[str, Any]


def _strs(rule: Rule, key: str) -> list[str]:
    v = rule.get(key)
    return [str(x) for x in v] if isinstance(v, list) else []


def verb_matches(rule: Rule, verb: str) -> bool:
    verbs = _strs(rule, "verbs")
    return "*" in verbs or verb in verbs


def group_matches(rule: Rule, group: str) -> bool:
    groups = _strs(rule, "apiGroups")
    return "*" in groups or group in groups


def resource_matches(rule: Rule, combined: str, subresource: str) -> bool:
    for r in _strs(rule, "resources"):
        if r == "*" or r == combined:
            return True
        # "*/scale" matches the scale subresource of every resource
        if subresource and len(r) == len(subresource) + 2 and r.startswith("*/") and r.endswith(subresource):
            return True
    return False


def resource_name_matches(rule: Rule, name: str) -> bool:
    names = _strs(rule, "resourceNames")
    return not names or name in names


def non_resource_url_matches(rule: Rule, path: str) -> bool:
    for u in _strs(rule, "nonResourceURLs"):
        if u == "*" or u == path or (u.endswith("*") and path.startswith(u[:-1])):
            return True
    return False


def rule_allows(attrs: Attributes, rule: Rule) -> bool:
    if attrs.resource_request:
        combined = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
        return (verb_matches(rule, attrs.verb) and group_matches(rule, attrs.api_group)
                and resource_matches(rule, combined, attrs.subresource)
                and resource_name_matches(rule, attrs.name))
    return verb_matches(rule, attrs.verb) and non_resource_url_matches(rule, attrs.path)


def rules_allow(attrs: Attributes, rules: Iterable[Rule]) -> bool:
    return any(rule_allows(attrs, r) for r in rules)


# --- covering (escalation checks) -----------------------------------------------------------
def breakdown(rule: Rule) -> list[Rule]:
    """One rule per (group, resource, verb[, name]) or (url, verb), as upstream BreakdownRule."""
    out: list[Rule] = []
    verbs = _strs(rule, "verbs")
    names = _strs(rule, "resourceNames")
    for g in _strs(rule, "apiGroups"):
        for r in _strs(rule, "resources"):
            for v in verbs:
                if names:
                    out.extend({"apiGroups": [g], "resources": [r], "verbs": [v], "resourceNames": [n]} for n in names)
                else:
                    out.append({"apiGroups": [g], "resources": [r], "verbs": [v]})
    for u in _strs(rule, "nonResourceURLs"):
        out.extend({"nonResourceURLs": [u], "verbs": [v]} for v in verbs)
    return out


def _resources_cover(owner: list[str], servant: list[str]) -> bool:
    if "*" in owner:
        return True
    for r in servant:
        if r in owner:
            continue
        if "/" in r and "*/" + r.split("/", 1)[1] in owner:
            continue
        return False
    return True


def _urls_cover(owner: list[str], servant: list[str]) -> bool:
    for u in servant:
        if not any(o == u or o == "*" or (o.endswith("*") and u.startswith(o[:-1])) for o in owner):
            return False
    return True


def rule_covers(owner: Rule, servant: Rule) -> bool:
    ov, sv = _strs(owner, "verbs"), _strs(servant, "verbs")
    og, sg = _strs(owner, "apiGroups"), _strs(servant, "apiGroups")
    on, sn = _strs(owner, "resourceNames"), _strs(servant, "resourceNames")
    verbs = "*" in ov or all(v in ov for v in sv)
    groups = "*" in og or all(g in og for g in sg)
    resources = _resources_cover(_strs(owner, "resources"), _strs(servant, "resources"))
    urls = _urls_cover(_strs(owner, "nonResourceURLs"), _strs(servant, "nonResourceURLs"))
    names = (not on) if not sn else (not on or all(n in on for n in sn))
    return verbs and groups and resources and urls and names


def uncovered(owner_rules: list[Rule], servant_rules: Iterable[Rule]) -> list[Rule]:
    """The atomic servant rules no owner rule covers (empty: the owner holds all of them)."""
    missing: list[Rule] = []
    for rule in servant_rules:
        for atom in breakdown(rule):
            if not any(rule_covers(o, atom) for o in owner_rules):
                missing.append(atom)
    return missing


def compact_string(rule: Rule) -> str:
    """Upstream PolicyRule.CompactString: {APIGroups:[""], Resources:["pods"], Verbs:["get"]}."""
    parts = []
    for key, label in (("apiGroups", "APIGroups"), ("resources", "Resources"), ("resourceNames", "ResourceNames"),
                       ("nonResourceURLs", "NonResourceURLs"), ("verbs", "Verbs")):
        vals = _strs(rule, key)
        if vals:
            parts.append(f"{label}:[" + ", ".join(f'"{v}"' for v in vals) + "]")
    return "{" + ", ".join(parts) + "}"
