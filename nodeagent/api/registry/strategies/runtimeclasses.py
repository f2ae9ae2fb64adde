"""RuntimeClasses (node.k8s.io/v1, upstream pkg/registry/node/runtimeclass/strategy.go and
pkg/apis/node/validation): cluster-scoped, no status; `handler` (the CRI runtime handler, a DNS
label) is required and immutable; `overhead.podFixed` holds non-negative quantities the
RuntimeClass admission (nodeagent/api/admission/runtimeclass.py) copies into each pod's spec.overhead;
`scheduling` has the nodeSelector and tolerations it merges into the pod."""

from __future__ import annotations

from typing import Any

from nodeagent.api import tables as t
from nodeagent.api.registry.options import WriteContext
from nodeagent.api.registry.strategy import Strategy
from nodeagent.api.validation import Cause, dns1123_label_errors, label_value_errors, qualified_name_errors
from nodeagent.machinery.quantity import parse_quantity

Obj = dict[str, Any]
Row = list[Any]

TOLERATION_OPERATORS = ("Exists", "Equal")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def _row(o: Obj) -> Row:
    return [t.meta(o).get("name", ""), o.get("handler") or "", t.created(o)]


def _handler_causes(handler: Any) -> list[Cause]:
    if not handler:
        return [("handler", "FieldValueRequired", "Required value")]
    if not isinstance(handler, str):
        return [("handler", "FieldValueInvalid", "Invalid value: must be a string")]
    return [("handler", "FieldValueInvalid", f'Invalid value: "{handler}": {e}') for e in dns1123_label_errors(handler)]


def _overhead_causes(overhead: Any) -> list[Cause]:
    if overhead is None:
        return []
    if not isinstance(overhead, dict) or not isinstance(overhead.get("podFixed", {}), dict):
        return [("overhead.podFixed", "FieldValueInvalid", "Invalid value: must be a map of resource quantities")]
    causes: list[Cause] = []
    for name, q in (overhead.get("podFixed") or {}).items():
        fp = f"overhead.podFixed[{name}]"
        causes += [(fp, "FieldValueInvalid", f'Invalid value: "{name}": {e}') for e in qualified_name_errors(name)]
        try:
            if parse_quantity(q) < 0:
                causes.append((fp, "FieldValueInvalid", f'Invalid value: "{q}": must be greater than or equal to 0'))
        except ValueError:
            causes.append((fp, "FieldValueInvalid", f'Invalid value: "{q}": quantities must match the regular '
                                                    r"expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"))
    return causes


def _toleration_causes(tols: Any) -> list[Cause]:
    if tols is None:
        return []
    if not isinstance(tols, list):
        return [("scheduling.tolerations", "FieldValueInvalid", "Invalid value: must be a list")]
    causes: list[Cause] = []
    for i, tol in enumerate(tols):
        fp = f"scheduling.tolerations[{i}]"
        if not isinstance(tol, dict):
            causes.append((fp, "FieldValueInvalid", "Invalid value: must be an object"))
            continue
        op = tol.get("operator") or "Equal"
        if op not in TOLERATION_OPERATORS:
            causes.append((f"{fp}.operator", "FieldValueNotSupported",
                           f'Unsupported value: "{op}": supported values: "Equal", "Exists"'))
        if op == "Exists" and tol.get("value"):
            causes.append((f"{fp}.operator", "FieldValueInvalid",
                           "Invalid value: value must be empty when `operator` is 'Exists'"))
        if tol.get("effect") and tol["effect"] not in TAINT_EFFECTS:
            causes.append((f"{fp}.effect", "FieldValueNotSupported", f'Unsupported value: "{tol["effect"]}": '
                           'supported values: "NoSchedule", "PreferNoSchedule", "NoExecute"'))
        if tol.get("key"):
            causes += [(f"{fp}.key", "FieldValueInvalid", f'Invalid value: "{tol["key"]}": {e}')
                       for e in qualified_name_errors(str(tol["key"]))]
    return causes


def _scheduling_causes(scheduling: Any) -> list[Cause]:
    if scheduling is None:
        return []
    if not isinstance(scheduling, dict):
        return [("scheduling", "FieldValueInvalid", "Invalid value: must be an object")]
    causes: list[Cause] = []
    sel = scheduling.get("nodeSelector")
    if sel is not None and not (isinstance(sel, dict) and all(isinstance(v, str) for v in sel.values())):
        causes.append(("scheduling.nodeSelector", "FieldValueInvalid", "Invalid value: must be a map of strings"))
    elif sel:
        for k, v in sel.items():
            causes += [("scheduling.nodeSelector", "FieldValueInvalid", f'Invalid value: "{k}": {e}')
                       for e in qualified_name_errors(k)]
            causes += [("scheduling.nodeSelector", "FieldValueInvalid", f'Invalid value: "{v}": {e}')
                       for e in label_value_errors(v)]
    return causes + _toleration_causes(scheduling.get("tolerations"))


class RuntimeClassStrategy(Strategy):
    printer = t.Printer((("Name", "string", 0), ("Handler", "string", 0), ("Age", "string", 0)), _row)

    def validate(self, obj: Obj, ctx: WriteContext) -> list[Cause]:
        return (_handler_causes(obj.get("handler")) + _overhead_causes(obj.get("overhead"))
                + _scheduling_causes(obj.get("scheduling")))

    def validate_update(self, new: Obj, old: Obj, ctx: WriteContext) -> list[Cause]:
        causes = self.validate(new, ctx)
        if new.get("handler") != old.get("handler"):
            causes.append(("handler", "FieldValueInvalid",
                           f'Invalid value: "{new.get("handler")}": field is immutable'))
        return causes
