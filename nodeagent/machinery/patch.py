"""The three PATCH flavours the apiserver accepts.

- JSON merge patch (RFC 7386, application/merge-patch+json).
- Strategic merge patch (application/strategic-merge-patch+json): a merge patch where lists
  with a patchMergeKey are merged item by item instead of replaced, plus the directives kubectl
  sends ($patch: replace|delete|merge, $retainKeys, $setElementOrder/<field>,
  $deleteFromPrimitiveList/<field>). The merge keys are those of the upstream Go types
  (`patchStrategy:"merge" patchMergeKey:"..."` tags in k8s.io/api); other lists are atomic.
- JSON patch (RFC 6902, application/json-patch+json) with RFC 6901 pointers.
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    """The patch cannot be applied to the object (422) or is malformed (400 when `malformed`)."""

    def __init__(self, message: str, malformed: bool = False) -> None:
        super().__init__(message)
        self.malformed = malformed


# --- RFC 7386 ----------------------------------------------------------------------------------

def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


# --- strategic merge patch ---------------------------------------------------------------------

_MERGE_KEYS: dict[str, str] = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "volumes": "name", "env": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath",
    "imagePullSecrets": "name", "hostAliases": "ip", "conditions": "type", "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey", "resourceClaims": "name", "schedulingGates": "name",
    "podIPs": "ip", "hostIPs": "ip", "secrets": "name",
}
_PRIMITIVE_MERGE = {"finalizers"}
_CONTAINER_LISTS = {"containers", "initContainers", "ephemeralContainers"}


def list_strategy(path: tuple[str, ...]) -> tuple[str, str | None]:
    """("merge", key) for keyed merge, ("merge", None) for a primitive set merge, ("replace", None)."""
    field = path[-1]
    if field == "ports":
        if any(p in _CONTAINER_LISTS for p in path[:-1]):
            return "merge", "containerPort"
        if path == ("spec", "ports"):
            return "merge", "port"  # ServiceSpec.Ports
        return "replace", None
    if field == "addresses":
        return ("merge", "type") if len(path) >= 2 and path[-2] == "status" else ("replace", None)
    if field in _PRIMITIVE_MERGE:
        return "merge", None
    key = _MERGE_KEYS.get(field)
    if key is not None:
        return "merge", key
    return "replace", None


def _strip_directives(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _strip_directives(x) for k, x in v.items()
                if k not in ("$patch", "$retainKeys") and not k.startswith("$setElementOrder/")
                and not k.startswith("$deleteFromPrimitiveList/")}
    if isinstance(v, list):
        return [_strip_directives(x) for x in v]
    return v


def _merge_keyed_list(orig: list[Any], patch: list[Any], key: str, path: tuple[str, ...]) -> list[Any]:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [_strip_directives(p) for p in patch if not (isinstance(p, dict) and p.get("$patch") == "replace")]
    result = [copy.deepcopy(x) for x in orig]
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(f"{'.'.join(path)}: expected a list of objects with merge key {key!r}")
        kv = item.get(key)
        idx = next((i for i, o in enumerate(result) if isinstance(o, dict) and o.get(key) == kv), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                result.pop(idx)
            continue
        if idx is None:
            result.append(_strip_directives(item))
        else:
            result[idx] = strategic_merge(result[idx], item, path)
    return result


def _apply_order(values: list[Any], order: list[Any], key: str | None) -> list[Any]:
    """$setElementOrder: items named in `order` first in that order, then the rest as they were."""
    def ident(v: Any) -> Any:
        return v.get(key) if key and isinstance(v, dict) else repr(v) if isinstance(v, dict | list) else v
    wanted = [ident(o) if not (key and isinstance(o, dict)) else o.get(key) for o in order]
    pos = {w: i for i, w in enumerate(wanted)}
    ranked = sorted(enumerate(values), key=lambda iv: (pos.get(ident(iv[1]), len(pos)), iv[0]))
    return [v for _, v in ranked]


def strategic_merge(original: Any, patch: Any, path: tuple[str, ...] = ()) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip_directives(patch)
    if directive == "delete":
        return None
    result: dict[str, Any] = dict(original) if isinstance(original, dict) else {}
    orders: dict[str, list[Any]] = {}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys"):
            continue
        if k.startswith("$setElementOrder/"):
            if isinstance(v, list):
                orders[k.split("/", 1)[1]] = v
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            if isinstance(result.get(field), list) and isinstance(v, list):
                result[field] = [x for x in result[field] if x not in v]
            continue
        if v is None:
            result.pop(k, None)
            continue
        sub = (*path, k)
        if isinstance(v, dict):
            merged = strategic_merge(result.get(k), v, sub)
            if merged is None:
                result.pop(k, None)
            else:
                result[k] = merged
        elif isinstance(v, list):
            strategy, key = list_strategy(sub)
            existing = result.get(k)
            cur: list[Any] = existing if isinstance(existing, list) else []
            if strategy == "merge" and key:
                result[k] = _merge_keyed_list(cur, v, key, sub)
            elif strategy == "merge":
                merged_list = list(cur)
                merged_list += [x for x in v if x not in merged_list]
                result[k] = merged_list
            else:
                result[k] = _strip_directives(v)
        else:
            result[k] = v
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            _, key = list_strategy((*path, field))
            result[field] = _apply_order(result[field], order, key)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


# --- RFC 6902 ----------------------------------------------------------------------------------

def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError(f"invalid JSON pointer {path!r}", malformed=True)
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], op: str) -> tuple[Any, str]:
    if not parts:
        raise PatchError(f"{op} operation does not apply to the whole document")
    cur = doc
    for p in parts[:-1]:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            raise PatchError(f"{op} operation does not apply: doc is missing path: /{'/'.join(parts)}")
    return cur, parts[-1]


def _get(doc: Any, parts: list[str], op: str) -> Any:
    if not parts:
        return doc
    parent, last = _parent(doc, parts, op)
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise PatchError(f"{op} operation does not apply: doc is missing path: /{'/'.join(parts)}")


def _remove(doc: Any, parts: list[str], op: str) -> Any:
    parent, last = _parent(doc, parts, op)
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise PatchError(f"{op} operation does not apply: doc is missing path: /{'/'.join(parts)}")


def _add(doc: Any, parts: list[str], value: Any, op: str) -> Any:
    if not parts:
        return value
    parent, last = _parent(doc, parts, op)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise PatchError(f"{op} operation does not apply: index out of range: /{'/'.join(parts)}")
    else:
        raise PatchError(f"{op} operation does not apply: doc is missing path: /{'/'.join(parts)}")
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations", malformed=True)
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op:
            raise PatchError(f"invalid JSON patch operation {op!r}", malformed=True)
        kind = op["op"]
        parts = _pointer(op.get("path"))
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"{kind} operation needs a value", malformed=True)
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op["value"]), kind)
        elif kind == "remove":
            _remove(doc, parts, kind)
        elif kind == "replace":
            _get(doc, parts, kind)
            if not parts:
                doc = copy.deepcopy(op["value"])
            else:
                _remove(doc, parts, kind)
                doc = _add(doc, parts, copy.deepcopy(op["value"]), kind)
        elif kind in ("move", "copy"):
            src = _pointer(op.get("from"))
            value = _get(doc, src, kind)
            if kind == "move":
                _remove(doc, src, kind)
            doc = _add(doc, parts, copy.deepcopy(value), kind)
        elif kind == "test":
            if _get(doc, parts, kind) != op["value"]:
                raise PatchError(f"testing value /{'/'.join(parts)} failed")
        else:
            raise PatchError(f"unknown JSON patch operation {kind!r}", malformed=True)
    return doc
