"""Address allocation over range sets, the host-local way (plugins/ipam/host-local/backend/allocator).

Each range set yields one address. An attachment that already holds an address in the set gets it
back (so a retried ADD after a crash does not leak a second one). Otherwise the walk starts just
after last_reserved_ip, wraps around the set, skips each range's gateway, and takes the first
address whose reservation file can be created exclusively.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from nodeagent.cni.config import IPAddress, IPAMConfig, Range
from nodeagent.cni.errors import NO_ADDRESSES, CNIError
from nodeagent.cni.ipam.store import Reservation, Store


@dataclass(frozen=True)
class Allocation:
    ip: IPAddress
    range: Range


def _find(rs: Sequence[Range], ip: IPAddress | None) -> int | None:
    if ip is None:
        return None
    for i, r in enumerate(rs):
        if ip in r:
            return i
    return None


def _walk(rs: Sequence[Range], last: IPAddress | None) -> Iterator[tuple[IPAddress, Range]]:
    """Every address of the set once, starting just after `last` (else at the first range's
    start) and wrapping around to the addresses before it; gateways are skipped."""
    idx = _find(rs, last)
    if idx is None or last is None:
        first, start = 0, rs[0].range_start
    else:
        first, start = idx, last + 1  # type: ignore[assignment]
    for k in range(len(rs) + 1):
        r = rs[(first + k) % len(rs)]
        lo = start if k == 0 else r.range_start
        hi = r.range_end if k < len(rs) else start - 1  # type: ignore[operator]
        ip = lo
        while ip <= hi:  # type: ignore[operator]
            if ip != r.gateway:
                yield ip, r
            ip = ip + 1  # type: ignore[assignment]


class Allocator:
    def __init__(self, config: IPAMConfig, store: Store) -> None:
        self.config = config
        self.store = store

    def allocate(self, container_id: str, ifname: str,
                 is_stale: Callable[[Reservation], bool] | None = None) -> list[Allocation]:
        """One address per range set; all-or-nothing. When a set is full, reservations for which
        is_stale() holds (their pod vanished) are released and the set is walked once more."""
        with self.store.lock():
            return self._allocate_locked(container_id, ifname, is_stale)

    def _reclaim_locked(self, is_stale: Callable[[Reservation], bool]) -> int:
        stale = [r for r in self.store.reservations() if is_stale(r)]
        for r in stale:
            self.store.release(r.ip)
        return len(stale)

    def _allocate_locked(self, container_id: str, ifname: str,
                         is_stale: Callable[[Reservation], bool] | None) -> list[Allocation]:
        held = self.store.get_by_id(container_id, ifname)
        out: list[Allocation] = []
        try:
            for idx, rs in enumerate(self.config.range_sets):
                existing = next(((ip, rs[i]) for ip in held if (i := _find(rs, ip)) is not None), None)
                if existing:
                    out.append(Allocation(*existing))
                    continue
                got = self._reserve_one(rs, str(idx), container_id, ifname)
                if got is None and is_stale is not None and self._reclaim_locked(is_stale) > 0:
                    got = self._reserve_one(rs, str(idx), container_id, ifname)
                if got is None:
                    subnets = ", ".join(str(r.subnet) for r in rs)
                    raise CNIError(NO_ADDRESSES, "no IP addresses available in range set",
                                   f"every address of {subnets} is reserved (network store {self.config.data_dir})")
                out.append(got)
        except BaseException:
            for a in out:
                if a.ip not in held:
                    self.store.release(a.ip)
            raise
        return out

    def _reserve_one(self, rs: Sequence[Range], range_id: str, cid: str, ifname: str) -> Allocation | None:
        for ip, r in _walk(rs, self.store.last_reserved_ip(range_id)):
            if self.store.reserve(cid, ifname, ip, range_id):
                return Allocation(ip, r)
        return None

    def release(self, container_id: str, ifname: str) -> list[IPAddress]:
        with self.store.lock():
            return self.store.release_by_id(container_id, ifname)

    def release_unless(self, keep: Callable[[Reservation], bool]) -> list[Reservation]:
        """Release every reservation for which keep() is false (GC and recovery)."""
        freed = []
        with self.store.lock():
            for r in self.store.reservations():
                if not keep(r):
                    self.store.release(r.ip)
                    freed.append(r)
        return freed
