"""Slot ranges of the nftables back end's `endpoint-slots` map.

Each policy chain that picks an endpoint (service-/local-<h>-...) owns a range of the map's integer
keys: its one rule is `dnat ip addr . port to numgen random mod N offset BASE map @endpoint-slots`
and the elements BASE..BASE+N-1 hold the endpoints as `ip . port` data. While N stays the same,
replacing an endpoint only swaps map elements (plain data: the kernel does not re-validate the
table, see nftables.py); the rule changes only when N does, and BASE only when N outgrows the
range. Ranges are powers of two (at least MIN_RANGE) so a freed one fits the next chain of its size.
"""

from __future__ import annotations

from collections import defaultdict

MIN_RANGE = 16


def _range_size(n: int) -> int:
    size = MIN_RANGE
    while size < n:
        size *= 2
    return size


class SlotAllocator:
    def __init__(self) -> None:
        self.ranges: dict[str, tuple[int, int]] = {}  # chain -> (base, size)
        self._free: dict[int, list[int]] = defaultdict(list)  # size -> free bases
        self._next = 0
        # ranges released during a sync become free only after its transaction: reused within the
        # same transaction, their old elements' deletes could come after the new owner's adds
        self._pending: list[tuple[int, int]] = []

    def base(self, chain: str, n: int) -> int:
        """The base of `chain`'s range, moved to a larger range when `n` outgrows it."""
        held = self.ranges.get(chain)
        if held is not None and n <= held[1]:
            return held[0]
        if held is not None:
            self._pending.append(held)
        size = _range_size(n)
        free = self._free.get(size)
        if free:
            start = free.pop()
        else:
            start, self._next = self._next, self._next + size
        self.ranges[chain] = (start, size)
        return start

    def release(self, chain: str) -> None:
        held = self.ranges.pop(chain, None)
        if held is not None:
            self._pending.append(held)

    def commit(self) -> None:
        """The transaction went through: released ranges may be handed out again."""
        for start, size in self._pending:
            self._free[size].append(start)
        self._pending.clear()
