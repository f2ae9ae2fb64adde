"""Time as the loops see it, injected so that unit tests drive lease expiry, eviction deadlines,
PLEG relists, probe periods and back-off with a fake clock instead of sleeping
(ARCHITECTURE.md practice 11). A shared leaf module, like nodeagent.netns."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (wall clock: compared with timestamps in objects)."""
        ...


class RealClock:
    def now(self) -> float:
        return time.time()


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
