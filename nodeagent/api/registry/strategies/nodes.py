"""Nodes (upstream pkg/registry/core/node/strategy.go): cluster-scoped, status through the status
subresource; the kubelet registers and heartbeats, the node lifecycle controller taints."""

from __future__ import annotations

from typing import Any

from nodeagent.api import tables as t
from nodeagent.api.registry.strategy import Strategy
from nodeagent.api.validation import Cause, validate_node_update

Obj = dict[str, Any]
Row = list[Any]


def _node_row(o: Obj) -> Row:
    meta, spec, status = t.meta(o), o.get("spec") or {}, o.get("status") or {}
    conds = {c.get("type"): c.get("status") for c in status.get("conditions") or [] if isinstance(c, dict)}
    ready = conds.get("Ready")
    st = "Ready" if ready == "True" else "NotReady" if ready == "False" else "Unknown"
    if spec.get("unschedulable"):
        st += ",SchedulingDisabled"
    labels = meta.get("labels") or {}
    role_set = {k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/") and k.split("/", 1)[1]}
    if labels.get("kubernetes.io/role"):
        role_set.add(str(labels["kubernetes.io/role"]))
    roles = sorted(role_set)
    info = status.get("nodeInfo") or {}
    addrs = {a.get("type"): a.get("address") for a in status.get("addresses") or [] if isinstance(a, dict)}
    return [meta.get("name", ""), st, ",".join(roles) or "<none>", t.created(o), info.get("kubeletVersion", ""),
            addrs.get("InternalIP") or "<none>", addrs.get("ExternalIP") or "<none>",
            info.get("osImage") or "<unknown>", info.get("kernelVersion") or "<unknown>",
            info.get("containerRuntimeVersion") or "<unknown>"]


_NODE_COLS: list[t.Column] = [("Name", "string", 0), ("Status", "string", 0), ("Roles", "string", 0),
                            ("Age", "string", 0), ("Version", "string", 0), ("Internal-IP", "string", 1),
                            ("External-IP", "string", 1), ("OS-Image", "string", 1),
                            ("Kernel-Version", "string", 1), ("Container-Runtime", "string", 1)]


class NodeStrategy(Strategy):
    printer = t.Printer(tuple(_NODE_COLS), _node_row)

    def validate_update(self, new: Obj, old: Obj, ctx: Any) -> list[Cause]:
        return validate_node_update(old, new)
