"""Where reservations live: one file per address, as the reference host-local plugin lays them out.

DIR/<network>/<ip> holds "<containerID>\\r\\n<ifname>" and is created with O_EXCL, so two writers
can never own one address; DIR/<network>/last_reserved_ip.<rangeset index> remembers where the last
allocation ended; DIR/<network>/lock is flock'ed around every read-modify-write
(plugins/ipam/host-local/backend/disk). A store written by the Go host-local reads back here and
the other way round.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from nodeagent.cni.config import IPAddress

LAST_IP_PREFIX = "last_reserved_ip."
LINE_BREAK = "\r\n"
LOCK_FILE = "lock"


@dataclass(frozen=True)
class Reservation:
    ip: IPAddress
    container_id: str
    ifname: str
    mtime: float


class Store(Protocol):
    def lock(self) -> contextlib.AbstractContextManager[None]: ...
    def reserve(self, container_id: str, ifname: str, ip: IPAddress, range_id: str) -> bool: ...
    def last_reserved_ip(self, range_id: str) -> IPAddress | None: ...
    def get_by_id(self, container_id: str, ifname: str) -> list[IPAddress]: ...
    def release_by_id(self, container_id: str, ifname: str) -> list[IPAddress]: ...
    def release(self, ip: IPAddress) -> None: ...
    def reservations(self, with_mtime: bool = True) -> list[Reservation]: ...


def _parse_ip(name: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


class DiskStore:
    """The host-local on-disk layout under data_dir/network."""

    def __init__(self, data_dir: str, network: str) -> None:
        self.dir = os.path.join(data_dir, network)
        os.makedirs(self.dir, mode=0o755, exist_ok=True)
        # flock excludes other processes; this lock excludes the daemon's other worker threads
        # cheaply (a flock on a second open file description would too, but costs an open).
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with self._thread_lock:
            fd = os.open(os.path.join(self.dir, LOCK_FILE), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing drops the flock

    def reserve(self, container_id: str, ifname: str, ip: IPAddress, range_id: str) -> bool:
        path = os.path.join(self.dir, str(ip))
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, (container_id.strip() + LINE_BREAK + ifname).encode())
        except OSError:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        self._write_last(range_id, ip)
        return True

    def _write_last(self, range_id: str, ip: IPAddress) -> None:
        path = os.path.join(self.dir, LAST_IP_PREFIX + range_id)
        tmp = f"{path}.tmp{os.getpid()}.{threading.get_ident()}"
        with open(tmp, "w") as f:
            f.write(str(ip))
        os.replace(tmp, path)

    def last_reserved_ip(self, range_id: str) -> IPAddress | None:
        try:
            with open(os.path.join(self.dir, LAST_IP_PREFIX + range_id)) as f:
                return _parse_ip(f.read().strip())
        except FileNotFoundError:
            return None

    def reservations(self, with_mtime: bool = True) -> list[Reservation]:
        """Every reservation file. This scan is the cost of host-local's layout (it has no index by
        container), so it avoids open()'s Python file objects and stats only when asked."""
        out = []
        with os.scandir(self.dir) as it:
            for entry in it:
                ip = _parse_ip(entry.name)
                if ip is None:
                    continue
                try:
                    fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
                except (FileNotFoundError, IsADirectoryError):
                    continue
                try:
                    data = os.read(fd, 4096).decode(errors="replace").strip()
                    mtime = os.fstat(fd).st_mtime if with_mtime else 0.0
                finally:
                    os.close(fd)
                # Old host-local files hold the container ID alone (no ifname).
                cid, _, ifname = data.partition(LINE_BREAK)
                out.append(Reservation(ip, cid.strip(), ifname.strip(), mtime))
        return out

    def _matching(self, container_id: str, ifname: str) -> list[Reservation]:
        cid = container_id.strip()
        return [r for r in self.reservations(with_mtime=False) if r.container_id == cid and r.ifname in (ifname, "")]

    def get_by_id(self, container_id: str, ifname: str) -> list[IPAddress]:
        return [r.ip for r in self._matching(container_id, ifname)]

    def release_by_id(self, container_id: str, ifname: str) -> list[IPAddress]:
        released = []
        for r in self._matching(container_id, ifname):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.dir, str(r.ip)))
                released.append(r.ip)
        return released

    def release(self, ip: IPAddress) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.dir, str(ip)))


class MemoryStore:
    """An in-memory Store for tests of the allocator (host-local backend/testing/fake_store.go)."""

    def __init__(self) -> None:
        self.ips: dict[IPAddress, tuple[str, str]] = {}
        self.last: dict[str, IPAddress] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with self._lock:
            yield

    def reserve(self, container_id: str, ifname: str, ip: IPAddress, range_id: str) -> bool:
        if ip in self.ips:
            return False
        self.ips[ip] = (container_id.strip(), ifname)
        self.last[range_id] = ip
        return True

    def last_reserved_ip(self, range_id: str) -> IPAddress | None:
        return self.last.get(range_id)

    def get_by_id(self, container_id: str, ifname: str) -> list[IPAddress]:
        return [ip for ip, owner in self.ips.items() if owner == (container_id.strip(), ifname)]

    def release_by_id(self, container_id: str, ifname: str) -> list[IPAddress]:
        ips = self.get_by_id(container_id, ifname)
        for ip in ips:
            del self.ips[ip]
        return ips

    def release(self, ip: IPAddress) -> None:
        self.ips.pop(ip, None)

    def reservations(self, with_mtime: bool = True) -> list[Reservation]:
        return [Reservation(ip, cid, ifn, time.time()) for ip, (cid, ifn) in self.ips.items()]
