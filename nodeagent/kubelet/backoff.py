"""Per-container restart back-off (CrashLoopBackOff): 10 s doubling to 5 min, as upstream.

Upstream keeps one flowcontrol.Backoff keyed by pod/container; an entry untouched for twice the
maximum is forgotten, so a container that stayed up for 10 minutes restarts at 10 s again.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodeagent.clock import Clock


@dataclass
class _Entry:
    delay: float
    last_update: float


class Backoff:
    def __init__(self, clock: Clock, initial: float = 10.0, maximum: float = 300.0) -> None:
        self.clock = clock
        self.initial = initial
        self.maximum = maximum
        self._entries: dict[str, _Entry] = {}

    def next(self, key: str, event_time: float) -> float:
        """Record a restart of `key` whose container finished at `event_time`; return the new delay."""
        e = self._entries.get(key)
        if e is None or event_time - e.last_update > 2 * self.maximum:
            e = _Entry(self.initial, event_time)
        else:
            e = _Entry(min(e.delay * 2, self.maximum), event_time)
        self._entries[key] = e
        return e.delay

    def remaining(self, key: str, event_time: float) -> float:
        """Seconds left before `key` (finished at `event_time`) may restart; 0 if it may now."""
        e = self._entries.get(key)
        if e is None:
            return 0.0
        left = event_time + e.delay - self.clock.now()
        return left if left > 0 else 0.0

    def get(self, key: str) -> float:
        e = self._entries.get(key)
        return e.delay if e else 0.0

    def forget(self, key: str) -> None:
        """Start `key` afresh (upstream keys the back-off by the container's hash, so a container
        restarted for a new definition has no back-off history)."""
        self._entries.pop(key, None)

    def forget_prefix(self, prefix: str) -> None:
        for k in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[k]
