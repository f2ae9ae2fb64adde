"""ClusterRole aggregation (upstream pkg/controller/clusterroleaggregation): a ClusterRole with an
aggregationRule holds the rules of every ClusterRole its selectors match, in name order, without
duplicates. Pure, shared by the apiserver's bootstrap and the controller that keeps it current."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nodeagent.machinery.selectors import match_label_selector_object

Obj = dict[str, Any]


def _selectors(role: Obj) -> list[Obj]:
    rule = role.get("aggregationRule")
    if not isinstance(rule, dict):
        return []
    return [s for s in rule.get("clusterRoleSelectors") or [] if isinstance(s, dict)]


def is_aggregated(role: Obj) -> bool:
    return bool(_selectors(role))


def aggregated_rules(role: Obj, roles: Iterable[Obj]) -> list[Obj]:
    name = (role.get("metadata") or {}).get("name")
    out: list[Obj] = []
    matched = []
    for sel in _selectors(role):
        for other in roles:
            meta = other.get("metadata") or {}
            if meta.get("name") != name and other not in matched and \
                    match_label_selector_object(sel, meta.get("labels") or {}):
                matched.append(other)
    for other in sorted(matched, key=lambda o: str((o.get("metadata") or {}).get("name", ""))):
        for rule in other.get("rules") or []:
            if rule not in out:
                out.append(rule)
    return out
