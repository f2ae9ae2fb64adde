"""Label and field selectors as the apiserver parses them (the string forms of
k8s.io/apimachinery labels.Parse and fields.ParseSelector), for client-side matching: the fake
client, and components that filter a cache by a Service's or ReplicaSet's selector."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Requirement = tuple[str, str, tuple[str, ...]]  # key, op, values; ops: = != in notin exists !

_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_.\-/]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")


def _split_top(s: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def parse_label_selector(s: str | None) -> list[Requirement]:
    if not s or not s.strip():
        return []
    reqs: list[Requirement] = []
    for part in _split_top(s):
        part = part.strip()
        for op in ("!=", "==", "="):
            if op in part and "(" not in part:
                k, v = part.split(op, 1)
                reqs.append((k.strip(), "!=" if op == "!=" else "=", (v.strip(),)))
                break
        else:
            m = _SET_RE.match(part)
            if not m:
                raise ValueError(f"unable to parse requirement: {part!r}")
            neg, key, op, vals = m.groups()
            if op:
                if neg:
                    raise ValueError(f"unable to parse requirement: {part!r}")
                reqs.append((key, op, tuple(v.strip() for v in vals.split(",") if v.strip())))
            else:
                reqs.append((key, "!" if neg else "exists", ()))
    return reqs


def selector_from_dict(match_labels: dict[str, str] | None,
                       match_expressions: list[dict[str, Any]] | None = None) -> list[Requirement]:
    """A metav1.LabelSelector (matchLabels + matchExpressions) as requirements."""
    reqs: list[Requirement] = [(k, "=", (v,)) for k, v in (match_labels or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for e in match_expressions or []:
        reqs.append((e["key"], ops[e["operator"]], tuple(e.get("values") or ())))
    return reqs


def labels_match(reqs: list[Requirement], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    for key, op, values in reqs:
        present = key in labels
        v = labels.get(key)
        if op == "=" and v != values[0]:
            return False
        if op == "!=" and v == values[0]:
            return False
        if op == "in" and v not in values:
            return False
        if op == "notin" and present and v in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "!" and present:
            return False
    return True


def _field(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return str(cur).lower()
    return str(cur)


def parse_field_selector(s: str | None) -> Callable[[dict[str, Any]], bool]:
    """Field selectors support =, == and != on dotted paths (spec.nodeName, involvedObject.uid, ...)."""
    if not s or not s.strip():
        return lambda obj: True
    terms: list[tuple[str, bool, str]] = []
    for part in s.split(","):
        if "!=" in part:
            k, v = part.split("!=", 1)
            terms.append((k.strip(), False, v.strip()))
        elif "==" in part or "=" in part:
            k, v = part.split("==", 1) if "==" in part else part.split("=", 1)
            terms.append((k.strip(), True, v.strip()))
        else:
            raise ValueError(f"invalid field selector term: {part!r}")

    def match(obj: dict[str, Any]) -> bool:
        return all((_field(obj, k) == v) == eq for k, eq, v in terms)

    return match
