"""Defaulting and kind-specific validation, as upstream's pkg/apis/*/v1/defaults.go and
pkg/apis/*/validation; the kinds' strategies (registry/strategies/) call them.

default_* functions change the object they are given (a private copy); validate_* functions
return a list of causes (field, reason type, message) for a 422 Invalid.
"""

from __future__ import annotations

import json
from typing import Any

from nodeagent.api.validation import Cause, dns1123_label_errors
from nodeagent.machinery.quantity import parse_quantity

Obj = dict[str, Any]


def _d(obj: Obj, key: str) -> Obj:
    """obj[key] as a dict, created if missing (a JSON null becomes {})."""
    v = obj.get(key)
    if not isinstance(v, dict):
        v = {}
        obj[key] = v
    return v


def _l(obj: Obj, key: str) -> list[Any]:
    v = obj.get(key)
    return v if isinstance(v, list) else []


# --- pods --------------------------------------------------------------------------------------

def _default_probe(p: Any) -> None:
    if not isinstance(p, dict):
        return
    p.setdefault("timeoutSeconds", 1)
    p.setdefault("periodSeconds", 10)
    p.setdefault("successThreshold", 1)
    p.setdefault("failureThreshold", 3)
    if isinstance(p.get("httpGet"), dict):
        p["httpGet"].setdefault("scheme", "HTTP")
        p["httpGet"].setdefault("path", "/")


def _image_pull_policy(image: str) -> str:
    # Upstream: Always when the tag is :latest or absent (and no digest), else IfNotPresent.
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last or last.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


def _default_container(c: Any) -> None:
    if not isinstance(c, dict):
        return
    if isinstance(c.get("image"), str):
        c.setdefault("imagePullPolicy", _image_pull_policy(c["image"]))
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    if not isinstance(c.get("resources"), dict):
        c["resources"] = {}
    res = c["resources"]
    # Requests default to limits (upstream defaults.go SetDefaults_Container / ResourceRequirements).
    if isinstance(res.get("limits"), dict):
        req = _d(res, "requests")
        for k, v in res["limits"].items():
            req.setdefault(k, v)
    for p in _l(c, "ports"):
        if isinstance(p, dict):
            p.setdefault("protocol", "TCP")
    for e in _l(c, "env"):
        if isinstance(e, dict) and isinstance(e.get("valueFrom"), dict):
            fr = e["valueFrom"].get("fieldRef")
            if isinstance(fr, dict):
                fr.setdefault("apiVersion", "v1")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(c.get(probe))


def default_pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    for c in _l(spec, "containers") + _l(spec, "initContainers"):
        _default_container(c)
    for v in _l(spec, "volumes"):
        if not isinstance(v, dict):
            continue
        for src in ("configMap", "secret"):
            if isinstance(v.get(src), dict):
                v[src].setdefault("defaultMode", 420)
        if isinstance(v.get("hostPath"), dict):
            v["hostPath"].setdefault("type", "")


def qos_class(spec: Obj) -> str:
    """pkg/apis/core/helper/qos: Guaranteed if every container's requests == limits for cpu and
    memory, BestEffort if nothing is set, else Burstable."""
    containers = [c for c in _l(spec, "containers") + _l(spec, "initContainers") if isinstance(c, dict)]
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        for r in ("cpu", "memory"):
            if r in req or r in lim:
                any_set = True
            if r not in lim or (r in req and not _same_quantity(req[r], lim[r])):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _same_quantity(a: Any, b: Any) -> bool:
    try:
        return parse_quantity(a) == parse_quantity(b)
    except (ValueError, TypeError, ArithmeticError):  # decimal.InvalidOperation too
        return str(a) == str(b)


def _resource_causes(c: Obj, fp: str) -> list[Cause]:
    causes: list[Cause] = []
    res = c.get("resources")
    if res is None:
        return causes
    if not isinstance(res, dict):
        return [(f"{fp}.resources", "FieldValueInvalid", "Invalid value: must be an object")]
    for kind in ("limits", "requests"):
        vals = res.get(kind)
        if vals is None:
            continue
        if not isinstance(vals, dict):
            causes.append((f"{fp}.resources.{kind}", "FieldValueInvalid", "Invalid value: must be a map"))
            continue
        for name, v in vals.items():
            try:
                q = parse_quantity(v)
            except (ValueError, TypeError, ArithmeticError):  # decimal.InvalidOperation too
                causes.append((f"{fp}.resources.{kind}[{name}]", "FieldValueInvalid",
                               f"Invalid value: {json.dumps(v)}: quantities must match the regular expression "
                               "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"))
                continue
            if q < 0:
                causes.append((f"{fp}.resources.{kind}[{name}]", "FieldValueInvalid",
                               f"Invalid value: {json.dumps(v)}: must be greater than or equal to 0"))
    return causes


