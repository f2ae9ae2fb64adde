"""Time as the loops see it, injected so that unit tests drive lease expiry, eviction deadlines,
PLEG relists, probe periods and back-off with a fake clock instead of sleeping
(ARCHITECTURE.md practice 11). A shared leaf module, like nodeagent.netns."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (wall clock: compared with timestamps in objects)."""
        ...


class SleepingClock(Clock, Protocol):
    """A clock that periodic loops also wait on."""

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        """Move time on and wake every sleeper whose deadline has come."""
        self.t += seconds
        due = [s for s in self._sleepers if s[0] <= self.t]
        self._sleepers = [s for s in self._sleepers if s[0] > self.t]
        for _, fut in due:
            if not fut.done():
                fut.set_result(None)

    async def sleep(self, seconds: float) -> None:
        """Return once advance() has moved time `seconds` on (at once for seconds <= 0)."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.t + seconds, fut))
        await fut

    @property
    def sleepers(self) -> int:
        """How many sleep() calls are waiting (tests wait for a loop to reach its sleep)."""
        return sum(1 for _, f in self._sleepers if not f.done())
