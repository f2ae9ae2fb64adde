"""Events: any path segment as a name (upstream ValidateEventCreate), a PUT creates them, and they
expire after --event-ttl (loops.EventExpiry)."""

from __future__ import annotations

from typing import Any

from nodeagent.api import tables as t
from nodeagent.api.registry.strategy import Strategy
from nodeagent.api.validation import PATH_SEGMENT

Obj = dict[str, Any]
Row = list[Any]


def _event_row(o: Obj) -> Row:
    io = o.get("involvedObject") or {}
    src = o.get("source") or {}
    source = src.get("component") or o.get("reportingComponent") or ""
    if src.get("host"):
        source = f"{source}, {src['host']}"
    first = o.get("firstTimestamp") or o.get("eventTime") or t.meta(o).get("creationTimestamp")
    last = o.get("lastTimestamp") or (o.get("series") or {}).get("lastObservedTime") or o.get("eventTime") or first
    count = o.get("count") or (o.get("series") or {}).get("count") or 1
    last_seen = t.age(last)
    if count > 1 and first and first != last:
        last_seen = f"{t.age(last)} (x{count} over {t.age(first)})"
    return [last_seen, o.get("type", ""), o.get("reason", ""),
            f"{str(io.get('kind', '')).lower()}/{io.get('name', '')}", io.get("fieldPath", ""), source,
            str(o.get("message", "")).strip(), t.age(first), count, t.meta(o).get("name", "")]


_EVENT_COLS: list[t.Column] = [("Last Seen", "string", 0), ("Type", "string", 0), ("Reason", "string", 0),
                             ("Object", "string", 0), ("Subobject", "string", 1), ("Source", "string", 1),
                             ("Message", "string", 0), ("First Seen", "string", 1), ("Count", "integer", 1),
                             ("Name", "string", 1)]


class EventStrategy(Strategy):
    name_rule = PATH_SEGMENT
    create_on_update = True
    printer = t.Printer(tuple(_EVENT_COLS), _event_row)
