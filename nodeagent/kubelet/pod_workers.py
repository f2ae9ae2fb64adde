"""Pod workers: one task per pod, so that everything done to one pod happens in order.

As upstream's pod_workers.go: the kubelet hands each update of a pod (from the informer, the
PLEG, a probe) to that pod's worker, which syncs it one sync at a time. A worker syncs when it is
woken and at least every sync_frequency; a failed sync is retried after 1 s, doubling to 30 s; a
sync may ask to run again sooner (requeue_after: the end of a back-off, a missing ConfigMap). A
worker whose pod is finished (deleted and confirmed, or torn down) ends, and its uid is kept in
`finished` so that a late event for it does not start the pod again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

RETRY_INITIAL = 1.0
RETRY_MAX = 30.0
MIN_REQUEUE = 0.05


def pod_key(pod: dict[str, Any]) -> str:
    md = pod.get("metadata", {})
    return f"{md.get('namespace', 'default')}/{md.get('name', '')}"


@dataclass
class PodWorker:
    """One pod's worker and what the kubelet remembers about the pod between syncs."""

    uid: str
    pod: dict[str, Any] | None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    removed: bool = False  # gone from the API (or orphaned in the runtime)
    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)  # container -> (reason, message)
    requeue_after: float | None = None
    volume_paths: dict[str, str] | None = None
    last_grace: int = 0  # the grace period of the pod as last seen, for a teardown after its deletion
    done: bool = False  # set by the sync that finished the pod: the worker ends
    synced_reads: int | None = None  # the PLEG's reads_started when this pod's last sync ended

    @property
    def name(self) -> str:
        return pod_key(self.pod) if self.pod else self.uid

    def requeue(self, after: float) -> None:
        """Sync again within `after` seconds (the sooner of two requests wins)."""
        self.requeue_after = after if self.requeue_after is None else min(self.requeue_after, after)


SyncFn = Callable[[PodWorker], Awaitable[None]]


class PodWorkers:
    def __init__(self, sync: SyncFn, sync_frequency: float) -> None:
        self._sync = sync
        self.sync_frequency = sync_frequency
        self.workers: dict[str, PodWorker] = {}
        self.finished: set[str] = set()  # uids whose pods this kubelet finished
        self._stopping = False

    def update(self, pod: dict[str, Any]) -> PodWorker | None:
        """UpdatePod: give the pod's worker the newest object and wake it; start a worker for a
        pod not seen before and return it (None for a known or finished pod)."""
        uid = pod.get("metadata", {}).get("uid", "")
        if not uid or uid in self.finished:
            return None
        w = self.workers.get(uid)
        if w is not None:
            w.pod = pod
            w.wake.set()
            return None
        return self._start(PodWorker(uid, pod))

    def remove(self, uid: str, grace: int) -> None:
        """The pod is gone from the API: its worker tears down what is left."""
        w = self.workers.get(uid)
        if w is not None:
            w.last_grace = grace
            w.removed = True
            w.wake.set()

    def tear_down_orphan(self, uid: str, grace: int) -> bool:
        """A pod the runtime has and no API object claims: start a worker that removes it."""
        if uid in self.workers or uid in self.finished:
            return False
        self._start(PodWorker(uid, None, removed=True, last_grace=grace))
        return True

    def wake(self, uid: str) -> None:
        w = self.workers.get(uid)
        if w is not None:
            w.wake.set()

    def forget_finished(self, still_known: set[str]) -> None:
        """Drop finished uids that neither the runtime nor the API knows any more."""
        self.finished &= still_known

    async def stop(self) -> None:
        self._stopping = True
        tasks = [w.task for w in self.workers.values() if w.task]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, w: PodWorker) -> PodWorker:
        self.workers[w.uid] = w
        w.wake.set()
        w.task = asyncio.get_running_loop().create_task(self._loop(w), name=f"pod-worker-{w.uid}")
        return w

    async def _loop(self, w: PodWorker) -> None:
        retry = RETRY_INITIAL
        while not self._stopping:
            timeout = self.sync_frequency
            if w.requeue_after is not None:
                timeout = min(timeout, max(w.requeue_after, MIN_REQUEUE))
            try:
                await asyncio.wait_for(w.wake.wait(), timeout)
            except TimeoutError:
                pass
            w.wake.clear()
            w.requeue_after = None
            try:
                await self._sync(w)
                retry = RETRY_INITIAL
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("pod sync failed pod=%s pod_uid=%s err=%s", w.name, w.uid, e)
                w.requeue_after = retry
                retry = min(retry * 2, RETRY_MAX)
            if w.done:
                self.finished.add(w.uid)
                self.workers.pop(w.uid, None)
                return
