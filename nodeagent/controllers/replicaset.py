"""The ReplicaSet controller: keep spec.replicas pods that match the selector, owned by the set.

Pods are claimed as upstream's PodControllerRefManager does (podcontrol.py: released when they stop
matching, matching orphans adopted, other controllers' pods left alone). Surplus pods are deleted in upstream's order (unscheduled, pending, not ready and
newest first). Status: replicas, fullyLabeledReplicas, readyReplicas, availableReplicas (ready for
minReadySeconds) and observedGeneration.
"""

from __future__ import annotations

import logging
from typing import Any

from nodeagent.client.errors import AlreadyExists, ApiError, NotFound
from nodeagent.controllers.base import Context, PodOwnerController
from nodeagent.controllers.objects import (
    creation_time,
    deep,
    is_deleting,
    is_pod_active,
    is_pod_available,
    is_pod_ready,
    labels_of,
    meta,
    name_of,
    namespace_of,
    parse_time,
    pod_condition,
    selector_matches,
    split_key,
    uid_of,
)
from nodeagent.controllers.podcontrol import claim, pod_from_template
from nodeagent.machinery.kinds import PODS, REPLICASETS

log = logging.getLogger(__name__)

Obj = dict[str, Any]
BURST_REPLICAS = 500  # upstream's cap on creations or deletions per sync


def deletion_rank(pod: Obj, now: float) -> tuple[int, int, int, float]:
    """Lower sorts first = deleted first (controller.ActivePods Less, simplified)."""
    assigned = 1 if (pod.get("spec") or {}).get("nodeName") else 0
    phase = {"Pending": 0, "Unknown": 1, "Running": 2}.get((pod.get("status") or {}).get("phase") or "Pending", 0)
    ready = 1 if is_pod_ready(pod) else 0
    return (assigned, phase, ready, -creation_time(pod))


class ReplicaSetController(PodOwnerController):
    name = "replicaset"
    owner_kind = "ReplicaSet"
    workers = 2

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder("replicaset-controller")
        self.rs_inf = self.watch_primary(REPLICASETS)
        self.pods = self.watch_owned_pods()

    def _enqueue_matching(self, pod: Obj) -> None:
        """An orphan changed: any set in its namespace whose selector matches may adopt it."""
        ns = namespace_of(pod)
        for rs in self.rs_inf.list():
            if namespace_of(rs) == ns and selector_matches((rs.get("spec") or {}).get("selector"), labels_of(pod)):
                self.enqueue(rs)

    def _pod_added(self, pod: Obj) -> None:
        super()._pod_added(pod)
        if not self._owner_key(pod) and not is_deleting(pod):
            self._enqueue_matching(pod)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        k_old, k_new = self._owner_key(old), self._owner_key(new)
        if k_old and k_old != k_new:
            self.queue.add(k_old)
        if k_new:
            if is_deleting(new):  # a graceful deletion counts as observed (upstream updatePod)
                self.expectations.deletion_observed(k_new, uid_of(new))
            self.queue.add(k_new)
            # availability flips after minReadySeconds without any pod event
            if not is_pod_ready(old) and is_pod_ready(new):
                rs = self.rs_inf.get(k_new)
                mrs = int(((rs or {}).get("spec") or {}).get("minReadySeconds") or 0)
                if mrs:
                    self.queue.add_after(k_new, mrs + 1)
        elif labels_of(old) != labels_of(new) or old is new:
            self._enqueue_matching(new)

    async def reconcile(self, key: str) -> None:
        rs = self.rs_inf.get(key)
        if rs is None:
            self.expectations.forget(key)
            return
        ns, _ = split_key(key)
        spec = rs.get("spec") or {}
        candidates = [p for p in self.pods.list() if namespace_of(p) == ns and is_pod_active(p)]
        pods = await claim(self.client, rs, REPLICASETS, PODS, candidates, spec.get("selector"))
        if self.expectations.satisfied(key) and not is_deleting(rs):
            await self._manage(rs, key, pods)
        await self._update_status(rs, pods)

    async def _manage(self, rs: Obj, key: str, pods: list[Obj]) -> None:
        spec = rs.get("spec") or {}
        want = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
        diff = len(pods) - want
        if diff < 0:
            n = min(-diff, BURST_REPLICAS)
            self.expectations.expect(key, adds=n)
            await self._create_pods(rs, key, n)
        elif diff > 0:
            now = self.clock.now()
            victims = sorted(pods, key=lambda p: deletion_rank(p, now))[:min(diff, BURST_REPLICAS)]
            self.expectations.expect(key, deleted_uids={uid_of(p) for p in victims})
            for p in victims:
                try:
                    await self.client.delete(PODS, name_of(p), namespace=namespace_of(p))
                    self.recorder.event(rs, "Normal", "SuccessfulDelete", f"Deleted pod: {name_of(p)}")
                except NotFound:
                    self.expectations.deletion_observed(key, uid_of(p))
                except ApiError as e:
                    self.expectations.deletion_observed(key, uid_of(p))
                    self.recorder.event(rs, "Warning", "FailedDelete", f"Error deleting: {e}")
                    raise

    async def _create_pods(self, rs: Obj, key: str, n: int) -> None:
        # slow start as upstream: batches of 1, 2, 4, ... so a failing template fails fast
        batch, done = 1, 0
        template = (rs.get("spec") or {}).get("template") or {}
        while done < n:
            size = min(batch, n - done)
            for _ in range(size):
                pod = pod_from_template(rs, template, REPLICASETS, name_of(rs))
                try:
                    created = await self.client.create(PODS, pod, namespace=namespace_of(rs))
                    self.recorder.event(rs, "Normal", "SuccessfulCreate", f"Created pod: {name_of(created)}")
                except AlreadyExists:
                    self.expectations.creation_failed(key)  # a name collision: next sync retries
                except ApiError as e:
                    skipped = n - done
                    for _ in range(skipped):
                        self.expectations.creation_failed(key)
                    self.recorder.event(rs, "Warning", "FailedCreate", f"Error creating: {e.message or e}")
                    raise
                done += 1
            batch *= 2

    async def _update_status(self, rs: Obj, pods: list[Obj]) -> None:
        spec = rs.get("spec") or {}
        now = self.clock.now()
        mrs = int(spec.get("minReadySeconds") or 0)
        tmpl_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        status: Obj = dict(rs.get("status") or {})
        new = {
            "replicas": len(pods),
            "fullyLabeledReplicas": sum(
                1 for p in pods if all(labels_of(p).get(k) == v for k, v in tmpl_labels.items())),
            "readyReplicas": sum(1 for p in pods if is_pod_ready(p)),
            "availableReplicas": sum(1 for p in pods if is_pod_available(p, mrs, now)),
            "observedGeneration": meta(rs).get("generation", 1),
        }
        if mrs and new["readyReplicas"] > new["availableReplicas"]:
            # requeue when the earliest ready pod becomes available
            waits = []
            for p in pods:
                c = pod_condition(p, "Ready") or {}
                if is_pod_ready(p) and not is_pod_available(p, mrs, now):
                    since = parse_time(c.get("lastTransitionTime")) or now
                    waits.append(since + mrs - now)
            if waits:
                self.queue.add_after(f"{namespace_of(rs)}/{name_of(rs)}", max(0.5, min(waits) + 0.1))
        if all(status.get(k, 0) == v for k, v in new.items()):
            return
        body = deep(rs)
        body["status"] = {**status, **new}
        await self.client.update_status(REPLICASETS, body)
