"""ClusterIP and NodePort allocation for Services, as transactions.

Shape as upstream's: a range allocator (pkg/registry/core/service/ipallocator, portallocator)
turns addresses or ports into offsets of a bitmap (pkg/registry/core/service/allocator), and a
write allocates through a transaction (pkg/registry/core/service/storage/alloc.go): values are
reserved at once, what the old object held and the new one does not is released only when the
write is committed, and a write that fails, is a dry run or a no-op reverts what it reserved.

The bitmap is behind the `Bitmap` protocol. `MemoryBitmap` rebuilds its state from the stored
Services at start and keeps it in memory, which is right while one apiserver owns the storage. A
shared store (several apiservers over etcd) needs a second implementation that keeps the bitmap as
an object in the Store, as upstream's /registry/ranges/serviceips and /registry/ranges/
servicenodeports (a RangeAllocation: range + data), each change a compare-and-swap on that
object's revision, retried on conflict against the freshly read bitmap. Every method that may
touch such a store is async; `has` and `count` answer from the last state seen.

The first address of the service range is reserved for the `kubernetes` Service (upstream does the
same). One NodePortAllocator serves both the ports' nodePorts and a LoadBalancer/Local Service's
healthCheckNodePort, as upstream's single service-node-port-range allocator does.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable
from typing import Protocol


class AllocationError(ValueError):
    pass


class Bitmap(Protocol):
    """Offsets 0..size-1 of one range, each free or taken (upstream allocator.Interface).

    `allocate_next` hands out offsets at or above `offset` only (upstream's dynamic band, KEP-3070);
    the ones below it are given only when asked for by value."""

    size: int
    offset: int

    def has(self, i: int) -> bool: ...
    def count(self) -> int: ...
    async def allocate(self, i: int) -> bool:
        """Take offset i; False when it is taken already."""

    async def allocate_next(self) -> int | None:
        """Take a free offset of the dynamic band; None when the band is full."""

    async def release(self, i: int) -> None: ...


class MemoryBitmap:
    """The bitmap in this process's memory, searched from a random start so that freshly released
    values are not handed out again at once."""

    def __init__(self, size: int, offset: int = 0) -> None:
        self.size = size
        self.offset = min(offset, size)
        self._used: set[int] = set()
        self._dynamic_used = 0
        self._next = random.randrange(self.offset, size) if size > self.offset else 0

    def has(self, i: int) -> bool:
        return i in self._used

    def count(self) -> int:
        return len(self._used)

    def _take(self, i: int) -> None:
        self._used.add(i)
        if i >= self.offset:
            self._dynamic_used += 1

    async def allocate(self, i: int) -> bool:
        if i in self._used or not 0 <= i < self.size:
            return False
        self._take(i)
        return True

    async def allocate_next(self) -> int | None:
        band = self.size - self.offset
        if self._dynamic_used >= band:
            return None
        for _ in range(band):
            i = self._next
            self._next = self._next + 1 if self._next + 1 < self.size else self.offset
            if i not in self._used:
                self._take(i)
                return i
        return None

    async def release(self, i: int) -> None:
        if i in self._used:
            self._used.discard(i)
            if i >= self.offset:
                self._dynamic_used -= 1


class ClusterIPAllocator:
    """Addresses of the service CIDR. The network and broadcast addresses are never handed out; the
    bitmap covers the rest, and its first offset (the kubernetes Service's address) only by value."""

    def __init__(self, cidr: str, bitmap: Bitmap | None = None) -> None:
        self.net = ipaddress.ip_network(cidr, strict=False)
        self._base = int(self.net.network_address) + 1
        self.bitmap: Bitmap = bitmap or MemoryBitmap(max(0, self.net.num_addresses - 2), offset=1)

    @property
    def first(self) -> str:
        return str(self.net.network_address + 1)

    def contains(self, ip: str) -> bool:
        try:
            return ipaddress.ip_address(ip) in self.net
        except ValueError:
            return False

    def _offset(self, ip: str) -> int:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError as e:
            raise AllocationError(f"{ip!r} is not a valid IP address") from e
        if addr not in self.net:
            raise AllocationError(f"failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid "
                                  f"range. The range of valid IPs is {self.net}")
        off = int(addr) - self._base
        if not 0 <= off < self.bitmap.size:
            raise AllocationError(f"failed to allocate IP {ip}: not a usable address of {self.net}")
        return off

    def has(self, ip: str) -> bool:
        try:
            return self.bitmap.has(self._offset(ip))
        except AllocationError:
            return False

    async def allocate(self, ip: str) -> None:
        if not await self.bitmap.allocate(self._offset(ip)):
            raise AllocationError(f"failed to allocate IP {ip}: provided IP is already allocated")

    async def allocate_next(self) -> str:
        off = await self.bitmap.allocate_next()
        if off is None:
            raise AllocationError(f"range is full: no free ClusterIP in {self.net}")
        return str(ipaddress.ip_address(self._base + off))

    async def release(self, ip: str) -> None:
        if self.contains(ip):
            try:
                await self.bitmap.release(self._offset(ip))
            except AllocationError:
                pass

    def used(self) -> int:
        return self.bitmap.count()


class NodePortAllocator:
    def __init__(self, port_range: str, bitmap: Bitmap | None = None) -> None:
        lo, _, hi = port_range.partition("-")
        self.lo, self.hi = int(lo), int(hi or lo)
        if not 0 < self.lo <= self.hi < 65536:
            raise ValueError(f"invalid node port range {port_range!r}: want LOW-HIGH within 1-65535")
        self.bitmap: Bitmap = bitmap or MemoryBitmap(self.hi - self.lo + 1)

    def has(self, port: int) -> bool:
        return self.lo <= port <= self.hi and self.bitmap.has(port - self.lo)

    async def allocate(self, port: int) -> None:
        if not self.lo <= port <= self.hi:
            raise AllocationError(f"provided port is not in the valid range. The range of valid ports is "
                                  f"{self.lo}-{self.hi}")
        if not await self.bitmap.allocate(port - self.lo):
            raise AllocationError("provided port is already allocated")

    async def allocate_next(self) -> int:
        off = await self.bitmap.allocate_next()
        if off is None:
            raise AllocationError(f"range is full: no free NodePort in {self.lo}-{self.hi}")
        return self.lo + off

    async def release(self, port: int) -> None:
        if self.lo <= port <= self.hi:
            await self.bitmap.release(port - self.lo)

    def used(self) -> int:
        return self.bitmap.count()


class AllocationTxn:
    """The allocations of one Service write: reserve, then commit or revert (upstream alloc.go
    txnAllocClusterIPs/txnAllocNodePorts: Commit releases what the update freed, Revert gives back
    what it reserved)."""

    def __init__(self, ips: ClusterIPAllocator, ports: NodePortAllocator) -> None:
        self.ips = ips
        self.ports = ports
        self._new_ips: list[str] = []
        self._new_ports: list[int] = []
        self._freed_ips: set[str] = set()
        self._freed_ports: set[int] = set()

    async def ip(self, want: str | None, *, allow_reserved: bool = False) -> str:
        """Reserve `want`, or the next free address when it is empty."""
        if want:
            if want == self.ips.first and not allow_reserved:
                raise AllocationError(f"failed to allocate IP {want}: provided IP is already allocated")
            await self.ips.allocate(want)
        else:
            want = await self.ips.allocate_next()
        self._new_ips.append(want)
        return want

    async def port(self, want: int | None) -> int:
        """Reserve node port `want`, or the next free one when it is 0 or None."""
        if want:
            await self.ports.allocate(want)
        else:
            want = await self.ports.allocate_next()
        self._new_ports.append(want)
        return want

    def free_on_commit(self, ips: Iterable[str] = (), ports: Iterable[int] = ()) -> None:
        """Values the old object held and the new one does not: released once the write stands."""
        self._freed_ips |= {ip for ip in ips if ip != self.ips.first}
        self._freed_ports |= set(ports)

    async def commit(self) -> None:
        for ip in sorted(self._freed_ips):
            await self.ips.release(ip)
        for port in sorted(self._freed_ports):
            await self.ports.release(port)
        self._reset()

    async def revert(self) -> None:
        for ip in self._new_ips:
            await self.ips.release(ip)
        for port in self._new_ports:
            await self.ports.release(port)
        self._reset()

    def _reset(self) -> None:
        self._new_ips, self._new_ports = [], []
        self._freed_ips, self._freed_ports = set(), set()
