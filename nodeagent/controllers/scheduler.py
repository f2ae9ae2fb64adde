"""The scheduler: picks a node for each pending pod and writes the choice through pods/binding.

Seed 002: it only assigns a node; the kubelet on that node sees the binding through its own watch.
The scheduling cycle (filter, score, assume) runs one pod at a time against an incremental cache of
what is on each node; the binding cycle runs in the background so the next pod need not wait for the
apiserver (kube-scheduler's assume + async bind). Pods that fit nowhere are parked and retried when
a node or an assigned pod changes, and every `unschedulable_flush` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from nodeagent.client.errors import ApiError, Conflict, NotFound
from nodeagent.controllers.base import Context, Controller
from nodeagent.controllers.objects import deep, is_pod_terminal, key_of, meta, name_of, namespace_of, rfc3339
from nodeagent.controllers.scheduling import (
    NodeInfo,
    PodInfo,
    failure_message,
    filter_node,
    is_pending_for_us,
    pod_info,
    score_nodes,
)
from nodeagent.machinery.kinds import NODES, PODS

log = logging.getLogger(__name__)

Obj = dict[str, Any]
PROFILE = "default-scheduler"


class Scheduler(Controller):
    name = "scheduler"

    def __init__(self, ctx: Context, bind_concurrency: int = 16) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder(PROFILE)
        self.nodes: dict[str, NodeInfo] = {}
        self.pod_node: dict[str, str] = {}  # pod key -> node it counts against (bound or assumed)
        self.assumed: set[str] = set()
        self.unschedulable: set[str] = set()
        self.first_seen: dict[str, float] = {}
        self.attempts: dict[str, int] = {}
        self._bind_sem = asyncio.Semaphore(bind_concurrency)
        self._binds: set[asyncio.Task[None]] = set()
        ctx.metrics.pending_pods.labels("active").set_function(lambda: len(self.queue))
        ctx.metrics.pending_pods.labels("unschedulable").set_function(lambda: len(self.unschedulable))
        self.pods = ctx.informers.get(PODS)
        self.node_inf = ctx.informers.get(NODES)
        self.pods.add_handlers(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)
        self.node_inf.add_handlers(on_add=self._node_changed, on_update=lambda _o, n: self._node_changed(n),
                                   on_delete=self._node_deleted)

    # -- cache maintenance (informer handlers: quick, no I/O) ----------------------------------

    def _account(self, pod: Obj) -> None:
        key = key_of(pod)
        node = (pod.get("spec") or {}).get("nodeName")
        old = self.pod_node.get(key)
        if old is not None and (old != node or is_pod_terminal(pod) or not node):
            if old in self.nodes:
                self.nodes[old].remove_pod(key)
            del self.pod_node[key]
        if node and not is_pod_terminal(pod):
            ni = self.nodes.get(node)
            if ni is None:
                ni = self.nodes[node] = NodeInfo(node={"metadata": {"name": node}})
            ni.add_pod(pod_info(pod))
            self.pod_node[key] = node
            self.assumed.discard(key)

    def _pod_added(self, pod: Obj) -> None:
        self._account(pod)
        if is_pending_for_us(pod, PROFILE):
            key = key_of(pod)
            self.first_seen.setdefault(key, self.clock.now())
            self.queue.add(key)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        self._account(new)
        key = key_of(new)
        if is_pending_for_us(new, PROFILE):
            self.first_seen.setdefault(key, self.clock.now())
            # a parked pod is retried when it changes in a way that can change where it fits
            # (tolerations added, labels) or at a resync; not for its own status writes
            if key not in self.unschedulable or old is new or old.get("spec") != new.get("spec") \
                    or (old.get("metadata") or {}).get("labels") != (new.get("metadata") or {}).get("labels"):
                self.unschedulable.discard(key)
                self.queue.add(key)
        else:
            self.unschedulable.discard(key)
        # an assigned pod finishing frees room
        if (new.get("spec") or {}).get("nodeName") and is_pod_terminal(new) and not is_pod_terminal(old):
            self.move_all_to_active("pod finished")

    def _pod_deleted(self, pod: Obj) -> None:
        key = key_of(pod)
        node = self.pod_node.pop(key, None)
        if node and node in self.nodes:
            self.nodes[node].remove_pod(key)
        self.assumed.discard(key)
        self.unschedulable.discard(key)
        self.first_seen.pop(key, None)
        self.attempts.pop(key, None)
        if node:
            self.move_all_to_active("assigned pod deleted")

    def _node_changed(self, node: Obj) -> None:
        name = name_of(node)
        ni = self.nodes.get(name)
        if ni is None:
            ni = self.nodes[name] = NodeInfo(node=node)
        ni.set_node(node)
        self.move_all_to_active("node changed")

    def _node_deleted(self, node: Obj) -> None:
        self.nodes.pop(name_of(node), None)

    def move_all_to_active(self, why: str) -> None:
        if not self.unschedulable:
            return
        log.debug("retrying unschedulable pods count=%d reason=%s", len(self.unschedulable), why)
        for key in list(self.unschedulable):
            self.queue.add(key)
        self.unschedulable.clear()

    def background(self) -> list[Any]:
        return [self._flush_loop()]

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ctx.options.unschedulable_flush)
            self.move_all_to_active("periodic flush")

    # -- the scheduling cycle ------------------------------------------------------------------

    def select_node(self, pi: PodInfo) -> tuple[NodeInfo | None, dict[str, int]]:
        """Filter and score every known node (a real Node object, not a placeholder)."""
        candidates = [ni for ni in self.nodes.values() if ni.real]
        feasible: list[NodeInfo] = []
        reasons: dict[str, int] = {}
        for ni in candidates:
            why = filter_node(pi, ni)
            if why:
                for r in why:
                    reasons[r] = reasons.get(r, 0) + 1
            else:
                feasible.append(ni)
        if not feasible:
            return None, reasons
        scores = score_nodes(pi, feasible)
        best = max(scores)
        winners = [ni for ni, s in zip(feasible, scores, strict=True) if s >= best - 1e-9]
        return random.choice(winners), reasons

    async def reconcile(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None or not is_pending_for_us(pod, PROFILE) or key in self.assumed or key in self.pod_node:
            return
        self.attempts[key] = self.attempts.get(key, 0) + 1
        pi = pod_info(pod)
        ni, reasons = self.select_node(pi)
        if ni is None:
            self.ctx.metrics.schedule_attempts.labels("unschedulable", PROFILE).inc()
            total = sum(1 for n in self.nodes.values() if n.real)
            await self._unschedulable(pod, failure_message(total, reasons))
            return
        # assume: count the pod against the node now so the next pod sees it
        ni.add_pod(pi)
        self.pod_node[key] = ni.name
        self.assumed.add(key)
        await self._bind_sem.acquire()
        task = asyncio.create_task(self._bind(pod, ni.name))
        self._binds.add(task)
        task.add_done_callback(self._binds.discard)

    async def _bind(self, pod: Obj, node: str) -> None:
        key = key_of(pod)
        md = meta(pod)
        body = {"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": md["name"], "namespace": namespace_of(pod), "uid": md.get("uid")},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        try:
            await self.client.create_subresource(PODS, md["name"], "binding", body, namespace=namespace_of(pod))
        except (ApiError, OSError) as e:
            self._forget(key, node)
            self.ctx.metrics.schedule_attempts.labels("error", PROFILE).inc()
            if isinstance(e, NotFound):
                return  # the pod is gone
            if isinstance(e, Conflict) and "already" in str(e).lower():
                return  # someone else bound it; the informer will tell us where
            log.warning("binding failed pod=%s node=%s error=%s", key, node, e)
            self.recorder.event(pod, "Warning", "FailedScheduling", f"Binding rejected: {e}")
            self.queue.add_rate_limited(key)
            return
        finally:
            self._bind_sem.release()
        self.ctx.metrics.schedule_attempts.labels("scheduled", PROFILE).inc()
        started = self.first_seen.pop(key, None)
        attempts = self.attempts.pop(key, 1)
        if started is not None:
            self.ctx.metrics.pod_scheduling_duration.labels(str(min(attempts, 15))).observe(
                max(0.0, self.clock.now() - started))
        self.recorder.event(pod, "Normal", "Scheduled",
                            f"Successfully assigned {namespace_of(pod)}/{md['name']} to {node}")
        log.info("bound pod=%s node=%s", key, node)

    def _forget(self, key: str, node: str) -> None:
        self.assumed.discard(key)
        if self.pod_node.get(key) == node:
            del self.pod_node[key]
            if node in self.nodes:
                self.nodes[node].remove_pod(key)

    async def _unschedulable(self, pod: Obj, message: str) -> None:
        key = key_of(pod)
        self.unschedulable.add(key)
        self.recorder.event(pod, "Warning", "FailedScheduling", message)
        log.info("unschedulable pod=%s message=%r", key, message)
        # PodScheduled=False/Unschedulable as upstream, written only when it changes
        status = pod.get("status") or {}
        conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        old = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
        if old and old.get("status") == "False" and old.get("message") == message:
            return
        cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                "lastProbeTime": None, "lastTransitionTime": rfc3339(self.clock.now())}
        new = deep(pod)
        new.setdefault("status", {})["conditions"] = [*conds, cond]
        try:
            await self.client.update_status(PODS, new)
        except ApiError as e:
            log.debug("pod condition not written pod=%s error=%s", key, e)

    async def wait_binds(self) -> None:
        """Wait for in-flight bindings (tests, benchmark, shutdown)."""
        while self._binds:
            await asyncio.gather(*list(self._binds), return_exceptions=True)

    async def stop(self) -> None:
        await super().stop()
        for t in list(self._binds):
            t.cancel()
        await asyncio.gather(*self._binds, return_exceptions=True)


