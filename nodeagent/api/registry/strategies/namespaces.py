"""Namespaces (upstream pkg/registry/core/namespace/storage): the `kubernetes` finalizer and the
name label at create; a delete only marks the namespace Terminating, and loops.NamespaceFinalizer
empties it and then removes it."""

from __future__ import annotations

from typing import Any

from nodeagent.api import errors
from nodeagent.api import tables as t
from nodeagent.api.defaults import default_namespace
from nodeagent.api.registry.options import WriteContext
from nodeagent.api.registry.strategy import Strategy
from nodeagent.api.validation import LABEL

Obj = dict[str, Any]
Row = list[Any]

PROTECTED = ("default", "kube-system", "kube-public")  # upstream's immortal namespaces


def _ns_row(o: Obj) -> Row:
    return [t.meta(o).get("name", ""), (o.get("status") or {}).get("phase", ""), t.created(o)]


class NamespaceStrategy(Strategy):
    name_rule = LABEL
    gc_finalizers = False
    printer = t.Printer((("Name", "string", 0), ("Status", "string", 0), ("Age", "string", 0)), _ns_row)

    def prepare_for_create(self, obj: Obj, ctx: WriteContext) -> None:
        default_namespace(obj)
        obj["status"] = {"phase": "Active"}

    def prepare_for_update(self, new: Obj, old: Obj, ctx: WriteContext) -> None:
        new["status"] = old.get("status")

    def check_delete(self, obj: Obj) -> None:
        name = (obj.get("metadata") or {}).get("name", "")
        if name in PROTECTED:
            raise errors.ApiError(403, "Forbidden", f'namespaces "{name}" is forbidden: this namespace may not be '
                                                    "deleted", name=name, kind="namespaces")

    def holds_deletion(self, obj: Obj) -> bool:
        return True

    def prepare_for_delete(self, obj: Obj) -> None:
        obj["status"] = {"phase": "Terminating"}
