"""A work queue as in client-go: a key is queued at most once, never handed to two workers at once,
and re-queued after done() if it was added while being processed. Per-key exponential backoff
for failures (add_rate_limited / forget) and delayed adds (add_after)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable


class ShutDown(Exception):
    pass


class WorkQueue:
    def __init__(self, base_delay: float = 0.005, max_delay: float = 300.0, name: str = "") -> None:
        self.name = name
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._queue: deque[Hashable] = deque()
        self._dirty: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._failures: dict[Hashable, int] = {}
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._wakeup = asyncio.Event()  # set whenever a key becomes available (or on shutdown)
        self._shutdown = False
        self.adds_total = 0

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: Hashable) -> None:
        if self._shutdown or key in self._dirty:
            return
        self.adds_total += 1
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._notify()

    def add_after(self, key: Hashable, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        old = self._timers.get(key)
        due = loop.time() + delay
        if old is not None and old.when() <= due:
            return  # an earlier wake-up is already scheduled
        if old is not None:
            old.cancel()

        def fire() -> None:
            self._timers.pop(key, None)
            self.add(key)

        self._timers[key] = loop.call_at(due, fire)

    def add_rate_limited(self, key: Hashable) -> None:
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        self.add_after(key, min(self.base_delay * 2 ** n, self.max_delay))

    def forget(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    def num_requeues(self, key: Hashable) -> int:
        return self._failures.get(key, 0)

    async def get(self) -> Hashable:
        while not self._queue:
            if self._shutdown:
                raise ShutDown()
            self._wakeup.clear()
            await self._wakeup.wait()
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: Hashable) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._notify()

    def shutdown(self) -> None:
        self._shutdown = True
        for t in self._timers.values():
            t.cancel()
        self._timers.clear()
        self._notify()

    def _notify(self) -> None:
        self._wakeup.set()
