"""Where each policy chain's endpoints live in the nftables back end's `endpoint-slots` maps.

Each policy chain that picks an endpoint (service-/local-<h>-...) owns one slot: a shard (which of
the table's `endpoint-slots-<proto>-<shard>` maps) and a SPAN-wide range of that map's integer
keys. Its one rule never changes while the chain lives:

    dnat ip addr . port to numgen random mod SPAN offset BASE map @endpoint-slots-<proto>-<shard>

and the map (an interval map) splits BASE..BASE+SPAN-1 into N nearly equal intervals whose data
are the N endpoints (`ip . port`). So any endpoint change, including a change in their number, is
map data only: the kernel does not re-validate the table (see nftables.py), where rewriting the
rule would. With SPAN = 2^16 the intervals differ by at most one key: each endpoint's share is
within N/65536 of 1/N (upstream's iptables probabilities are rounded to 10 decimals; the
statistic match itself to 2^-31).
"""

from __future__ import annotations

SPAN = 1 << 16  # keys per chain: numgen's 32-bit result holds 2^16 chains per shard
SHARDS = 256  # maps per protocol: why several, see nftables.py (SLOT_SHARDS)


def intervals(base: int, n: int) -> list[tuple[int, int]]:
    """`n` contiguous inclusive key ranges covering base..base+SPAN-1, sizes differing by at most one."""
    return [(base + i * SPAN // n, base + (i + 1) * SPAN // n - 1) for i in range(n)]


class SlotAllocator:
    def __init__(self) -> None:
        self.slots: dict[str, int] = {}  # chain -> slot number
        self._free: list[int] = []
        self._next = 0
        # slots released during a sync become free only after its transaction: reused within the
        # same transaction, their old elements' deletes could come after the new owner's adds
        self._pending: list[int] = []

    def slot(self, chain: str) -> tuple[int, int]:
        """(shard, base) of `chain`'s key range; stable for as long as the chain holds it."""
        n = self.slots.get(chain)
        if n is None:
            if self._free:
                n = self._free.pop()
            else:
                n, self._next = self._next, self._next + 1
                # a shard's last range would end at 2^32 - 1, which an interval cannot close: unused
                if n >= SHARDS * ((1 << 32) // SPAN - 1):
                    raise RuntimeError(f"nftables: more than {n} policy chains; the endpoint-slots maps are full")
            self.slots[chain] = n
        return n % SHARDS, (n // SHARDS) * SPAN

    def release(self, chain: str) -> None:
        n = self.slots.pop(chain, None)
        if n is not None:
            self._pending.append(n)

    def commit(self) -> None:
        """The transaction went through: released slots may be handed out again."""
        # lowest first, so a busy table keeps its keys (and shards) dense
        self._free = sorted(self._free + self._pending, reverse=True)
        self._pending.clear()
