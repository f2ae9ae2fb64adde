"""Leases (coordination.k8s.io): node heartbeats and leader election; a PUT creates them."""

from __future__ import annotations

from typing import Any

from nodeagent.api import tables as t
from nodeagent.api.registry.strategy import Strategy

Obj = dict[str, Any]
Row = list[Any]


def _lease_row(o: Obj) -> Row:
    return [t.meta(o).get("name", ""), (o.get("spec") or {}).get("holderIdentity") or "", t.created(o)]


class LeaseStrategy(Strategy):
    create_on_update = True
    printer = t.Printer((("Name", "string", 0), ("Holder", "string", 0), ("Age", "string", 0)), _lease_row)
