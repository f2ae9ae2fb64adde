"""The storage interface of the apiserver (a kine-like revisioned key-value log).

Keys are (resource, namespace, name) with resource group-qualified ("pods", "deployments.apps");
namespace is "" for cluster-scoped objects. Every write gets the next global revision, which is
the object's resourceVersion. A watch subscribes first and then replays history newer than the
requested revision, so nothing falls between replay and live events; revisions older than the
compaction point raise Expired (the HTTP layer answers 410 Gone).

The default back end is SqliteStore (sqlite_store.py), MemoryStore (memory_store.py) keeps it in
memory for unit tests; an etcd back end implements this same protocol.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

Obj = dict[str, Any]


class StoreError(Exception):
    pass


class KeyExists(StoreError):
    pass


class KeyNotFound(StoreError):
    pass


class RevisionConflict(StoreError):
    """The object's current revision is not the one the writer based its change on."""

    def __init__(self, current: int) -> None:
        super().__init__(f"current revision is {current}")
        self.current = current


class Expired(StoreError):
    """The requested revision was compacted away."""

    def __init__(self, requested: int, compacted: int) -> None:
        super().__init__(f"too old resource version: {requested} ({compacted})")
        self.requested = requested
        self.compacted = compacted


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored object. `obj` carries metadata.resourceVersion == str(rev); never mutate it."""

    resource: str
    namespace: str
    name: str
    rev: int
    obj: Obj
    raw: bytes  # obj serialised as JSON, so lists and watches never re-encode


@dataclass(frozen=True, slots=True)
class Event:
    type: str  # ADDED | MODIFIED | DELETED
    rev: int
    resource: str
    namespace: str
    name: str
    obj: Obj  # the new object (for DELETED: the last state, with the delete's revision)
    raw: bytes
    prev: Obj | None  # the object before this write (None for ADDED)
    # The encoded watch line per event type, built once and shared by every watcher.
    lines: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    def line(self, type_: str) -> bytes:
        out = self.lines.get(type_)
        if out is None:
            out = self.lines[type_] = b'{"type":"' + type_.encode() + b'","object":' + self.raw + b"}\n"
        return out


class WatchStream:
    """Events of one resource in revision order, from a store subscription.

    `queue` yields Event objects, then None when the store closes the stream (shutdown or the
    subscriber fell too far behind; the client resumes from its last revision)."""

    def __init__(self, resource: str, after: int, on_close: Callable[[WatchStream], None],
                 max_backlog: int) -> None:
        self.resource = resource
        self.after = after
        self.queue: asyncio.Queue[Any] = asyncio.Queue()  # Event | None | watch markers
        self._on_close = on_close
        self._max_backlog = max_backlog
        self.closed = False
        # Direct delivery: when set, offer() hands each event to this callable synchronously
        # instead of queueing it (the HTTP layer writes it to the socket buffer at once, which
        # spares a task wake-up per watcher per event). on_end runs when the stream closes.
        self.direct: Callable[[Event], None] | None = None
        self.on_end: Callable[[], None] | None = None

    def offer(self, ev: Event) -> None:
        if self.closed or ev.rev <= self.after:
            return
        self.after = ev.rev
        if self.direct is not None:
            self.direct(ev)
            return
        if self.queue.qsize() >= self._max_backlog:
            self.close()
            return
        self.queue.put_nowait(ev)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)
            self._on_close(self)
            if self.on_end is not None:
                self.on_end()


class Store(Protocol):
    @property
    def revision(self) -> int:
        """The newest revision assigned."""

    @property
    def committed_revision(self) -> int:
        """Every event at or below this revision has been published to watchers."""

    @property
    def compacted_revision(self) -> int:
        """Revisions at or below this are gone from history."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def get(self, resource: str, namespace: str, name: str) -> Entry | None: ...
    async def list(self, resource: str, namespace: str | None) -> tuple[list[Entry], int]:
        """Current objects sorted by (namespace, name), and the revision they are current at."""

    async def create(self, resource: str, namespace: str, name: str, obj: Obj) -> Entry: ...
    async def update(self, resource: str, namespace: str, name: str, obj: Obj,
                     expected_rev: int) -> Entry: ...
    async def delete(self, resource: str, namespace: str, name: str,
                     expected_rev: int | None) -> Entry: ...
    def history(self, resource: str, after: int) -> builtins.list[Event]:
        """Events of resource newer than `after`, oldest first; raises Expired when compacted."""

    def watch(self, resource: str, after: int) -> WatchStream:
        """Subscribe, then replay events newer than `after`; raises Expired when compacted."""

    async def compact(self, revision: int) -> None: ...
    def count(self, resource: str) -> int: ...

    # Added with issue 15 (the server's /readyz and storage gauges already used them):
    failed: BaseException | None
    """Set when the engine can no longer write (then /readyz fails)."""

    def resources(self) -> builtins.list[str]:
        """The resources that hold objects (for the apiserver_storage_objects gauge)."""
