"""JSON merge patch (RFC 7386) and JSON patch (RFC 6902), for the fake client.

Strategic merge patch needs per-field schema (patchMergeKey); the fake applies it as a merge patch
except for lists of objects that carry a "name" key, which it merges by name as most upstream
strategic lists do (containers, ports, env, volumes). Tests that depend on other strategic
directives belong against the real apiserver."""

from __future__ import annotations

import copy
from typing import Any


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


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        if isinstance(patch, list) and isinstance(target, list) and patch and all(
                isinstance(p, dict) and "name" in p for p in patch) and all(
                isinstance(t, dict) and "name" in t for t in target):
            by_name = {t["name"]: t for t in target}
            out = [strategic_merge_patch(by_name.pop(p["name"], {}), p) for p in patch]
            return out + list(by_name.values())
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$"):
            continue
        if v is None:
            result.pop(k, None)
        else:
            result[k] = strategic_merge_patch(result.get(k), v)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = _pointer(op["path"])
        kind = op["op"]
        if kind == "test":
            cur = doc
            for p in parts:
                cur = cur[int(p)] if isinstance(cur, list) else cur[p]
            if cur != op.get("value"):
                raise ValueError(f"test failed at {op['path']}")
            continue
        if kind in ("move", "copy"):
            src = doc
            for p in _pointer(op["from"]):
                src = src[int(p)] if isinstance(src, list) else src[p]
            val = copy.deepcopy(src)
            if kind == "move":
                doc = json_patch(doc, [{"op": "remove", "path": op["from"]}])
            doc = json_patch(doc, [{"op": "add", "path": op["path"], "value": val}])
            continue
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        if isinstance(parent, list):
            idx = len(parent) if last == "-" else int(last)
            if kind == "add":
                parent.insert(idx, op["value"])
            elif kind == "remove":
                del parent[idx]
            elif kind == "replace":
                parent[idx] = op["value"]
        else:
            if kind in ("add", "replace"):
                if kind == "replace" and last not in parent:
                    raise KeyError(op["path"])
                parent[last] = op["value"]
            elif kind == "remove":
                del parent[last]
    return doc
