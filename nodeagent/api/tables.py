"""Server-side Table output (meta.k8s.io/v1 Table) with upstream's columns.

kubectl asks `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints what the server
sends; the columns and cell formats follow pkg/printers/internalversion/printers.go.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from nodeagent.machinery import kinds
from nodeagent.machinery.kinds import Kind
from nodeagent.machinery.selectors import selector_from_match_labels

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


def _parse_time(ts: Any) -> datetime.datetime | None:
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
    t = _parse_time(ts)
    if t is None:
        return "<unknown>"
    return human_duration((datetime.datetime.now(datetime.UTC) - t).total_seconds())


def _meta(o: Obj) -> Obj:
    return o.get("metadata") or {}


def _created(o: Obj) -> str:
    return age(_meta(o).get("creationTimestamp"))


def _containers(spec: Obj) -> tuple[str, str]:
    cs = [c for c in (spec.get("containers") or []) if isinstance(c, dict)]
    return ",".join(str(c.get("name", "")) for c in cs), ",".join(str(c.get("image", "")) for c in cs)


# --- pods --------------------------------------------------------------------------------------

def _pod_row(o: Obj) -> Row:
    spec, status, meta = o.get("spec") or {}, o.get("status") or {}, _meta(o)
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
            lt = _parse_time(((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt"))
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
        ago = human_duration((datetime.datetime.now(datetime.UTC) - last_restart).total_seconds())
        restart_cell = f"{restarts} ({ago} ago)"
    ips = [str(p.get("ip")) for p in status.get("podIPs") or [] if isinstance(p, dict)] or \
        ([status["podIP"]] if status.get("podIP") else [])
    gates = spec.get("readinessGates") or []
    gate_cell = "<none>"
    if gates:
        conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        gate_cell = f"{sum(1 for g in gates if conds.get(g.get('conditionType')) == 'True')}/{len(gates)}"
    return [meta.get("name", ""), f"{ready}/{total}", reason, restart_cell, _created(o),
            ",".join(ips) or "<none>", spec.get("nodeName") or "<none>",
            status.get("nominatedNodeName") or "<none>", gate_cell]


_POD_COLS: list[Column] = [("Name", "string", 0), ("Ready", "string", 0), ("Status", "string", 0),
                           ("Restarts", "string", 0), ("Age", "string", 0), ("IP", "string", 1),
                           ("Node", "string", 1), ("Nominated Node", "string", 1), ("Readiness Gates", "string", 1)]


# --- nodes -------------------------------------------------------------------------------------

def _node_row(o: Obj) -> Row:
    meta, spec, status = _meta(o), o.get("spec") or {}, o.get("status") or {}
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
    return [meta.get("name", ""), st, ",".join(roles) or "<none>", _created(o), info.get("kubeletVersion", ""),
            addrs.get("InternalIP") or "<none>", addrs.get("ExternalIP") or "<none>",
            info.get("osImage") or "<unknown>", info.get("kernelVersion") or "<unknown>",
            info.get("containerRuntimeVersion") or "<unknown>"]


_NODE_COLS: list[Column] = [("Name", "string", 0), ("Status", "string", 0), ("Roles", "string", 0),
                            ("Age", "string", 0), ("Version", "string", 0), ("Internal-IP", "string", 1),
                            ("External-IP", "string", 1), ("OS-Image", "string", 1),
                            ("Kernel-Version", "string", 1), ("Container-Runtime", "string", 1)]


# --- services / endpoints ----------------------------------------------------------------------

def _service_row(o: Obj) -> Row:
    spec, status = o.get("spec") or {}, o.get("status") or {}
    stype = spec.get("type") or "ClusterIP"
    ext = [str(x) for x in spec.get("externalIPs") or []]
    ext += [str(i.get("ip") or i.get("hostname") or "") for i in (status.get("loadBalancer") or {}).get("ingress") or []]
    ext_cell = ",".join(x for x in ext if x) or ("<pending>" if stype == "LoadBalancer" else
                                                 spec.get("externalName", "<none>") if stype == "ExternalName"
                                                 else "<none>")
    ports = []
    for p in spec.get("ports") or []:
        s = f"{p.get('port')}:{p['nodePort']}" if p.get("nodePort") else f"{p.get('port')}"
        ports.append(f"{s}/{p.get('protocol', 'TCP')}")
    sel = spec.get("selector") or {}
    return [_meta(o).get("name", ""), stype, spec.get("clusterIP") or "<none>", ext_cell,
            ",".join(ports) or "<none>", _created(o),
            ",".join(f"{k}={v}" for k, v in sorted(sel.items())) or "<none>"]


_SERVICE_COLS: list[Column] = [("Name", "string", 0), ("Type", "string", 0), ("Cluster-IP", "string", 0),
                               ("External-IP", "string", 0), ("Port(s)", "string", 0), ("Age", "string", 0),
                               ("Selector", "string", 1)]


def _more(items: list[str], n: int = 3) -> str:
    if not items:
        return "<none>"
    if len(items) > n:
        return ",".join(items[:n]) + f" + {len(items) - n} more..."
    return ",".join(items)


def _endpoints_row(o: Obj) -> Row:
    eps = []
    for s in o.get("subsets") or []:
        ports = [p.get("port") for p in s.get("ports") or []] or [None]
        for a in s.get("addresses") or []:
            for p in ports:
                eps.append(f"{a.get('ip')}:{p}" if p is not None else str(a.get("ip")))
    return [_meta(o).get("name", ""), _more(eps), _created(o)]


def _endpointslice_row(o: Obj) -> Row:
    ports = [str(p.get("port")) for p in o.get("ports") or [] if p.get("port") is not None]
    addrs = [a for e in o.get("endpoints") or [] for a in e.get("addresses") or []]
    addrs = [str(a) for a in addrs]
    return [_meta(o).get("name", ""), o.get("addressType", ""), _more(ports) if ports else "<unset>",
            _more(addrs) if addrs else "<unset>", _created(o)]


# --- workloads ---------------------------------------------------------------------------------

def _deployment_row(o: Obj) -> Row:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    names, images = _containers(((spec.get("template") or {}).get("spec")) or {})
    return [_meta(o).get("name", ""), f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            st.get("updatedReplicas", 0), st.get("availableReplicas", 0), _created(o), names, images,
            selector_from_match_labels(spec.get("selector")) or "<none>"]


def _replicaset_row(o: Obj) -> Row:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    names, images = _containers(((spec.get("template") or {}).get("spec")) or {})
    return [_meta(o).get("name", ""), spec.get("replicas", 0), st.get("replicas", 0), st.get("readyReplicas", 0),
            _created(o), names, images, selector_from_match_labels(spec.get("selector")) or "<none>"]


def _daemonset_row(o: Obj) -> Row:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    tspec = ((spec.get("template") or {}).get("spec")) or {}
    names, images = _containers(tspec)
    ns = ",".join(f"{k}={v}" for k, v in sorted((tspec.get("nodeSelector") or {}).items())) or "<none>"
    return [_meta(o).get("name", ""), st.get("desiredNumberScheduled", 0), st.get("currentNumberScheduled", 0),
            st.get("numberReady", 0), st.get("updatedNumberScheduled", 0), st.get("numberAvailable", 0), ns,
            _created(o), names, images, selector_from_match_labels(spec.get("selector")) or "<none>"]


def _job_row(o: Obj) -> Row:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    names, images = _containers(((spec.get("template") or {}).get("spec")) or {})
    conds = {c.get("type"): c.get("status") for c in st.get("conditions") or []}
    status = "Complete" if conds.get("Complete") == "True" else "Failed" if conds.get("Failed") == "True" \
        else "Suspended" if spec.get("suspend") else "Running"
    comp = spec.get("completions")
    completions = f"{st.get('succeeded', 0)}/{comp}" if comp is not None else f"{st.get('succeeded', 0)}/1 of " \
                                                                                f"{spec.get('parallelism', 1)}"
    start, end = _parse_time(st.get("startTime")), _parse_time(st.get("completionTime"))
    duration = ""
    if start:
        duration = human_duration(((end or datetime.datetime.now(datetime.UTC)) - start).total_seconds())
    return [_meta(o).get("name", ""), status, completions, duration, _created(o), names, images,
            selector_from_match_labels(spec.get("selector")) or "<none>"]


_WORKLOAD_WIDE: list[Column] = [("Containers", "string", 1), ("Images", "string", 1), ("Selector", "string", 1)]


# --- events and the rest -----------------------------------------------------------------------

def _event_row(o: Obj) -> Row:
    io = o.get("involvedObject") or {}
    src = o.get("source") or {}
    source = src.get("component") or o.get("reportingComponent") or ""
    if src.get("host"):
        source = f"{source}, {src['host']}"
    first = o.get("firstTimestamp") or o.get("eventTime") or _meta(o).get("creationTimestamp")
    last = o.get("lastTimestamp") or (o.get("series") or {}).get("lastObservedTime") or o.get("eventTime") or first
    count = o.get("count") or (o.get("series") or {}).get("count") or 1
    last_seen = age(last)
    if count > 1 and first and first != last:
        last_seen = f"{age(last)} (x{count} over {age(first)})"
    return [last_seen, o.get("type", ""), o.get("reason", ""),
            f"{str(io.get('kind', '')).lower()}/{io.get('name', '')}", io.get("fieldPath", ""), source,
            str(o.get("message", "")).strip(), age(first), count, _meta(o).get("name", "")]


_EVENT_COLS: list[Column] = [("Last Seen", "string", 0), ("Type", "string", 0), ("Reason", "string", 0),
                             ("Object", "string", 0), ("Subobject", "string", 1), ("Source", "string", 1),
                             ("Message", "string", 0), ("First Seen", "string", 1), ("Count", "integer", 1),
                             ("Name", "string", 1)]


def _ns_row(o: Obj) -> Row:
    return [_meta(o).get("name", ""), (o.get("status") or {}).get("phase", ""), _created(o)]


def _lease_row(o: Obj) -> Row:
    return [_meta(o).get("name", ""), (o.get("spec") or {}).get("holderIdentity") or "", _created(o)]


def _cm_row(o: Obj) -> Row:
    return [_meta(o).get("name", ""), len(o.get("data") or {}) + len(o.get("binaryData") or {}), _created(o)]


def _secret_row(o: Obj) -> Row:
    return [_meta(o).get("name", ""), o.get("type", ""), len(o.get("data") or {}), _created(o)]


def _sa_row(o: Obj) -> Row:
    return [_meta(o).get("name", ""), len(o.get("secrets") or []), _created(o)]


def _cr_row(o: Obj) -> Row:
    ref = next((r for r in _meta(o).get("ownerReferences") or [] if r.get("controller")), None)
    ctrl = f"{str(ref.get('apiVersion', '')).split('/')[0]}/{ref.get('kind', '')}/{ref.get('name', '')}" \
        if ref else "<none>"
    if ref and "/" not in str(ref.get("apiVersion", "")):
        ctrl = f"{str(ref.get('kind', '')).lower()}/{ref.get('name')}"
    elif ref:
        ctrl = f"{str(ref.get('kind', '')).lower()}.{str(ref['apiVersion']).split('/')[0]}/{ref.get('name')}"
    return [_meta(o).get("name", ""), ctrl, o.get("revision", 0), _created(o)]


def _default_row(o: Obj) -> Row:
    return [_meta(o).get("name", ""), _meta(o).get("creationTimestamp", "")]


_NAME_AGE: list[Column] = [("Name", "string", 0)]
_TABLES: dict[Kind, tuple[list[Column], Callable[[Obj], Row]]] = {
    kinds.PODS: (_POD_COLS, _pod_row),
    kinds.NODES: (_NODE_COLS, _node_row),
    kinds.SERVICES: (_SERVICE_COLS, _service_row),
    kinds.ENDPOINTS: ([("Name", "string", 0), ("Endpoints", "string", 0), ("Age", "string", 0)], _endpoints_row),
    kinds.ENDPOINTSLICES: ([("Name", "string", 0), ("AddressType", "string", 0), ("Ports", "string", 0),
                            ("Endpoints", "string", 0), ("Age", "string", 0)], _endpointslice_row),
    kinds.DEPLOYMENTS: ([("Name", "string", 0), ("Ready", "string", 0), ("Up-to-date", "integer", 0),
                         ("Available", "integer", 0), ("Age", "string", 0), *_WORKLOAD_WIDE], _deployment_row),
    kinds.REPLICASETS: ([("Name", "string", 0), ("Desired", "integer", 0), ("Current", "integer", 0),
                         ("Ready", "integer", 0), ("Age", "string", 0), *_WORKLOAD_WIDE], _replicaset_row),
    kinds.DAEMONSETS: ([("Name", "string", 0), ("Desired", "integer", 0), ("Current", "integer", 0),
                        ("Ready", "integer", 0), ("Up-to-date", "integer", 0), ("Available", "integer", 0),
                        ("Node Selector", "string", 0), ("Age", "string", 0), *_WORKLOAD_WIDE], _daemonset_row),
    kinds.JOBS: ([("Name", "string", 0), ("Status", "string", 0), ("Completions", "string", 0),
                  ("Duration", "string", 0), ("Age", "string", 0), *_WORKLOAD_WIDE], _job_row),
    kinds.EVENTS: (_EVENT_COLS, _event_row),
    kinds.NAMESPACES: ([("Name", "string", 0), ("Status", "string", 0), ("Age", "string", 0)], _ns_row),
    kinds.LEASES: ([("Name", "string", 0), ("Holder", "string", 0), ("Age", "string", 0)], _lease_row),
    kinds.CONFIGMAPS: ([("Name", "string", 0), ("Data", "integer", 0), ("Age", "string", 0)], _cm_row),
    kinds.SECRETS: ([("Name", "string", 0), ("Type", "string", 0), ("Data", "integer", 0), ("Age", "string", 0)],
                    _secret_row),
    kinds.SERVICEACCOUNTS: ([("Name", "string", 0), ("Secrets", "integer", 0), ("Age", "string", 0)], _sa_row),
    kinds.CONTROLLERREVISIONS: ([("Name", "string", 0), ("Controller", "string", 0), ("Revision", "integer", 0),
                                 ("Age", "string", 0)], _cr_row),
}


def _partial(o: Obj) -> Obj:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata") or {}}


def column_definitions(kind: Kind) -> list[Obj]:
    cols = _TABLES[kind][0] if kind in _TABLES else [("Name", "string", 0), ("Created At", "date", 0)]
    out = []
    for name, typ, prio in cols:
        d: Obj = {"name": name, "type": typ, "format": "name" if name == "Name" else "", "description": name,
                  "priority": prio}
        out.append(d)
    return out


def row(kind: Kind, o: Obj, include_object: str) -> Obj:
    fn = _TABLES[kind][1] if kind in _TABLES else _default_row
    r: Obj = {"cells": fn(o)}
    if include_object == "Object":
        r["object"] = o
    elif include_object != "None":
        r["object"] = _partial(o)
    return r


def table(kind: Kind, objs: list[Obj], resource_version: str, include_object: str = "PartialObjectMetadata",
          continue_token: str | None = None, remaining: int | None = None, with_columns: bool = True) -> Obj:
    meta: Obj = {"resourceVersion": resource_version}
    if continue_token:
        meta["continue"] = continue_token
    if remaining is not None:
        meta["remainingItemCount"] = remaining
    t: Obj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
              "columnDefinitions": column_definitions(kind) if with_columns else None,
              "rows": [row(kind, o, include_object) for o in objs]}
    return t
