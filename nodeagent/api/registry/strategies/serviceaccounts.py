"""ServiceAccounts: stored and listed; tokens for them are issue 14's."""

from __future__ import annotations

from typing import Any

from nodeagent.api import tables as t
from nodeagent.api.registry.strategy import Strategy

Obj = dict[str, Any]
Row = list[Any]


def _sa_row(o: Obj) -> Row:
    return [t.meta(o).get("name", ""), len(o.get("secrets") or []), t.created(o)]


class ServiceAccountStrategy(Strategy):
    printer = t.Printer((("Name", "string", 0), ("Secrets", "integer", 0), ("Age", "string", 0)), _sa_row)
