"""Label and field selectors as the apiserver accepts them in ?labelSelector= and ?fieldSelector=.

Label syntax (k8s.io/apimachinery/pkg/labels): comma-separated requirements `k=v`, `k==v`, `k!=v`,
`k in (a,b)`, `k notin (a,b)`, `k` (exists), `!k` (does not exist). Field selectors support `=`, `==`
and `!=` over the fields each resource declares (upstream's field label conversion functions);
an unknown field is a 400 BadRequest, as upstream.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


class SelectorError(ValueError):
    pass


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!":
            return self.key not in labels
        if self.op == "=":
            return labels.get(self.key) == self.values[0]
        if self.op == "!=":
            return labels.get(self.key) != self.values[0]
        if self.op == "in":
            return self.key in labels and labels[self.key] in self.values
        if self.op == "notin":
            return labels.get(self.key) not in self.values
        return False


_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VAL = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_RE = re.compile(rf"^\s*({_KEY})\s*(==|!=|=)\s*({_VAL})\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


def _split_top(s: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def parse_label_selector(s: str | None) -> list[Requirement]:
    if not s or not s.strip():
        return []
    reqs: list[Requirement] = []
    for part in _split_top(s):
        if not part.strip():
            raise SelectorError(f"invalid label selector {s!r}: empty requirement")
        if m := _SET_RE.match(part):
            vals = tuple(v.strip() for v in m.group(4).split(",") if v.strip())
            reqs.append(Requirement(m.group(1), m.group(3), vals))
        elif m := _EQ_RE.match(part):
            op = "=" if m.group(3) in ("=", "==") else "!="
            reqs.append(Requirement(m.group(1), op, (m.group(4),)))
        elif m := _EXISTS_RE.match(part):
            reqs.append(Requirement(m.group(2), "!" if m.group(1) else "exists"))
        else:
            raise SelectorError(f"unable to parse requirement {part.strip()!r} in label selector {s!r}")
    return reqs


def labels_match(reqs: list[Requirement], obj: Obj) -> bool:
    if not reqs:
        return True
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels) for r in reqs)


def selector_from_match_labels(sel: dict[str, Any] | None) -> str:
    """A LabelSelector object ({matchLabels, matchExpressions}) as selector text (Scale status)."""
    if not sel:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for e in sel.get("matchExpressions") or []:
        op = str(e.get("operator", ""))
        key = e.get("key", "")
        vals = ",".join(e.get("values") or [])
        if op == "In":
            parts.append(f"{key} in ({vals})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({vals})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def match_label_selector_object(sel: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether labels satisfy a LabelSelector object; a nil/empty selector matches everything."""
    if not sel:
        return True
    return all(r.matches(labels) for r in parse_label_selector(selector_from_match_labels(sel)))


# --- field selectors ---------------------------------------------------------------------------

def _get(path: str) -> Callable[[Obj], str]:
    keys = path.split(".")

    def f(obj: Obj) -> str:
        cur: Any = obj
        for k in keys:
            if not isinstance(cur, dict):
                return ""
            cur = cur.get(k)
        if cur is None:
            return ""
        if isinstance(cur, bool):
            return "true" if cur else "false"
        return str(cur)

    return f


_COMMON = ("metadata.name", "metadata.namespace")
_FIELDS: dict[str, tuple[str, ...]] = {
    "pods": (*_COMMON, "spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
             "spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP",
             "status.nominatedNodeName"),
    "events": (*_COMMON, "involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
               "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
               "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"),
    "namespaces": (*_COMMON, "status.phase"),
    "nodes": (*_COMMON, "spec.unschedulable"),
    "secrets": (*_COMMON, "type"),
    "replicasets.apps": (*_COMMON, "status.replicas"),
    "jobs.batch": (*_COMMON, "status.successful"),
}


def _event_source(obj: Obj) -> str:
    src = obj.get("source") or {}
    return str(src.get("component") or obj.get("reportingComponent") or "")


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    op: str  # "=" | "!="
    value: str
    getter: Callable[[Obj], str]

    def matches(self, obj: Obj) -> bool:
        v = self.getter(obj)
        return v == self.value if self.op == "=" else v != self.value


def parse_field_selector(s: str | None, resource: str) -> list[FieldRequirement]:
    if not s or not s.strip():
        return []
    allowed = _FIELDS.get(resource, _COMMON)
    reqs: list[FieldRequirement] = []
    for part in s.split(","):
        part = part.strip()
        if not part:
            continue
        for op_text in ("!=", "==", "="):
            if op_text in part:
                field, value = part.split(op_text, 1)
                break
        else:
            raise SelectorError(f"invalid field selector {part!r}: expected field=value or field!=value")
        field = field.strip()
        if field not in allowed:
            raise SelectorError(f"field label not supported: {field}")
        getter = _event_source if (resource == "events" and field == "source") else _get(field)
        reqs.append(FieldRequirement(field, "!=" if op_text == "!=" else "=", value.strip(), getter))
    return reqs


def fields_match(reqs: list[FieldRequirement], obj: Obj) -> bool:
    return all(r.matches(obj) for r in reqs)
