"""MemoryStore: the Store protocol in memory, and the in-memory half every engine shares.

It holds the newest object per key, the per-resource history back to the compaction point, and the
watch subscriptions; a write is published to watchers as soon as it is made. SqliteStore extends it
with durability (a write is published only after its COMMIT). On its own it is the store behind the
real registry in unit tests (tests/helpers/fake_client.py), so tests run against the same object
rules as the server (ARCHITECTURE.md practice 16), with nothing on disk.
"""

from __future__ import annotations

import builtins
import json
from collections import deque
from typing import Any

from nodeagent.api.store import (
    Entry,
    Event,
    Expired,
    KeyExists,
    KeyNotFound,
    Obj,
    RevisionConflict,
    WatchStream,
)


def encode(obj: Obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class MemoryStore:
    def __init__(self, *, max_watch_backlog: int = 100000) -> None:
        self.max_watch_backlog = max_watch_backlog
        self._objs: dict[str, dict[str, dict[str, Entry]]] = {}
        self._history: dict[str, deque[Event]] = {}
        self._watchers: dict[str, set[WatchStream]] = {}
        self._rev = 0
        self._published = 0
        self._compacted = 0
        self.failed: BaseException | None = None

    # --- lifecycle -------------------------------------------------------------------------
    @property
    def revision(self) -> int:
        return self._rev

    @property
    def committed_revision(self) -> int:
        """Every event at or below this revision has been published to watchers."""
        return self._published

    @property
    def compacted_revision(self) -> int:
        return self._compacted

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self.close_watches()

    def close_watches(self) -> None:
        for streams in list(self._watchers.values()):
            for s in list(streams):
                s.close()

    # --- memory ----------------------------------------------------------------------------
    def _put(self, e: Entry) -> None:
        self._objs.setdefault(e.resource, {}).setdefault(e.namespace, {})[e.name] = e

    def _remove(self, resource: str, ns: str, name: str) -> None:
        by_ns = self._objs.get(resource, {})
        names = by_ns.get(ns)
        if names is not None:
            names.pop(name, None)
            if not names:
                del by_ns[ns]

    def _current(self, resource: str, ns: str, name: str) -> Entry | None:
        return self._objs.get(resource, {}).get(ns, {}).get(name)

    def count(self, resource: str) -> int:
        return sum(len(v) for v in self._objs.get(resource, {}).values())

    def resources(self) -> list[str]:
        return list(self._objs)

    # --- reads -----------------------------------------------------------------------------
    async def get(self, resource: str, namespace: str, name: str) -> Entry | None:
        return self._current(resource, namespace, name)

    async def list(self, resource: str, namespace: str | None) -> tuple[list[Entry], int]:
        return self.list_now(resource, namespace)

    def list_now(self, resource: str, namespace: str | None) -> tuple[builtins.list[Entry], int]:
        by_ns = self._objs.get(resource, {})
        if namespace is not None:
            names = by_ns.get(namespace, {})
            return [names[n] for n in sorted(names)], self._rev
        out: builtins.list[Entry] = []
        for ns in sorted(by_ns):
            names = by_ns[ns]
            out.extend(names[n] for n in sorted(names))
        return out, self._rev

    def history(self, resource: str, after: int) -> builtins.list[Event]:
        if after < self._compacted:
            raise Expired(after, self._compacted)
        hist = self._history.get(resource)
        if not hist:
            return []
        if hist[0].rev > after:
            return list(hist)
        # Binary search on the deque (revisions ascend).
        lo, hi = 0, len(hist)
        while lo < hi:
            mid = (lo + hi) // 2
            if hist[mid].rev <= after:
                lo = mid + 1
            else:
                hi = mid
        return [hist[i] for i in range(lo, len(hist))]

    def watch(self, resource: str, after: int) -> WatchStream:
        events = self.history(resource, after)  # raises Expired before subscribing
        stream = WatchStream(resource, after, self._unsubscribe, self.max_watch_backlog)
        self._watchers.setdefault(resource, set()).add(stream)
        for ev in events:
            stream.offer(ev)
        return stream

    def _unsubscribe(self, stream: WatchStream) -> None:
        self._watchers.get(stream.resource, set()).discard(stream)

    # --- writes ----------------------------------------------------------------------------
    def _next(self, obj: Obj) -> tuple[int, bytes]:
        if self.failed is not None:
            raise RuntimeError(f"storage failed: {self.failed}")
        self._rev += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._rev)
        return self._rev, encode(obj)

    async def _commit(self, ev: Event, prev_raw: bytes | None) -> None:
        """Make the write durable, then publish it. In memory there is nothing to wait for."""
        self._publish(ev)

    async def create(self, resource: str, namespace: str, name: str, obj: Obj) -> Entry:
        if self._current(resource, namespace, name) is not None:
            raise KeyExists(f"{resource}/{namespace}/{name}")
        rev, raw = self._next(obj)
        e = Entry(resource, namespace, name, rev, obj, raw)
        self._put(e)
        await self._commit(Event("ADDED", rev, resource, namespace, name, obj, raw, None), None)
        return e

    async def update(self, resource: str, namespace: str, name: str, obj: Obj,
                     expected_rev: int) -> Entry:
        cur = self._current(resource, namespace, name)
        if cur is None:
            raise KeyNotFound(f"{resource}/{namespace}/{name}")
        if cur.rev != expected_rev:
            raise RevisionConflict(cur.rev)
        rev, raw = self._next(obj)
        e = Entry(resource, namespace, name, rev, obj, raw)
        self._put(e)
        await self._commit(Event("MODIFIED", rev, resource, namespace, name, obj, raw, cur.obj), cur.raw)
        return e

    async def delete(self, resource: str, namespace: str, name: str,
                     expected_rev: int | None) -> Entry:
        cur = self._current(resource, namespace, name)
        if cur is None:
            raise KeyNotFound(f"{resource}/{namespace}/{name}")
        if expected_rev is not None and cur.rev != expected_rev:
            raise RevisionConflict(cur.rev)
        # The DELETED event carries the last state with the delete's revision, as upstream.
        obj = json.loads(cur.raw)
        rev, raw = self._next(obj)
        self._remove(resource, namespace, name)
        e = Entry(resource, namespace, name, rev, obj, raw)
        await self._commit(Event("DELETED", rev, resource, namespace, name, obj, raw, cur.obj), cur.raw)
        return e

    def _publish(self, ev: Event) -> None:
        self._published = max(self._published, ev.rev)
        if ev.rev > self._compacted:
            self._history.setdefault(ev.resource, deque()).append(ev)
        for stream in list(self._watchers.get(ev.resource, ())):
            stream.offer(ev)

    # --- compaction ------------------------------------------------------------------------
    def _compact_memory(self, revision: int) -> int | None:
        """Forget history at or below `revision`; the revision compacted to, or None if nothing was."""
        revision = min(revision, self._rev)
        if revision <= self._compacted:
            return None
        self._compacted = revision
        for hist in self._history.values():
            while hist and hist[0].rev <= revision:
                hist.popleft()
        return revision

    async def compact(self, revision: int) -> None:
        self._compact_memory(revision)

    @property
    def watcher_count(self) -> int:
        return sum(len(s) for s in self._watchers.values())

    def snapshot_info(self) -> dict[str, Any]:
        return {"revision": self._rev, "compacted": self._compacted, "watchers": self.watcher_count}
