"""Server-side Table output (meta.k8s.io/v1 Table) with upstream's columns.

kubectl asks `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints what the server
sends; the columns and cell formats follow pkg/printers/internalversion/printers.go. Each kind's
columns and row function are its strategy's `printer` (registry/strategies/); this module holds
the Table machinery and the cell helpers they share.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
Column = tuple[str, str, int]  # name, type, priority
Row = list[Any]


def wants_table(accept: str) -> bool:
    for part in accept.split(","):
        params = {p.strip().split("=", 1)[0]: p.strip().split("=", 1)[1] for p in part.split(";")[1:] if "=" in p}
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            return True
        if part.strip().split(";")[0] == "application/json" and "as=" not in part:
            return False  # plain JSON preferred before any Table entry
    return False


def wants_partial_metadata(accept: str) -> str | None:
    for part in accept.split(","):
        for p in part.split(";")[1:]:
            p = p.strip()
            if p in ("as=PartialObjectMetadata", "as=PartialObjectMetadataList"):
                return p[3:]
    return None


def parse_time(ts: Any) -> datetime.datetime | None:
    if not isinstance(ts, str) or not ts:
        return None
    try:
        return datetime.datetime.strptime(ts.replace(".000000", "")[:20].rstrip("Z") + "Z", "%Y-%m-%dT%H:%M:%SZ") \
            .replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    if seconds < -1:
        return "<invalid>"
    s = int(max(0, seconds))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d{h % 24}h" if h % 24 else f"{h // 24}d"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    y = h // (24 * 365)
    if y < 8:
        return f"{y}y{(h // 24) % 365}d"
    return f"{y}y"


def age(ts: Any) -> str:
    t = parse_time(ts)
    if t is None:
        return "<unknown>"
    return human_duration((datetime.datetime.now(datetime.UTC) - t).total_seconds())


def meta(o: Obj) -> Obj:
    return o.get("metadata") or {}


def name(o: Obj) -> str:
    return str(meta(o).get("name", ""))


def created(o: Obj) -> str:
    return age(meta(o).get("creationTimestamp"))


def more(items: list[str], n: int = 3) -> str:
    if not items:
        return "<none>"
    if len(items) > n:
        return ",".join(items[:n]) + f" + {len(items) - n} more..."
    return ",".join(items)


def containers(spec: Obj) -> tuple[str, str]:
    cs = [c for c in (spec.get("containers") or []) if isinstance(c, dict)]
    return ",".join(str(c.get("name", "")) for c in cs), ",".join(str(c.get("image", "")) for c in cs)


@dataclass(frozen=True)
class Printer:
    """One kind's Table: its column definitions and the cells of one object's row."""

    columns: tuple[Column, ...]
    row: Callable[[Obj], Row]


def _default_row(o: Obj) -> Row:
    return [name(o), meta(o).get("creationTimestamp", "")]


DEFAULT_PRINTER = Printer((("Name", "string", 0), ("Created At", "date", 0)), _default_row)


def _partial(o: Obj) -> Obj:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata") or {}}


def column_definitions(printer: Printer) -> list[Obj]:
    out = []
    for col, typ, prio in printer.columns:
        d: Obj = {"name": col, "type": typ, "format": "name" if col == "Name" else "", "description": col,
                  "priority": prio}
        out.append(d)
    return out


def row(printer: Printer, o: Obj, include_object: str) -> Obj:
    r: Obj = {"cells": printer.row(o)}
    if include_object == "Object":
        r["object"] = o
    elif include_object != "None":
        r["object"] = _partial(o)
    return r


def table(printer: Printer, objs: list[Obj], resource_version: str, include_object: str = "PartialObjectMetadata",
          continue_token: str | None = None, remaining: int | None = None, with_columns: bool = True) -> Obj:
    md: Obj = {"resourceVersion": resource_version}
    if continue_token:
        md["continue"] = continue_token
    if remaining is not None:
        md["remainingItemCount"] = remaining
    t: Obj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": md,
              "columnDefinitions": column_definitions(printer) if with_columns else None,
              "rows": [row(printer, o, include_object) for o in objs]}
    return t