# DefaultTolerationSeconds admission: taint key -> seconds (upstream defaults; apiserver flags).
DEFAULT_TOLERATION_SECONDS: dict[str, int] = {
    "node.kubernetes.io/not-ready": 300,
    "node.kubernetes.io/unreachable": 300,
}


def validate_pod_spec(spec: Any, path: str) -> list[Cause]:
    causes: list[Cause] = []
    if not isinstance(spec, dict):
        return [(path, "FieldValueRequired", "Required value")]
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        causes.append((f"{path}.containers", "FieldValueRequired", "Required value"))
        containers = []
    seen: set[str] = set()
    for group in ("initContainers", "containers"):
        for i, c in enumerate(_l(spec, group)):
            fp = f"{path}.{group}[{i}]"
            if not isinstance(c, dict):
                causes.append((fp, "FieldValueInvalid", "Invalid value: must be an object"))
                continue
            name = c.get("name")
            if not isinstance(name, str) or not name:
                causes.append((f"{fp}.name", "FieldValueRequired", "Required value"))
            else:
                causes += [(f"{fp}.name", "FieldValueInvalid", f'Invalid value: "{name}": {e}')
                           for e in dns1123_label_errors(name)]
                if name in seen:
                    causes.append((f"{fp}.name", "FieldValueDuplicate", f'Duplicate value: "{name}"'))
                seen.add(name)
            if not isinstance(c.get("image"), str) or not c.get("image"):
                causes.append((f"{fp}.image", "FieldValueRequired", "Required value"))
            causes += _resource_causes(c, fp)
            for j, p in enumerate(_l(c, "ports")):
                cp = p.get("containerPort") if isinstance(p, dict) else None
                if not isinstance(cp, int) or not 0 < cp < 65536:
                    causes.append((f"{fp}.ports[{j}].containerPort", "FieldValueInvalid",
                                   f"Invalid value: {cp}: must be between 1 and 65535, inclusive"))
    rp = spec.get("restartPolicy")
    if rp not in (None, "Always", "OnFailure", "Never"):
        causes.append((f"{path}.restartPolicy", "FieldValueNotSupported",
                       f'Unsupported value: "{rp}": supported values: "Always", "OnFailure", "Never"'))
    return causes


def default_pod_admission(spec: Obj, toleration_seconds: dict[str, int] | None = None) -> None:
    """What upstream's admission plugins add to every new pod (DefaultTolerationSeconds, Priority,
    ServiceAccount)."""
    # DefaultTolerationSeconds admission: tolerate not-ready/unreachable for a while (300 s).
    tols = spec.get("tolerations")
    if not isinstance(tols, list):
        tols = []
    effect = "NoExecute"
    for key, seconds in (toleration_seconds or DEFAULT_TOLERATION_SECONDS).items():
        if not any(isinstance(t, dict) and (t.get("key") == key or (not t.get("key") and t.get("operator") == "Exists"))
                   and t.get("effect") in (None, "", effect) for t in tols):
            tols.append({"key": key, "operator": "Exists", "effect": effect, "tolerationSeconds": seconds})
    spec["tolerations"] = tols
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])


_ADMITTED = ("tolerations", "priority", "preemptionPolicy", "serviceAccountName", "serviceAccount")


def keep_admitted_fields(new_spec: Obj, old_spec: Obj) -> None:
    """On update, what admission added to the pod at its creation and the client left out is kept,
    so a `kubectl replace` of the original manifest is not a forbidden spec change."""
    for f in _ADMITTED:
        if f not in new_spec and f in old_spec:
            new_spec[f] = old_spec[f]


# Pod spec fields that may change after creation (upstream ValidatePodUpdate).
_POD_MUTABLE = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "schedulingGates")


def validate_pod_update(old: Obj, new: Obj) -> list[Cause]:
    os_, ns_ = old.get("spec") or {}, new.get("spec") or {}
    a = {k: v for k, v in os_.items() if k not in _POD_MUTABLE}
    b = {k: v for k, v in ns_.items() if k not in _POD_MUTABLE}
    # Only container images may change in place.
    for spec in (a, b):
        for group in ("containers", "initContainers"):
            if isinstance(spec.get(group), list):
                spec[group] = [{k: v for k, v in c.items() if k != "image"} if isinstance(c, dict) else c
                               for c in spec[group]]
    if a.get("nodeName") and not b.get("nodeName"):
        b["nodeName"] = a["nodeName"]
    if a != b:
        return [("spec", "FieldValueForbidden",
                 "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, "
                 "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` "
                 "(only additions to existing tolerations) or `spec.terminationGracePeriodSeconds`")]
    return []


# --- workloads ---------------------------------------------------------------------------------

def _default_template(spec: Obj) -> None:
    tpl = _d(spec, "template")
    tspec = _d(tpl, "spec")
    default_pod_spec(tspec)
    meta = tpl.get("metadata")
    if not isinstance(meta, dict):
        tpl["metadata"] = {}
    tpl["metadata"].setdefault("creationTimestamp", None)


