"""Keep an in-memory view of one stored resource current: list the store, then follow its watch
with direct delivery, so the view changes in the same loop turn as the write is published (before
any client watching the same resource hears of it). Upstream feeds the node graph and the RBAC
listers from shared informers; inside the apiserver the store itself is the source."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from nodeagent.api.store import Event, Store, WatchStream

log = logging.getLogger(__name__)

Obj = dict[str, Any]
OnEvent = Callable[[str, Obj, Obj | None], None]  # (ADDED|MODIFIED|DELETED, object, previous)


class Feed:
    def __init__(self, store: Store, resource: str, on_event: OnEvent) -> None:
        self.store = store
        self.resource = resource
        self.on_event = on_event
        self._stream: WatchStream | None = None

    async def start(self) -> None:
        entries, rev = await self.store.list(self.resource, None)
        for e in entries:
            self._call("ADDED", e.obj, None)
        stream = self.store.watch(self.resource, rev)
        while not stream.queue.empty():  # replayed history between the list and the subscription
            ev = stream.queue.get_nowait()
            if isinstance(ev, Event):
                self._deliver(ev)
        stream.direct = self._deliver
        self._stream = stream

    def _deliver(self, ev: Event) -> None:
        self._call(ev.type, ev.obj, ev.prev)

    def _call(self, type_: str, obj: Obj, prev: Obj | None) -> None:
        try:
            self.on_event(type_, obj, prev)
        except Exception:  # a bad object must not stop the view (it stays as it was for that key)
            log.exception("msg=\"auth feed handler failed\" resource=%s", self.resource)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
