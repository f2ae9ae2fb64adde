"""Node lifecycle: health from the node Leases, condition-based taints, and NoExecute eviction.

Seed 004 "Node controller" and pkg/controller/nodelifecycle: a node whose Lease in kube-node-lease
(or Ready heartbeat) has not changed for --node-monitor-grace-period gets Ready=Unknown (reason
NodeStatusUnknown) and its pods are marked not ready. Taints follow the Ready condition: False ->
node.kubernetes.io/not-ready, Unknown -> node.kubernetes.io/unreachable, each NoSchedule and
NoExecute; removed again when the node is Ready. Pods on a node with NoExecute taints they do not
tolerate are deleted; tolerated ones after their tolerationSeconds (pods without a toleration for
not-ready/unreachable get --default-toleration-seconds, as the DefaultTolerationSeconds admission
plugin would have given them). Freshness is judged by when *we* saw a change, never by comparing the
node's clock with ours.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nodeagent.client.errors import ApiError, NotFound
from nodeagent.controllers.base import Context, Controller
from nodeagent.controllers.objects import (
    deep,
    is_deleting,
    is_pod_terminal,
    name_of,
    namespace_of,
    parse_time,
    rfc3339,
)
from nodeagent.controllers.taints import (
    TAINT_NOT_READY,
    TAINT_UNREACHABLE,
    TAINT_UNSCHEDULABLE,
    matching_tolerations,
    pod_tolerations,
)
from nodeagent.machinery.kinds import LEASES, NODES, PODS

log = logging.getLogger(__name__)

Obj = dict[str, Any]
NODE_LEASE_NS = "kube-node-lease"
CONDITIONS_TO_UNKNOWN = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
MANAGED_TAINTS = {TAINT_NOT_READY, TAINT_UNREACHABLE, TAINT_UNSCHEDULABLE}


def ready_status(node: Obj) -> str | None:
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return str(c.get("status"))
    return None


def desired_taints(node: Obj, now: float, current: list[Obj]) -> list[Obj]:
    """The node's taints with ours brought in line with its Ready condition and spec.unschedulable."""
    ready = ready_status(node)
    want: list[tuple[str, str]] = []
    if ready == "False":
        want = [(TAINT_NOT_READY, "NoSchedule"), (TAINT_NOT_READY, "NoExecute")]
    elif ready == "Unknown":
        want = [(TAINT_UNREACHABLE, "NoSchedule"), (TAINT_UNREACHABLE, "NoExecute")]
    elif ready is None:
        want = [(TAINT_NOT_READY, "NoSchedule")]
    if (node.get("spec") or {}).get("unschedulable"):
        want.append((TAINT_UNSCHEDULABLE, "NoSchedule"))
    out = [t for t in current if t.get("key") not in MANAGED_TAINTS
           or (t.get("key"), t.get("effect")) in want]
    have = {(t.get("key"), t.get("effect")) for t in out}
    for key, effect in want:
        if (key, effect) not in have:
            t: Obj = {"key": key, "effect": effect}
            if effect == "NoExecute":
                t["timeAdded"] = rfc3339(now)
            out.append(t)
    return out


def with_default_tolerations(tolerations: list[Obj], seconds: int) -> list[Obj]:
    """DefaultTolerationSeconds admission: not-ready and unreachable NoExecute for `seconds`."""
    out = list(tolerations)
    for key in (TAINT_NOT_READY, TAINT_UNREACHABLE):
        taint = {"key": key, "effect": "NoExecute"}
        if not matching_tolerations(taint, out):
            out.append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds})
    return out


def eviction_deadline(pod: Obj, taints: list[Obj], default_seconds: int, first_seen: dict[str, float],
                      now: float) -> float | None:
    """When the pod must go (now for an untolerated NoExecute taint), or None if it may stay."""
    tolerations = with_default_tolerations(pod_tolerations(pod), default_seconds)
    deadline: float | None = None
    for t in taints:
        if t.get("effect") != "NoExecute":
            continue
        matching = matching_tolerations(t, tolerations)
        since = parse_time(t.get("timeAdded")) or first_seen.get(f"{t.get('key')}", now)
        if not matching:
            return now
        secs = [m.get("tolerationSeconds") for m in matching]
        if any(s is None for s in secs):
            continue  # tolerated forever
        d = since + max(0, min(int(s) for s in secs if s is not None))
        deadline = d if deadline is None else min(deadline, d)
    return deadline


