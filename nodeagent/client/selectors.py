"""Label and field selectors for client-side matching (components filtering a cache by a Service's
or ReplicaSet's selector, and the fake client). The grammar is the apiserver's own
(nodeagent.machinery.selectors, part of the API's object types), so both sides agree on every selector."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nodeagent.machinery.kinds import Kind
from nodeagent.machinery.selectors import (
    Requirement,
    SelectorError,
    fields_match,
    parse_label_selector,
)
from nodeagent.machinery.selectors import parse_field_selector as _parse_fields

_OPS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}


def selector_from_dict(match_labels: dict[str, str] | None,
                       match_expressions: list[dict[str, Any]] | None = None) -> list[Requirement]:
    """A metav1.LabelSelector (matchLabels + matchExpressions) as requirements."""
    reqs = [Requirement(k, "=", (v,)) for k, v in (match_labels or {}).items()]
    for e in match_expressions or []:
        op = _OPS.get(e.get("operator", ""))
        if op is None:
            raise SelectorError(f"unknown matchExpressions operator {e.get('operator')!r}")
        reqs.append(Requirement(e["key"], op, tuple(e.get("values") or ())))
    return reqs


def labels_match(reqs: list[Requirement], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in reqs)


def field_matcher(kind: Kind, selector: str | None) -> Callable[[dict[str, Any]], bool]:
    """The fields a resource supports, as the apiserver checks them (unknown ones raise)."""
    resource = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
    reqs = _parse_fields(selector, resource)
    return lambda obj: fields_match(reqs, obj)


__all__ = ["Requirement", "SelectorError", "field_matcher", "labels_match", "parse_label_selector",
           "selector_from_dict"]
