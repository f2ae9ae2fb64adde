"""One watch request: the events of a store subscription filtered by namespace, name and selectors,
with bookmarks and a timeout, handed out in batches or written straight to a sink."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nodeagent.api.registry.options import ListOptions, WatchEvent
from nodeagent.api.store import Entry, Event, Store, WatchStream
from nodeagent.machinery.kinds import Kind
from nodeagent.machinery.selectors import fields_match, labels_match

Obj = dict[str, Any]
_TICK = object()
_TIMEOUT = object()


def matches(obj: Obj, ns: str | None, name: str | None, opts: ListOptions) -> bool:
    meta = obj.get("metadata") or {}
    if ns is not None and meta.get("namespace") != ns:
        return False
    if name is not None and meta.get("name") != name:
        return False
    return labels_match(opts.label_selector, obj) and fields_match(opts.field_selector, obj)


def filter_event(ev: Event, ns: str | None, name: str | None, opts: ListOptions) -> WatchEvent | None:
    """Selector transitions (upstream watch cache filterWithAttrs): entering the selection is
    ADDED, leaving it is DELETED (with the new state), staying is the event itself."""
    now = matches(ev.obj, ns, name, opts)
    if ev.type == "DELETED":
        was = ev.prev is not None and matches(ev.prev, ns, name, opts)
        return WatchEvent("DELETED", ev.obj, ev.raw, ev.line("DELETED")) if (was or now) else None
    if ev.type == "ADDED":
        return WatchEvent("ADDED", ev.obj, ev.raw, ev.line("ADDED")) if now else None
    was = ev.prev is not None and matches(ev.prev, ns, name, opts)
    t = "MODIFIED" if now and was else "ADDED" if now else "DELETED" if was else None
    return WatchEvent(t, ev.obj, ev.raw, ev.line(t)) if t else None


class WatchSession:
    """The events of one watch request, handed out in batches: everything already queued goes out
    in one write, so a watcher that fell behind catches up with few syscalls."""

    def __init__(self, store: Store, kind: Kind, stream: WatchStream, initial: list[Entry], ns: str | None,
                 name: str | None, opts: ListOptions, after: int, initial_end_bookmark: bool, bookmarks: bool,
                 interval: float, timeout: float | None) -> None:
        self.kind = kind
        self._store = store
        self._stream = stream
        self._initial: list[Entry] | None = initial
        self._ns, self._name, self._opts = ns, name, opts
        self._after = after
        self._initial_end = initial_end_bookmark
        self._interval = interval
        self._done = False
        self._bookmarks = bookmarks
        self._loop = asyncio.get_running_loop()
        self._handles: list[asyncio.TimerHandle] = []
        self._sink: Callable[[list[WatchEvent]], bool] | None = None
        self._pending: list[WatchEvent] = []
        # Namespace-wide or cluster-wide without selectors: every event passes unchanged.
        self._match_all = name is None and not opts.label_selector and not opts.field_selector
        self._finished: asyncio.Future[None] = self._loop.create_future()
        if bookmarks:
            self._handles.append(self._loop.call_later(interval, self._tick))
        if timeout is not None:
            self._handles.append(self._loop.call_later(timeout, self._timeout))

    def _tick(self) -> None:
        self._handles[0] = self._loop.call_later(self._interval, self._tick)
        if self._sink is not None:
            self._flush()  # keep order: events already published go before the bookmark
            sink = self._sink
            if sink is None:  # the flush found the client gone
                return
            # Direct mode: every published event was delivered synchronously already.
            batch = [self._bookmark(self._store.committed_revision)] if self._bookmarks else []
            if not sink(batch):
                self.close()
            return
        # The committed revision when the marker is queued: every event at or below it is already
        # ahead of the marker in the queue, so a bookmark there skips nothing.
        self._stream.queue.put_nowait((_TICK, self._store.committed_revision))

    def _timeout(self) -> None:
        if self._sink is not None:
            self.close()
        else:
            self._stream.queue.put_nowait((_TIMEOUT, 0))

    def attach(self, sink: Callable[[list[WatchEvent]], bool], liveness_interval: float = 5.0) -> None:
        """Switch to direct delivery: flush what is pending through `sink` now, then call it for
        every event as it is published. `sink` returns False when the client is gone or too slow;
        the session then ends. `sink([])` is called periodically as a liveness check."""
        pending: list[WatchEvent] = []
        if self._initial is not None:
            pending += [WatchEvent("ADDED", e.obj, e.raw) for e in self._initial]
            self._initial = None
            if self._initial_end:
                pending.append(self._bookmark(self._after, initial_end=True))
        q = self._stream.queue
        ended = False
        while not q.empty():
            item = q.get_nowait()
            if item is None or (isinstance(item, tuple) and item[0] is _TIMEOUT):
                ended = True
            elif isinstance(item, tuple):
                pending.append(self._bookmark(item[1]))
            else:
                ev = filter_event(item, self._ns, self._name, self._opts)
                if ev is not None:
                    pending.append(ev)
        self._sink = sink
        if (pending and not sink(pending)) or ended or self._stream.closed:
            self.close()
            return
        if not self._bookmarks:
            self._interval = liveness_interval
            self._handles.insert(0, self._loop.call_later(liveness_interval, self._tick))
        self._stream.on_end = self.close
        self._stream.direct = self._deliver

    def _deliver(self, item: Event) -> None:
        # Events published together (one commit batch) leave in one write: when the server falls
        # behind, batches grow and the cost per event shrinks instead of piling up.
        if self._match_all and (self._ns is None or item.namespace == self._ns):
            ev: WatchEvent | None = WatchEvent(item.type, item.obj, item.raw, item.line(item.type))
        else:
            ev = filter_event(item, self._ns, self._name, self._opts)
        if ev is None:
            return
        self._pending.append(ev)
        if len(self._pending) == 1:
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        sink = self._sink
        if batch and sink is not None and not sink(batch):
            self.close()

    async def wait_finished(self) -> None:
        await asyncio.shield(self._finished)

    def _bookmark(self, rev: int, initial_end: bool = False) -> WatchEvent:
        meta: Obj = {"resourceVersion": str(max(rev, self._after))}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return WatchEvent("BOOKMARK", {"kind": self.kind.kind, "apiVersion": self.kind.api_version, "metadata": meta})

    async def next_batch(self, limit: int = 500) -> list[WatchEvent] | None:
        """The next events (at least one), or None when the watch is over."""
        if self._initial is not None:
            batch = [WatchEvent("ADDED", e.obj, e.raw) for e in self._initial]
            self._initial = None
            if self._initial_end:
                batch.append(self._bookmark(self._after, initial_end=True))
            if batch:
                return batch
        out: list[WatchEvent] = []
        q = self._stream.queue
        while not out:
            if self._done:
                return None
            item = await q.get()
            while True:
                if item is None or (isinstance(item, tuple) and item[0] is _TIMEOUT):
                    self._done = True
                    break
                if isinstance(item, tuple):
                    out.append(self._bookmark(item[1]))
                else:
                    ev = filter_event(item, self._ns, self._name, self._opts)
                    if ev is not None:
                        out.append(ev)
                if len(out) >= limit or q.empty():
                    break
                item = q.get_nowait()
        return out

    def close(self) -> None:
        # No write may follow: the HTTP layer ends the chunked response once this returns.
        self._sink = None
        self._pending = []
        for h in self._handles:
            h.cancel()
        self._stream.direct = None
        self._stream.on_end = None
        self._stream.close()
        if not self._finished.done():
            self._finished.set_result(None)
