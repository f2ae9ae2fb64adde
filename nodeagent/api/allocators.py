"""ClusterIP and NodePort allocators for Services.

State is derived from the stored Services at start (no separate bitmap to leak or drift), then kept
in memory: allocate on create, release on delete or when an update drops the value. The first
address of the range is reserved for the `kubernetes` Service (upstream does the same). One
NodePortAllocator serves both the ports' nodePorts and a LoadBalancer/Local Service's
healthCheckNodePort, as upstream's single service-node-port-range allocator does.
"""

from __future__ import annotations

import ipaddress
import random


class AllocationError(ValueError):
    pass


class ClusterIPAllocator:
    def __init__(self, cidr: str) -> None:
        self.net = ipaddress.ip_network(cidr, strict=False)
        self._used: set[int] = set()
        self._base = int(self.net.network_address)
        # Network and broadcast are never handed out; offset 1 is the kubernetes Service.
        self._size = self.net.num_addresses
        self._next = random.randrange(2, max(3, self._size - 1))

    @property
    def first(self) -> str:
        return str(self.net.network_address + 1)

    def contains(self, ip: str) -> bool:
        try:
            return ipaddress.ip_address(ip) in self.net
        except ValueError:
            return False

    def allocate_specific(self, ip: str) -> None:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError as e:
            raise AllocationError(f"{ip!r} is not a valid IP address") from e
        if addr not in self.net:
            raise AllocationError(f"failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid "
                                  f"range. The range of valid IPs is {self.net}")
        off = int(addr) - self._base
        if off in (0, self._size - 1):
            raise AllocationError(f"failed to allocate IP {ip}: not a usable address of {self.net}")
        if off in self._used:
            raise AllocationError(f"failed to allocate IP {ip}: provided IP is already allocated")
        self._used.add(off)

    def allocate_next(self) -> str:
        usable = self._size - 3  # minus network, broadcast and the reserved first address
        if len(self._used) >= usable + (1 if 1 in self._used else 0):
            raise AllocationError(f"range is full: no free ClusterIP in {self.net}")
        for _ in range(self._size):
            off = self._next
            self._next += 1
            if self._next >= self._size - 1:
                self._next = 2
            if off not in self._used:
                self._used.add(off)
                return str(ipaddress.ip_address(self._base + off))
        raise AllocationError(f"range is full: no free ClusterIP in {self.net}")

    def release(self, ip: str) -> None:
        if self.contains(ip):
            self._used.discard(int(ipaddress.ip_address(ip)) - self._base)

    def used(self) -> int:
        return len(self._used)


class NodePortAllocator:
    def __init__(self, port_range: str) -> None:
        lo, _, hi = port_range.partition("-")
        self.lo, self.hi = int(lo), int(hi or lo)
        if not 0 < self.lo <= self.hi < 65536:
            raise ValueError(f"invalid node port range {port_range!r}: want LOW-HIGH within 1-65535")
        self._used: set[int] = set()
        self._next = random.randint(self.lo, self.hi)

    def allocate_specific(self, port: int) -> None:
        if not self.lo <= port <= self.hi:
            raise AllocationError(f"provided port is not in the valid range. The range of valid ports is "
                                  f"{self.lo}-{self.hi}")
        if port in self._used:
            raise AllocationError("provided port is already allocated")
        self._used.add(port)

    def allocate_next(self) -> int:
        span = self.hi - self.lo + 1
        if len(self._used) >= span:
            raise AllocationError(f"range is full: no free NodePort in {self.lo}-{self.hi}")
        for _ in range(span):
            p = self._next
            self._next = self.lo if p >= self.hi else p + 1
            if p not in self._used:
                self._used.add(p)
                return p
        raise AllocationError(f"range is full: no free NodePort in {self.lo}-{self.hi}")

    def release(self, port: int) -> None:
        self._used.discard(port)

    def used(self) -> int:
        return len(self._used)