class NodeLifecycleController(Controller):
    name = "nodelifecycle"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder("node-controller")
        self.node_inf = self.watch_primary(NODES)
        self.lease_inf = ctx.informers.get(LEASES)
        self.pods = ctx.informers.get(PODS)
        self.probe: dict[str, tuple[str, float]] = {}  # node -> (last heartbeat seen, when we saw it)
        self.lease_inf.add_handlers(on_add=self._lease, on_update=lambda _o, n: self._lease(n))
        self.node_inf.add_handlers(on_add=self._node_added, on_update=lambda _o, n: self._node_heartbeat(n),
                                   on_delete=lambda n: self.probe.pop(name_of(n), None))
        self.grace = ctx.options.node_monitor_grace_period
        self.default_toleration = ctx.options.default_toleration_seconds

    def _observe(self, node: str, stamp: str) -> None:
        old = self.probe.get(node)
        if old is None or old[0] != stamp:
            self.probe[node] = (stamp, self.clock.now())

    def _lease(self, lease: Obj) -> None:
        if namespace_of(lease) != NODE_LEASE_NS:
            return
        spec = lease.get("spec") or {}
        self._observe(name_of(lease), f"lease:{spec.get('renewTime')}")

    def _node_added(self, node: Obj) -> None:
        self.recorder.event(node, "Normal", "RegisteredNode",
                            f"Node {name_of(node)} event: Registered Node {name_of(node)} in Controller")
        self._node_heartbeat(node)

    def _node_heartbeat(self, node: Obj) -> None:
        for c in (node.get("status") or {}).get("conditions") or []:
            if c.get("type") == "Ready" and c.get("status") != "Unknown":
                self._observe(name_of(node), f"ready:{c.get('lastHeartbeatTime')}:{c.get('status')}")
                return
        if name_of(node) not in self.probe:
            self.probe[name_of(node)] = ("", self.clock.now())

    def background(self) -> list[Any]:
        return [self._monitor_loop()]

    async def _monitor_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ctx.options.node_monitor_period)
            try:
                await self.monitor_once()
            except Exception as e:
                log.warning("node monitor pass failed error=%s", e)

    async def monitor_once(self) -> None:
        """One monitorNodeHealth pass plus the NoExecute eviction pass."""
        now = self.clock.now()
        for node in self.node_inf.list():
            name = name_of(node)
            seen = self.probe.get(name)
            if seen is None:
                self.probe[name] = ("", now)
                continue
            if now - seen[1] > self.grace and ready_status(node) != "Unknown":
                await self._mark_unknown(node, now)
            elif ready_status(node) == "Unknown":
                # again on every pass: a write lost to a conflict is retried (only changes are written)
                await self._mark_pods_not_ready(name, now)
        await self.evict_once(now)

    async def _mark_unknown(self, node: Obj, now: float) -> None:
        name = name_of(node)
        body = deep(node)
        status = body.setdefault("status", {})
        conds = status.setdefault("conditions", [])
        ts = rfc3339(now)
        have = {c.get("type") for c in conds}
        for c in conds:
            if c.get("type") in CONDITIONS_TO_UNKNOWN and c.get("status") != "Unknown":
                c.update({"status": "Unknown", "reason": "NodeStatusUnknown",
                          "message": "Kubelet stopped posting node status.", "lastTransitionTime": ts})
        if "Ready" not in have:
            conds.append({"type": "Ready", "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                          "message": "Kubelet never posted node status.", "lastHeartbeatTime": ts,
                          "lastTransitionTime": ts})
        await self.client.update_status(NODES, body)
        log.info("node not responding node=%s grace=%ss", name, self.grace)
        self.recorder.event(node, "Normal", "NodeNotReady", f"Node {name} status is now: NodeNotReady")
        await self._mark_pods_not_ready(name, now)

    async def _mark_pods_not_ready(self, node: str, now: float) -> None:
        """MarkPodsNotReady: endpoints stop sending traffic to pods on a node we cannot hear from."""
        for pod in self.pods.list():
            if (pod.get("spec") or {}).get("nodeName") != node or is_pod_terminal(pod):
                continue
            body = deep(pod)
            changed = False
            for c in (body.get("status") or {}).get("conditions") or []:
                if c.get("type") == "Ready" and c.get("status") != "False":
                    c.update({"status": "False", "lastTransitionTime": rfc3339(now)})
                    changed = True
            if changed:
                try:
                    await self.client.update_status(PODS, body)
                except ApiError as e:
                    log.debug("pod not marked not ready pod=%s/%s error=%s", namespace_of(pod), name_of(pod), e)

    async def reconcile(self, key: str) -> None:
        """Keep the node's condition taints in line with its Ready condition."""
        node = self.node_inf.get(key)
        if node is None:
            return
        current = list((node.get("spec") or {}).get("taints") or [])
        want = desired_taints(node, self.clock.now(), current)
        if want == current:
            return
        body = deep(node)
        body.setdefault("spec", {})["taints"] = want
        if not want:
            body["spec"].pop("taints")
        await self.client.update(NODES, body)
        log.info("node taints updated node=%s taints=%s", key, ",".join(f"{t['key']}:{t['effect']}" for t in want))

    async def evict_once(self, now: float | None = None) -> None:
        now = self.clock.now() if now is None else now
        tainted: dict[str, list[Obj]] = {}
        for n in self.node_inf.list():
            taints = [t for t in (n.get("spec") or {}).get("taints") or [] if t.get("effect") == "NoExecute"]
            if taints:
                tainted[name_of(n)] = taints
        if not tainted:
            return
        for pod in self.pods.list():
            node = str((pod.get("spec") or {}).get("nodeName") or "")
            if node not in tainted or is_deleting(pod) or is_pod_terminal(pod):
                continue
            deadline = eviction_deadline(pod, tainted[node], self.default_toleration, {}, now)
            if deadline is None or deadline > now:
                continue
            try:
                await self.client.delete(PODS, name_of(pod), namespace=namespace_of(pod))
            except NotFound:
                continue
            log.info("evicted pod=%s/%s node=%s", namespace_of(pod), name_of(pod), node)
            self.recorder.event(pod, "Normal", "TaintManagerEviction",
                                f"Marking for deletion Pod {namespace_of(pod)}/{name_of(pod)}")