def _validate_selector(spec: Obj, path: str) -> list[Cause]:
    sel = spec.get("selector")
    if not isinstance(sel, dict) or not (sel.get("matchLabels") or sel.get("matchExpressions")):
        return [(f"{path}.selector", "FieldValueRequired", "Required value")]
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    from nodeagent.machinery.selectors import SelectorError, match_label_selector_object
    try:
        ok = match_label_selector_object(sel, labels)
    except SelectorError as e:
        return [(f"{path}.selector", "FieldValueInvalid", f"Invalid value: {e}")]
    if not ok:
        return [(f"{path}.template.metadata.labels", "FieldValueInvalid",
                 f"Invalid value: {labels}: `selector` does not match template `labels`")]
    return []


def validate_workload(obj: Obj) -> list[Cause]:
    """A Deployment's, ReplicaSet's or DaemonSet's selector and pod template."""
    spec = obj.get("spec") or {}
    return _validate_selector(spec, "spec") + validate_pod_spec((spec.get("template") or {}).get("spec"),
                                                                  "spec.template.spec")


def default_deployment(obj: Obj) -> None:
    spec = _d(obj, "spec")
    spec.setdefault("replicas", 1)
    strategy = _d(spec, "strategy")
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        ru = _d(strategy, "rollingUpdate")
        ru.setdefault("maxUnavailable", "25%")
        ru.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    spec.setdefault("minReadySeconds", 0)
    _default_template(spec)


def default_replicaset(obj: Obj) -> None:
    spec = _d(obj, "spec")
    spec.setdefault("replicas", 1)
    spec.setdefault("minReadySeconds", 0)
    _default_template(spec)


def default_daemonset(obj: Obj) -> None:
    spec = _d(obj, "spec")
    us = _d(spec, "updateStrategy")
    us.setdefault("type", "RollingUpdate")
    if us["type"] == "RollingUpdate":
        ru = _d(us, "rollingUpdate")
        ru.setdefault("maxUnavailable", 1)
        ru.setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("minReadySeconds", 0)
    _default_template(spec)


def default_job(obj: Obj, uid: str) -> None:
    spec = _d(obj, "spec")
    spec.setdefault("parallelism", 1)
    if "completions" not in spec:
        spec["completions"] = 1
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    spec.setdefault("manualSelector", None)
    if spec.get("manualSelector") is None:
        spec.pop("manualSelector")
    tpl = _d(spec, "template")
    tmeta = _d(tpl, "metadata")
    if not spec.get("manualSelector") and uid:
        # Upstream job strategy: select pods by the job's uid, and stamp it on the template.
        name = (obj.get("metadata") or {}).get("name", "")
        labels = _d(tmeta, "labels")
        labels.setdefault("batch.kubernetes.io/controller-uid", uid)
        labels.setdefault("controller-uid", uid)
        labels.setdefault("batch.kubernetes.io/job-name", name)
        labels.setdefault("job-name", name)
        if not spec.get("selector"):
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    tspec = _d(tpl, "spec")
    tspec.setdefault("restartPolicy", "Never")  # no upstream default: validation demands one; be kind
    _default_template(spec)


def validate_job(obj: Obj) -> list[Cause]:
    spec = obj.get("spec") or {}
    tspec = (spec.get("template") or {}).get("spec") or {}
    causes = _validate_selector(spec, "spec") + validate_pod_spec(tspec, "spec.template.spec")
    if tspec.get("restartPolicy") not in ("Never", "OnFailure"):
        causes.append(("spec.template.spec.restartPolicy", "FieldValueNotSupported",
                       f'Unsupported value: "{tspec.get("restartPolicy")}": supported values: "OnFailure", "Never"'))
    return causes


# --- others ------------------------------------------------------------------------------------

def default_namespace(obj: Obj) -> None:
    spec = _d(obj, "spec")
    spec.setdefault("finalizers", ["kubernetes"])
    name = (obj.get("metadata") or {}).get("name")
    if isinstance(name, str) and name:
        # Upstream stamps the immutable name label (NamespaceDefaultLabelName).
        _d(_d(obj, "metadata"), "labels")["kubernetes.io/metadata.name"] = name


def validate_data_maps(obj: Obj) -> list[Cause]:
    causes: list[Cause] = []
    for fld in ("data", "stringData", "binaryData"):
        v = obj.get(fld)
        if v is not None and (not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values())):
            causes.append((fld, "FieldValueInvalid", "Invalid value: must be a map of strings"))
    return causes


def fold_string_data(obj: Obj) -> None:
    """stringData is write-only: merged into data base64-encoded (upstream conversion)."""
    import base64

    sd = obj.pop("stringData", None)
    if isinstance(sd, dict):
        data = _d(obj, "data")
        for k, v in sd.items():
            data[k] = base64.b64encode(str(v).encode()).decode()
