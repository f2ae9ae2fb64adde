"""Server-side apply (application/apply-patch+yaml), simplified.

What we keep from upstream (structured-merge-diff): each field manager's applied field set is
recorded in metadata.managedFields (operation Apply, fieldsV1 format, keyed list items as
`k:{"name":"c"}`); applying merges the config into the live object with the strategic-merge list
keys, and fields the same manager applied before but left out now are removed.

What we leave out: ownership by non-apply managers and conflict detection. Every apply behaves as
`--force-conflicts`, and a field another manager also set is still removed when this manager
drops it. Status is never applied through the main resource.
"""

from __future__ import annotations

import json
from typing import Any

from nodeagent.machinery.patch import list_strategy, strategic_merge

Path = tuple[str, ...]
_SKIP_TOP = {"apiVersion", "kind", "status"}
_SKIP_META = {"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
              "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"}


def _item_key(key: str, item: dict[str, Any]) -> str:
    return "k:" + json.dumps({key: item.get(key)}, separators=(",", ":"), sort_keys=True)


def _walk(v: Any, names: tuple[str, ...], path: Path, out: set[Path]) -> None:
    if isinstance(v, dict) and v:
        for k, x in v.items():
            _walk(x, (*names, k), (*path, f"f:{k}"), out)
        return
    if isinstance(v, list) and names:
        strategy, key = list_strategy(names)
        if strategy == "merge" and key and all(isinstance(i, dict) and key in i for i in v):
            for item in v:
                ipath = (*path, _item_key(key, item))
                out.add((*ipath, "."))
                for k, x in item.items():
                    _walk(x, (*names, k), (*ipath, f"f:{k}"), out)
            return
    out.add(path)


def field_set(config: dict[str, Any]) -> set[Path]:
    """The leaf paths a config sets (fieldsV1 segments)."""
    out: set[Path] = set()
    for k, v in config.items():
        if k in _SKIP_TOP:
            continue
        if k == "metadata" and isinstance(v, dict):
            for mk, mv in v.items():
                if mk not in _SKIP_META:
                    _walk(mv, ("metadata", mk), ("f:metadata", f"f:{mk}"), out)
            continue
        _walk(v, (k,), (f"f:{k}",), out)
    return out


def to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for p in sorted(paths):
        cur = root
        for seg in p:
            cur = cur.setdefault(seg, {})
    return root


def from_fields_v1(tree: Any, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    if not isinstance(tree, dict):
        return out
    for seg, sub in tree.items():
        p = (*prefix, seg)
        if seg == "." or not sub:
            out.add(p)
        else:
            out |= from_fields_v1(sub, p)
    return out


def _remove(obj: Any, path: Path) -> None:
    cur = obj
    for i, seg in enumerate(path):
        last = i == len(path) - 1
        if seg.startswith("f:"):
            if not isinstance(cur, dict) or seg[2:] not in cur:
                return
            if last:
                del cur[seg[2:]]
                return
            cur = cur[seg[2:]]
        elif seg.startswith("k:"):
            if not isinstance(cur, list):
                return
            want = json.loads(seg[2:])
            idx = next((j for j, it in enumerate(cur) if isinstance(it, dict)
                        and all(it.get(k) == v for k, v in want.items())), None)
            if idx is None:
                return
            if i + 1 < len(path) and path[i + 1] == ".":
                cur.pop(idx)
                return
            cur = cur[idx]
        else:
            return


def apply(live: dict[str, Any] | None, config: dict[str, Any], manager: str, api_version: str,
          now: str) -> dict[str, Any]:
    """The object after `manager` applies `config` to `live` (None: it does not exist yet)."""
    new_fields = field_set(config)
    meta = live.get("metadata") if live else None
    entries = list(meta.get("managedFields") or []) if isinstance(meta, dict) else []
    prev: set[Path] = set()
    for e in entries:
        if isinstance(e, dict) and e.get("manager") == manager and e.get("operation") == "Apply":
            prev |= from_fields_v1(e.get("fieldsV1"))
    body = {k: v for k, v in config.items() if k != "status"}
    if live is None:
        result = json.loads(json.dumps(body))
    else:
        result = json.loads(json.dumps(live))
        # Whole list items first (their key fields must still be there to find them), then fields.
        gone = prev - new_fields
        for p in sorted((p for p in gone if p[-1] == "."), key=len):
            _remove(result, p)
        for p in sorted((p for p in gone if p[-1] != "."), key=len, reverse=True):
            _remove(result, p)
        result = strategic_merge(result, body)
    entries = [e for e in entries if not (isinstance(e, dict) and e.get("manager") == manager
                                          and e.get("operation") == "Apply")]
    entries.append({"manager": manager, "operation": "Apply", "apiVersion": api_version, "time": now,
                    "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(new_fields)})
    result.setdefault("metadata", {})["__managedFields"] = entries
    return result
