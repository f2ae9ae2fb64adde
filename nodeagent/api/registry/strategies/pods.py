"""Pods (upstream pkg/registry/core/pod/strategy.go): admission defaults (DefaultTolerationSeconds,
service account), status Pending with the QoS class at create, only images and a few fields change
afterwards, graceful deletion of pods bound to a node.
"""

from __future__ import annotations

import datetime
from typing import Any

from nodeagent.api import tables as t
from nodeagent.api.defaults import (
    default_pod_admission,
    default_pod_spec,
    keep_admitted_fields,
    qos_class,
    validate_pod_spec,
    validate_pod_update,
)
from nodeagent.api.registry.options import DeleteOptions, WriteContext
from nodeagent.api.registry.strategy import Strategy
from nodeagent.api.validation import Cause

Obj = dict[str, Any]
Row = list[Any]


def _pod_row(o: Obj) -> Row:
    spec, status, meta = o.get("spec") or {}, o.get("status") or {}, t.meta(o)
    total = len(spec.get("containers") or [])
    ready = restarts = 0
    last_restart: datetime.datetime | None = None
    reason = status.get("reason") or status.get("phase") or ""
    init_statuses = status.get("initContainerStatuses") or []
    initializing = False
    for i, cs in enumerate(init_statuses):
        restarts += int(cs.get("restartCount") or 0)
        st = cs.get("state") or {}
        term, wait = st.get("terminated"), st.get("waiting")
        if term and term.get("exitCode") == 0:
            continue
        initializing = True
        if term:
            reason = "Init:" + (term.get("reason") or (f"Signal:{term['signal']}" if term.get("signal")
                                                      else f"ExitCode:{term.get('exitCode')}"))
        elif wait and wait.get("reason") and wait["reason"] != "PodInitializing":
            reason = "Init:" + wait["reason"]
        else:
            reason = f"Init:{i}/{len(spec.get('initContainers') or [])}"
        break
    if not initializing:
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += int(cs.get("restartCount") or 0)
            lt = t.parse_time(((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt"))
            if lt and (last_restart is None or lt > last_restart):
                last_restart = lt
            st = cs.get("state") or {}
            wait, term = st.get("waiting"), st.get("terminated")
            if wait and wait.get("reason"):
                reason = wait["reason"]
            elif term and term.get("reason"):
                reason = term["reason"]
            elif term:
                reason = f"Signal:{term['signal']}" if term.get("signal") else f"ExitCode:{term.get('exitCode')}"
            elif cs.get("ready") and st.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if any(c.get("type") == "Ready" and c.get("status") == "True"
                                      for c in status.get("conditions") or []) else "NotReady"
    if meta.get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    restart_cell: Any = restarts
    if restarts and last_restart:
        ago = t.human_duration((datetime.datetime.now(datetime.UTC) - last_restart).total_seconds())
        restart_cell = f"{restarts} ({ago} ago)"
    ips = [str(p.get("ip")) for p in status.get("podIPs") or [] if isinstance(p, dict)] or \
        ([status["podIP"]] if status.get("podIP") else [])
    gates = spec.get("readinessGates") or []
    gate_cell = "<none>"
    if gates:
        conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        gate_cell = f"{sum(1 for g in gates if conds.get(g.get('conditionType')) == 'True')}/{len(gates)}"
    return [meta.get("name", ""), f"{ready}/{total}", reason, restart_cell, t.created(o),
            ",".join(ips) or "<none>", spec.get("nodeName") or "<none>",
            status.get("nominatedNodeName") or "<none>", gate_cell]


_POD_COLS: list[t.Column] = [("Name", "string", 0), ("Ready", "string", 0), ("Status", "string", 0),
                           ("Restarts", "string", 0), ("Age", "string", 0), ("IP", "string", 1),
                           ("Node", "string", 1), ("Nominated Node", "string", 1), ("Readiness Gates", "string", 1)]


class PodStrategy(Strategy):
    printer = t.Printer(tuple(_POD_COLS), _pod_row)

    def default(self, obj: Obj) -> None:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            spec = obj["spec"] = {}
        default_pod_spec(spec)

    def prepare_for_create(self, obj: Obj, ctx: WriteContext) -> None:
        default_pod_admission(obj["spec"], self.shared.default_toleration_seconds)
        obj["status"] = {"phase": "Pending", "qosClass": qos_class(obj["spec"])}

    def validate(self, obj: Obj, ctx: WriteContext) -> list[Cause]:
        return validate_pod_spec(obj.get("spec"), "spec")

    def prepare_for_update(self, new: Obj, old: Obj, ctx: WriteContext) -> None:
        super().prepare_for_update(new, old, ctx)
        if isinstance(new.get("spec"), dict):
            keep_admitted_fields(new["spec"], old.get("spec") or {})

    def validate_update(self, new: Obj, old: Obj, ctx: WriteContext) -> list[Cause]:
        return validate_pod_update(old, new)

    def grace_period(self, obj: Obj, opts: DeleteOptions) -> int:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        # Upstream pod CheckGracefulDelete: unbound or terminal pods go at once.
        if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
            return 0
        if opts.grace_period_seconds is not None:
            return max(0, int(opts.grace_period_seconds))
        g = spec.get("terminationGracePeriodSeconds")
        return int(g) if isinstance(g, int) and g >= 0 else 30

    def deletion_complete(self, obj: Obj) -> bool:
        """A pod bound to a node also waits for the kubelet to confirm with a zero-grace delete, so
        that watchers see the final status it wrote first."""
        grace = (obj.get("metadata") or {}).get("deletionGracePeriodSeconds")
        return grace == 0 or not (obj.get("spec") or {}).get("nodeName")
