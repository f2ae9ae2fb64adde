"""The shape every loop shares: informers -> a WorkQueue keyed by ns/name -> reconcile(key).

reconcile is level-based and idempotent: it reads the informer caches, compares with what should
be, and writes through the client. A failure re-queues the key with backoff; a clean pass forgets
the backoff. Resync comes from the informers' periodic on_update(obj, obj) (seed 002: controllers
re-list because watches can miss events).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from nodeagent.client.errors import Conflict, NotFound
from nodeagent.client.events import EventRecorder
from nodeagent.client.informer import Informer
from nodeagent.client.interface import ClientProtocol
from nodeagent.client.workqueue import ShutDown, WorkQueue
from nodeagent.clock import Clock, RealClock
from nodeagent.controllers.expectations import Expectations
from nodeagent.controllers.metrics import Metrics
from nodeagent.controllers.objects import controller_ref, is_deleting, namespace_of, uid_of
from nodeagent.machinery.kinds import Kind

log = logging.getLogger(__name__)

Obj = dict[str, Any]


@dataclass
class Options:
    cluster_cidr: str = "10.244.0.0/16"
    node_cidr_mask_size: int = 24
    node_monitor_grace_period: float = 50.0
    node_monitor_period: float = 1.0
    default_toleration_seconds: int = 300
    resync_period: float = 60.0
    unschedulable_flush: float = 30.0
    extra: dict[str, Any] = field(default_factory=dict)


class SharedInformers:
    """One informer per kind for the whole process, shared by every loop (a SharedInformerFactory)."""

    def __init__(self, client: ClientProtocol, resync_period: float | None = 60.0) -> None:
        self.client = client
        self.resync_period = resync_period
        self._informers: dict[Kind, Informer] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def get(self, kind: Kind) -> Informer:
        inf = self._informers.get(kind)
        if inf is None:
            inf = Informer(self.client, kind, resync_period=self.resync_period)
            self._informers[kind] = inf
            if self._tasks:  # asked for after start: start it too
                self._tasks.append(asyncio.create_task(inf.run(), name=f"informer-{kind.plural}"))
        return inf

    def start(self) -> None:
        for kind, inf in self._informers.items():
            self._tasks.append(asyncio.create_task(inf.run(), name=f"informer-{kind.plural}"))

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.gather(*(inf.wait_synced(timeout) for inf in self._informers.values()))

    async def stop(self) -> None:
        for inf in self._informers.values():
            inf.stop()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


@dataclass
class Context:
    client: ClientProtocol
    informers: SharedInformers
    options: Options = field(default_factory=Options)
    clock: Clock = field(default_factory=RealClock)
    metrics: Metrics = field(default_factory=Metrics)
    recorders: dict[str, EventRecorder] = field(default_factory=dict)
    extra_clients: dict[str, Any] = field(default_factory=dict)  # identities of jobs a loop does for another

    def recorder(self, component: str) -> EventRecorder:
        rec = self.recorders.get(component)
        if rec is None:
            rec = self.recorders[component] = EventRecorder(self.client, component=component)
        return rec


class Controller:
    """Subclasses set `name`, register handlers in __init__ and implement reconcile(key)."""

    name = "controller"
    workers = 1

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.clock = ctx.clock
        self.queue = WorkQueue(name=self.name)
        ctx.metrics.register_queue(self.name, self.queue)
        self._tasks: list[asyncio.Task[None]] = []

    # -- handler helpers ----------------------------------------------------------------------

    def enqueue(self, obj: Obj) -> None:
        md = obj.get("metadata") or {}
        ns = md.get("namespace")
        self.queue.add(f"{ns}/{md['name']}" if ns else md["name"])

    def watch_primary(self, kind: Kind) -> Informer:
        inf = self.ctx.informers.get(kind)
        inf.add_handlers(on_add=self.enqueue, on_update=lambda _o, n: self.enqueue(n), on_delete=self.enqueue)
        return inf

    # -- running ------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        raise NotImplementedError

    async def process_one(self) -> None:
        key = str(await self.queue.get())
        try:
            await self.reconcile(key)
        except asyncio.CancelledError:
            raise
        except (Conflict, NotFound) as e:
            # a stale cache: the informer will catch up; retry soon (not an error worth a stack)
            log.debug("retry controller=%s key=%s reason=%s", self.name, key, e)
            self.queue.add_rate_limited(key)
        except Exception as e:
            log.warning("reconcile failed controller=%s key=%s error=%s", self.name, key, e,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            self.queue.add_rate_limited(key)
        else:
            self.queue.forget(key)
        finally:
            self.queue.done(key)

    async def _worker(self) -> None:
        while True:
            try:
                await self.process_one()
            except ShutDown:
                return

    async def drain(self, max_rounds: int = 1000) -> int:
        """Process queued keys until the queue is empty (unit tests); returns how many ran."""
        n = 0
        while len(self.queue) and n < max_rounds:
            await self.process_one()
            n += 1
        return n

    def start(self) -> None:
        for i in range(self.workers):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"{self.name}-worker-{i}"))
        self._tasks.extend(asyncio.create_task(c, name=f"{self.name}-loop") for c in self.background())

    def background(self) -> list[Any]:
        """Extra periodic coroutines (monitors, flushes); none by default."""
        return []

    async def stop(self) -> None:
        self.queue.shutdown()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


class PodOwnerController(Controller):
    """A controller whose objects own pods (ReplicaSet, DaemonSet, Job): every pod event wakes the
    pod's controlling owner and settles that owner's create/delete expectations, as upstream's
    addPod/updatePod/deletePod do (pkg/controller/replicaset, daemon, job)."""

    owner_kind = ""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.expectations = Expectations(ctx.clock)

    def watch_owned_pods(self) -> Informer:
        from nodeagent.machinery.kinds import PODS

        pods = self.ctx.informers.get(PODS)
        pods.add_handlers(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)
        return pods

    def _owner_key(self, pod: Obj) -> str | None:
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != self.owner_kind:
            return None
        return f"{namespace_of(pod)}/{ref.get('name')}"

    def _pod_added(self, pod: Obj) -> None:
        key = self._owner_key(pod)
        if key:
            self.expectations.creation_observed(key)
            self.queue.add(key)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        key = self._owner_key(new)
        if key:
            if is_deleting(new):  # a graceful deletion counts as observed (upstream updatePod)
                self.expectations.deletion_observed(key, uid_of(new))
            self.queue.add(key)

    def _pod_deleted(self, pod: Obj) -> None:
        key = self._owner_key(pod)
        if key:
            self.expectations.deletion_observed(key, uid_of(pod))
            self.queue.add(key)
