"""The pod lifecycle event generator: relist the runtime every second and report what changed.

As upstream's pleg/generic.go: keep the old and the current record of every pod (its sandboxes'
and containers' states), diff them after each relist into ContainerStarted / ContainerDied /
ContainerRemoved / ContainerChanged events, refresh the cached status of the pods that changed and
hand the events to the kubelet. The PLEG is unhealthy when a relist has not finished for longer
than the threshold (upstream: 3 minutes). The clock is injected so tests never sleep.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from nodeagent.clock import Clock
from nodeagent.kubelet.model import ContainerState, PodRuntimeStatus, SandboxState
from nodeagent.kubelet.podstatus import get_pod_status
from nodeagent.kubelet.runtime_service import RuntimeService

log = logging.getLogger(__name__)


class EventType(StrEnum):
    CONTAINER_STARTED = "ContainerStarted"
    CONTAINER_DIED = "ContainerDied"
    CONTAINER_REMOVED = "ContainerRemoved"
    CONTAINER_CHANGED = "ContainerChanged"


@dataclass(frozen=True)
class PodLifecycleEvent:
    pod_uid: str
    type: EventType
    data: str  # the container (or sandbox) id


# What the relist sees of one pod: id -> state, for sandboxes and containers alike.
_Record = dict[str, str]


@dataclass
class _PodRecord:
    old: _Record | None = None
    current: _Record | None = None


@dataclass
class CachedStatus:
    status: PodRuntimeStatus
    timestamp: float
    seq: int  # order in which the reads started: a slower, older read never replaces a newer one


@dataclass
class PLEGMetrics:
    relist_durations: list[float] = field(default_factory=list)


def _state_name(state: str | None) -> str:
    """Reduce a CRI state to upstream's plegContainerState."""
    if state is None:
        return "non-existent"
    if state in (ContainerState.RUNNING.value, SandboxState.READY.value):
        return "running"
    if state in (ContainerState.EXITED.value, SandboxState.NOTREADY.value):
        return "exited"
    if state == ContainerState.UNKNOWN.value:
        return "unknown"
    return "created"


def _events_for(uid: str, cid: str, old: str | None, new: str | None) -> list[PodLifecycleEvent]:
    """generateEvents in pleg/generic.go."""
    o, n = _state_name(old), _state_name(new)
    if o == n:
        return []
    if n == "running":
        return [PodLifecycleEvent(uid, EventType.CONTAINER_STARTED, cid)]
    if n == "exited":
        return [PodLifecycleEvent(uid, EventType.CONTAINER_DIED, cid)]
    if n == "unknown":
        return [PodLifecycleEvent(uid, EventType.CONTAINER_CHANGED, cid)]
    if n == "non-existent":
        if o == "exited":
            return [PodLifecycleEvent(uid, EventType.CONTAINER_REMOVED, cid)]
        return [PodLifecycleEvent(uid, EventType.CONTAINER_DIED, cid),
                PodLifecycleEvent(uid, EventType.CONTAINER_REMOVED, cid)]
    return [PodLifecycleEvent(uid, EventType.CONTAINER_CHANGED, cid)]


class GenericPLEG:
    def __init__(self, runtime: RuntimeService, clock: Clock,
                 on_event: Callable[[PodLifecycleEvent], None] | None = None,
                 relist_period: float = 1.0, relist_threshold: float = 180.0,
                 on_relist: Callable[[float], None] | None = None) -> None:
        self.runtime = runtime
        self.clock = clock
        self.on_event = on_event
        self.on_relist = on_relist
        self.relist_period = relist_period
        self.relist_threshold = relist_threshold
        self._records: dict[str, _PodRecord] = {}
        self._cache: dict[str, CachedStatus] = {}
        self._seq = 0
        self.last_relist: float | None = None
        self.known_uids: set[str] = set()

    # --- the cache the pod workers read -------------------------------------------------------
    def cached(self, uid: str) -> PodRuntimeStatus | None:
        c = self._cache.get(uid)
        return c.status if c else None

    async def refresh(self, uid: str) -> PodRuntimeStatus:
        """Read the pod's status from the runtime now and cache it (unless a read that started
        later has already been cached: the PLEG and a pod worker may read the same pod at once)."""
        ts = self.clock.now()
        self._seq += 1
        seq = self._seq
        st = await get_pod_status(self.runtime, uid)
        cur = self._cache.get(uid)
        if cur is None or cur.seq < seq:
            self._cache[uid] = CachedStatus(st, ts, seq)
        return st

    @property
    def reads_started(self) -> int:
        """How many pod status reads have started: a mark to compare cache entries with."""
        return self._seq

    def cached_since(self, uid: str, mark: int) -> PodRuntimeStatus | None:
        """The cached status if its read started after `mark` (a reads_started value), else None
        (upstream's podCache.GetNewerThan, by read order instead of a clock)."""
        c = self._cache.get(uid)
        return c.status if c is not None and c.seq > mark else None

    def cached_statuses(self) -> list[PodRuntimeStatus]:
        return [c.status for c in self._cache.values()]

    def forget(self, uid: str) -> None:
        self._cache.pop(uid, None)

    # --- relisting ----------------------------------------------------------------------------
    async def relist(self) -> list[PodLifecycleEvent]:
        started = time.monotonic()
        sandboxes = await self.runtime.list_sandboxes()
        containers = await self.runtime.list_containers()
        current: dict[str, _Record] = {}
        for s in sandboxes:
            current.setdefault(s.pod_uid, {})[s.id] = s.state.value
        for c in containers:
            current.setdefault(c.pod_uid, {})[c.id] = c.state.value
        self.known_uids = set(current)

        for uid, rec in current.items():
            self._records.setdefault(uid, _PodRecord()).current = rec
        for uid, prec in self._records.items():
            if uid not in current:
                prec.current = {}

        events: list[PodLifecycleEvent] = []
        changed: set[str] = set()
        for uid, prec in list(self._records.items()):
            old, cur = prec.old or {}, prec.current or {}
            for cid in set(old) | set(cur):
                evs = _events_for(uid, cid, old.get(cid), cur.get(cid))
                if evs:
                    changed.add(uid)
                events.extend(evs)
        for uid in changed:
            try:
                await self.refresh(uid)
            except Exception as e:  # keep the old record so the next relist retries this pod
                log.warning("pleg: refreshing pod status failed pod_uid=%s err=%s", uid, e)
                continue
        for uid, prec in list(self._records.items()):
            prec.old = prec.current
            if not prec.current:
                del self._records[uid]
                self._cache.pop(uid, None)
        self.last_relist = self.clock.now()
        if self.on_relist:
            self.on_relist(time.monotonic() - started)
        if self.on_event:
            for ev in events:
                if ev.type != EventType.CONTAINER_REMOVED:  # upstream drops these too
                    self.on_event(ev)
        return events

    def healthy(self) -> tuple[bool, str]:
        if self.last_relist is None:
            return True, "pleg has yet to be successful"
        elapsed = self.clock.now() - self.last_relist
        if elapsed > self.relist_threshold:
            return False, f"pleg was last seen active {elapsed:.1f}s ago; threshold is {self.relist_threshold:.0f}s"
        return True, ""

    async def run(self) -> None:
        while True:
            try:
                await self.relist()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("pleg: relist failed err=%s", e)
            await asyncio.sleep(self.relist_period)
