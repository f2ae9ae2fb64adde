"""Secrets and ConfigMaps: maps of strings; a Secret's type defaults to Opaque and never changes,
and its write-only stringData is folded into data (upstream pkg/registry/core/secret/strategy.go)."""

from __future__ import annotations

from typing import Any

from nodeagent.api import tables as t
from nodeagent.api.defaults import fold_string_data, validate_data_maps
from nodeagent.api.registry.options import WriteContext
from nodeagent.api.registry.strategy import Strategy
from nodeagent.api.validation import Cause

Obj = dict[str, Any]
Row = list[Any]


def _cm_row(o: Obj) -> Row:
    return [t.meta(o).get("name", ""), len(o.get("data") or {}) + len(o.get("binaryData") or {}), t.created(o)]


def _secret_row(o: Obj) -> Row:
    return [t.meta(o).get("name", ""), o.get("type", ""), len(o.get("data") or {}), t.created(o)]


class ConfigMapStrategy(Strategy):
    printer = t.Printer((("Name", "string", 0), ("Data", "integer", 0), ("Age", "string", 0)), _cm_row)

    def validate(self, obj: Obj, ctx: WriteContext) -> list[Cause]:
        return validate_data_maps(obj)

    def validate_update(self, new: Obj, old: Obj, ctx: WriteContext) -> list[Cause]:
        return validate_data_maps(new)


class SecretStrategy(Strategy):
    printer = t.Printer((("Name", "string", 0), ("Type", "string", 0), ("Data", "integer", 0), ("Age", "string", 0)),
                        _secret_row)

    def default(self, obj: Obj) -> None:
        obj.setdefault("type", "Opaque")

    def validate(self, obj: Obj, ctx: WriteContext) -> list[Cause]:
        return validate_data_maps(obj)

    def canonicalize(self, obj: Obj) -> None:
        fold_string_data(obj)

    def validate_update(self, new: Obj, old: Obj, ctx: WriteContext) -> list[Cause]:
        causes = validate_data_maps(new)
        if new.get("type") != old.get("type"):
            causes.append(("type", "FieldValueInvalid", "Invalid value: field is immutable"))
        return causes
