"""Build a Pod's status from its runtime status and probe results (pure).

Follows upstream kubelet_pods.go generateAPIPodStatus / convertToAPIContainerStatuses / getPhase
and pkg/kubelet/status/generate.go for the conditions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from nodeagent.kubelet.actions import should_container_be_restarted
from nodeagent.kubelet.model import Container, ContainerState, PodRuntimeStatus, SandboxState


def rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass
class StatusInputs:
    """What the pod worker knows beyond the runtime: probe results and why containers wait."""

    host_ip: str
    runtime_name: str = "containerd"
    ready: dict[str, bool] = field(default_factory=dict)      # readiness result per container
    started: dict[str, bool] = field(default_factory=dict)    # startup result per container
    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (reason, message)
    now: float = 0.0
    terminal: bool = False  # the pod was stopped for good (it is being deleted)


def _has_probe(c: dict[str, Any], kind: str) -> bool:
    return bool(c.get(kind))


def _terminated(c: Container, runtime_name: str) -> dict[str, Any]:
    t: dict[str, Any] = {"exitCode": c.exit_code, "reason": c.reason or ("Completed" if c.exit_code == 0 else "Error"),
                         "containerID": f"{runtime_name}://{c.id}"}
    if c.started_at:
        t["startedAt"] = rfc3339(c.started_at)
    if c.finished_at:
        t["finishedAt"] = rfc3339(c.finished_at)
    if c.message:
        t["message"] = c.message
    return t


def container_statuses(pod: dict[str, Any], specs: list[dict[str, Any]], rs: PodRuntimeStatus,
                       inp: StatusInputs, init: bool) -> list[dict[str, Any]]:
    out = []
    for spec in specs:
        name = spec["name"]
        history = rs.by_name(name)
        latest = history[0] if history else None
        st: dict[str, Any] = {"name": name, "image": spec.get("image", ""), "imageID": "",
                              "ready": False, "restartCount": 0, "started": False,
                              "state": {}, "lastState": {}}
        if latest is None:
            reason, msg = inp.waiting.get(name, ("PodInitializing" if init is False and pod.get("spec", {}).get("initContainers")
                                                 else "ContainerCreating", ""))
            st["state"] = {"waiting": {"reason": reason, **({"message": msg} if msg else {})}}
            out.append(st)
            continue
        st["containerID"] = f"{inp.runtime_name}://{latest.id}"
        st["imageID"] = latest.image_ref
        st["restartCount"] = latest.attempt
        if latest.state == ContainerState.RUNNING:
            st["state"] = {"running": {"startedAt": rfc3339(latest.started_at or latest.created_at)}}
            started = inp.started.get(name, not _has_probe(spec, "startupProbe"))
            st["started"] = started
            if not init:
                st["ready"] = started and inp.ready.get(name, not _has_probe(spec, "readinessProbe"))
        elif latest.state == ContainerState.EXITED:
            st["state"] = {"terminated": _terminated(latest, inp.runtime_name)}
            if init and latest.exit_code == 0:
                st["ready"] = True
        else:
            st["state"] = {"waiting": {"reason": "ContainerCreating"}}
        prev = history[1] if len(history) > 1 else None
        if prev is not None and prev.state == ContainerState.EXITED:
            st["lastState"] = {"terminated": _terminated(prev, inp.runtime_name)}
        # A container the next sync restarts shows as waiting, with why (e.g. CrashLoopBackOff).
        if name in inp.waiting and latest.state != ContainerState.RUNNING and \
                (init or should_container_be_restarted(name, pod, rs)):
            reason, msg = inp.waiting[name]
            if "terminated" in st["state"]:
                st["lastState"] = st["state"]
            st["state"] = {"waiting": {"reason": reason, **({"message": msg} if msg else {})}}
        out.append(st)
    return out


def pod_phase(pod: dict[str, Any], init_st: list[dict[str, Any]], app_st: list[dict[str, Any]],
              terminal: bool = False) -> str:
    """getPhase in kubelet_pods.go; `terminal` when the kubelet stopped the pod for good (deletion),
    so that even a restartPolicy=Always pod ends Succeeded or Failed, as upstream since 1.27."""
    policy = pod.get("spec", {}).get("restartPolicy") or "Always"
    pending_init = failed_init = 0
    for s in init_st:
        state = s["state"]
        if "running" in state:
            pending_init += 1
        elif "terminated" in state:
            if state["terminated"]["exitCode"] != 0:
                failed_init += 1
        else:
            last = s.get("lastState", {}).get("terminated")
            if last and last.get("exitCode", 0) != 0:
                failed_init += 1
            else:
                pending_init += 1
    unknown = running = waiting = stopped = succeeded = 0
    for s in app_st:
        state = s["state"]
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            if state["terminated"]["exitCode"] == 0:
                succeeded += 1
        elif "waiting" in state:
            if s.get("lastState", {}).get("terminated"):
                stopped += 1
            else:
                waiting += 1
        else:
            unknown += 1
    if failed_init > 0 and policy == "Never":
        return "Failed"
    if pending_init > 0 or failed_init > 0 or waiting > 0:
        return "Pending"
    if running > 0 and unknown == 0:
        return "Running"
    if running == 0 and stopped > 0 and unknown == 0:
        if terminal:
            return "Succeeded" if stopped == succeeded else "Failed"
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if policy == "Never":
            return "Failed"
        return "Running"
    if unknown > 0:
        return "Unknown"
    return "Pending"


def _condition(old: dict[str, dict[str, Any]], ctype: str, ok: bool, now: float,
               reason: str = "", message: str = "") -> dict[str, Any]:
    status = "True" if ok else "False"
    prev = old.get(ctype)
    ltt = prev["lastTransitionTime"] if prev and prev.get("status") == status and prev.get("lastTransitionTime") \
        else rfc3339(now)
    c: dict[str, Any] = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": ltt}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


def qos_class(pod: dict[str, Any]) -> str:
    """BestEffort / Burstable / Guaranteed (pkg/apis/core/v1/helper/qos)."""
    containers = list(pod.get("spec", {}).get("containers") or []) + list(pod.get("spec", {}).get("initContainers") or [])
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            any_set = True
        for r in ("cpu", "memory"):
            if r not in lim or (r in req and str(req[r]) != str(lim[r])):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def generate_pod_status(pod: dict[str, Any], rs: PodRuntimeStatus, inp: StatusInputs) -> dict[str, Any]:
    spec = pod.get("spec", {})
    old = pod.get("status") or {}
    now = inp.now or time.time()
    init_st = container_statuses(pod, spec.get("initContainers") or [], rs, inp, init=True)
    app_st = container_statuses(pod, spec.get("containers") or [], rs, inp, init=False)
    phase = pod_phase(pod, init_st, app_st, inp.terminal)
    if old.get("phase") in ("Succeeded", "Failed"):
        phase = old["phase"]  # terminal phases never change (upstream enforces the same)

    old_conds = {c["type"]: c for c in old.get("conditions") or []}
    unready_init = [s["name"] for s in init_st
                    if not ("terminated" in s["state"] and s["state"]["terminated"]["exitCode"] == 0)]
    initialized = not unready_init or phase == "Succeeded"
    unready = [s["name"] for s in app_st if not s["ready"]]
    conds = [_condition(old_conds, "PodScheduled", True, now)]
    if initialized:
        conds.append(_condition(old_conds, "Initialized", True, now))
    else:
        conds.append(_condition(old_conds, "Initialized", False, now, "ContainersNotInitialized",
                                f"containers with incomplete status: [{' '.join(unready_init)}]"))
    if phase in ("Succeeded", "Failed"):
        reason = "PodCompleted" if phase == "Succeeded" else "PodFailed"
        conds.append(_condition(old_conds, "Ready", False, now, reason))
        conds.append(_condition(old_conds, "ContainersReady", False, now, reason))
    elif unready or not initialized:
        msg = f"containers with unready status: [{' '.join(unready)}]"
        conds.append(_condition(old_conds, "Ready", False, now, "ContainersNotReady", msg))
        conds.append(_condition(old_conds, "ContainersReady", False, now, "ContainersNotReady", msg))
    else:
        conds.append(_condition(old_conds, "Ready", True, now))
        conds.append(_condition(old_conds, "ContainersReady", True, now))

    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conds,
        "hostIP": inp.host_ip,
        "hostIPs": [{"ip": inp.host_ip}] if inp.host_ip else [],
        "startTime": old.get("startTime") or rfc3339(now),
        "containerStatuses": app_st,
        "qosClass": qos_class(pod),
    }
    if init_st:
        status["initContainerStatuses"] = init_st
    sandbox = rs.newest_sandbox()
    pod_ip = ""
    if spec.get("hostNetwork"):
        pod_ip = inp.host_ip
    elif sandbox is not None and sandbox.state == SandboxState.READY:
        pod_ip = sandbox.ip
    elif old.get("podIP"):
        pod_ip = old["podIP"]  # keep the last known IP of a pod whose sandbox stopped (upstream does)
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    return status


def status_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether a status write would change anything (ignoring lastProbeTime)."""
    return a == b
