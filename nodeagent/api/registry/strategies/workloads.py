"""Workloads: Deployments, ReplicaSets, DaemonSets and Jobs (generation counts spec changes, status
only through the subresource, the selector matches the template; upstream pkg/registry/apps/*/
strategy.go, pkg/registry/batch/job/strategy.go) and ControllerRevisions."""

from __future__ import annotations

import datetime
from typing import Any, ClassVar

from nodeagent.api import tables as t
from nodeagent.api.defaults import (
    default_daemonset,
    default_deployment,
    default_job,
    default_replicaset,
    validate_job,
    validate_workload,
)
from nodeagent.api.registry.options import WriteContext, deep_copy, meta_of
from nodeagent.api.registry.strategy import Strategy
from nodeagent.api.validation import Cause
from nodeagent.machinery.selectors import selector_from_match_labels

Obj = dict[str, Any]
Row = list[Any]


def _deployment_row(o: Obj) -> Row:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    names, images = t.containers(((spec.get("template") or {}).get("spec")) or {})
    return [t.meta(o).get("name", ""), f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            st.get("updatedReplicas", 0), st.get("availableReplicas", 0), t.created(o), names, images,
            selector_from_match_labels(spec.get("selector")) or "<none>"]


def _replicaset_row(o: Obj) -> Row:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    names, images = t.containers(((spec.get("template") or {}).get("spec")) or {})
    return [t.meta(o).get("name", ""), spec.get("replicas", 0), st.get("replicas", 0), st.get("readyReplicas", 0),
            t.created(o), names, images, selector_from_match_labels(spec.get("selector")) or "<none>"]


def _daemonset_row(o: Obj) -> Row:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    tspec = ((spec.get("template") or {}).get("spec")) or {}
    names, images = t.containers(tspec)
    ns = ",".join(f"{k}={v}" for k, v in sorted((tspec.get("nodeSelector") or {}).items())) or "<none>"
    return [t.meta(o).get("name", ""), st.get("desiredNumberScheduled", 0), st.get("currentNumberScheduled", 0),
            st.get("numberReady", 0), st.get("updatedNumberScheduled", 0), st.get("numberAvailable", 0), ns,
            t.created(o), names, images, selector_from_match_labels(spec.get("selector")) or "<none>"]


def _job_row(o: Obj) -> Row:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    names, images = t.containers(((spec.get("template") or {}).get("spec")) or {})
    conds = {c.get("type"): c.get("status") for c in st.get("conditions") or []}
    status = "Complete" if conds.get("Complete") == "True" else "Failed" if conds.get("Failed") == "True" \
        else "Suspended" if spec.get("suspend") else "Running"
    comp = spec.get("completions")
    completions = f"{st.get('succeeded', 0)}/{comp}" if comp is not None else f"{st.get('succeeded', 0)}/1 of " \
                                                                                f"{spec.get('parallelism', 1)}"
    start, end = t.parse_time(st.get("startTime")), t.parse_time(st.get("completionTime"))
    duration = ""
    if start:
        duration = t.human_duration(((end or datetime.datetime.now(datetime.UTC)) - start).total_seconds())
    return [t.meta(o).get("name", ""), status, completions, duration, t.created(o), names, images,
            selector_from_match_labels(spec.get("selector")) or "<none>"]


_WORKLOAD_WIDE: list[t.Column] = [("Containers", "string", 1), ("Images", "string", 1), ("Selector", "string", 1)]


def _cr_row(o: Obj) -> Row:
    ref = next((r for r in t.meta(o).get("ownerReferences") or [] if r.get("controller")), None)
    ctrl = f"{str(ref.get('apiVersion', '')).split('/')[0]}/{ref.get('kind', '')}/{ref.get('name', '')}" \
        if ref else "<none>"
    if ref and "/" not in str(ref.get("apiVersion", "")):
        ctrl = f"{str(ref.get('kind', '')).lower()}/{ref.get('name')}"
    elif ref:
        ctrl = f"{str(ref.get('kind', '')).lower()}.{str(ref['apiVersion']).split('/')[0]}/{ref.get('name')}"
    return [t.meta(o).get("name", ""), ctrl, o.get("revision", 0), t.created(o)]


class _PodTemplateOwner(Strategy):
    generation = True
    initial_status: ClassVar[Obj] = {}

    def prepare_for_create(self, obj: Obj, ctx: WriteContext) -> None:
        obj["status"] = deep_copy(self.initial_status)

    def validate(self, obj: Obj, ctx: WriteContext) -> list[Cause]:
        return validate_workload(obj)

    def validate_update(self, new: Obj, old: Obj, ctx: WriteContext) -> list[Cause]:
        causes = validate_workload(new)
        if (new.get("spec") or {}).get("selector") != (old.get("spec") or {}).get("selector"):
            causes.append(("spec.selector", "FieldValueInvalid", "Invalid value: field is immutable"))
        return causes


class DeploymentStrategy(_PodTemplateOwner):
    printer = t.Printer((("Name", "string", 0), ("Ready", "string", 0), ("Up-to-date", "integer", 0),
                         ("Available", "integer", 0), ("Age", "string", 0), *_WORKLOAD_WIDE), _deployment_row)

    def default(self, obj: Obj) -> None:
        default_deployment(obj)


class ReplicaSetStrategy(_PodTemplateOwner):
    initial_status = {"replicas": 0}
    printer = t.Printer((("Name", "string", 0), ("Desired", "integer", 0), ("Current", "integer", 0),
                         ("Ready", "integer", 0), ("Age", "string", 0), *_WORKLOAD_WIDE), _replicaset_row)

    def default(self, obj: Obj) -> None:
        default_replicaset(obj)


class DaemonSetStrategy(_PodTemplateOwner):
    initial_status = {"currentNumberScheduled": 0, "desiredNumberScheduled": 0, "numberMisscheduled": 0,
                      "numberReady": 0}
    printer = t.Printer((("Name", "string", 0), ("Desired", "integer", 0), ("Current", "integer", 0),
                         ("Ready", "integer", 0), ("Up-to-date", "integer", 0), ("Available", "integer", 0),
                         ("Node Selector", "string", 0), ("Age", "string", 0), *_WORKLOAD_WIDE), _daemonset_row)

    def default(self, obj: Obj) -> None:
        default_daemonset(obj)


class JobStrategy(Strategy):
    generation = True
    printer = t.Printer((("Name", "string", 0), ("Status", "string", 0), ("Completions", "string", 0),
                         ("Duration", "string", 0), ("Age", "string", 0), *_WORKLOAD_WIDE), _job_row)

    def default(self, obj: Obj) -> None:
        default_job(obj, (obj.get("metadata") or {}).get("uid", ""))

    def prepare_for_create(self, obj: Obj, ctx: WriteContext) -> None:
        obj["status"] = {}

    def validate(self, obj: Obj, ctx: WriteContext) -> list[Cause]:
        return validate_job(obj)

    def prepare_for_update(self, new: Obj, old: Obj, ctx: WriteContext) -> None:
        super().prepare_for_update(new, old, ctx)
        meta_of(new)["uid"] = (old.get("metadata") or {}).get("uid", "")  # default() selects by it
        if new.get("status") is None:
            new["status"] = {}

    def validate_update(self, new: Obj, old: Obj, ctx: WriteContext) -> list[Cause]:
        return validate_job(new)


class ControllerRevisionStrategy(Strategy):
    printer = t.Printer((("Name", "string", 0), ("Controller", "string", 0), ("Revision", "integer", 0),
                         ("Age", "string", 0)), _cr_row)
