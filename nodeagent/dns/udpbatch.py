"""The batched UDP listener: recvmmsg/sendmmsg through a small C helper (udpbatch.c) loaded with ctypes.

Why (issue 23, measured with py-spy and perf under dnsperf): with asyncio's datagram transport a
cached answer cost ~20 us of CPU, of which the two system calls per query (recvfrom, sendto) and the
event loop around them were ~75% and prometheus_client's locked counters most of the rest. Here one
recvmmsg takes up to BATCH queries, each cached answer is written over its own query in the receive
buffer (the ID is already in place: only the bytes after it are copied), and one sendmmsg returns
them all. Queries that miss the cache go through DnsHandler.handle_local as on the plain path.

The helper is compiled once per source into a cache directory (like the CNI shim); with no C compiler
DnsServer falls back to asyncio's transport (same answers, slower).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import hashlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nodeagent.dns.server import DnsHandler

log = logging.getLogger(__name__)

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "udpbatch.c")
SLOT = 4097            # one more than the largest query taken (server.MAX_QUERY) and answer sent (UDP_MAX)
BATCH = 64             # datagrams per system call
BATCHES_PER_WAKE = 8   # then back to the event loop, so informers, TCP and /metrics are not starved
ADDR_LEN = 28          # sizeof(struct sockaddr_in6), room for a sockaddr_in too


_lib: ctypes.CDLL | None = None
_tried = False


def _cache_dir() -> str:
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.environ.get("NODEAGENT_DNS_BUILD_DIR", os.path.join(repo, "build", "dns"))


def build(cache_dir: str | None = None) -> str | None:
    """Compile udpbatch.c into a shared object (cached by source hash); its path, or None when
    there is no compiler or the build failed."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    with open(SOURCE, "rb") as f:
        key = hashlib.sha256(f.read()).hexdigest()[:16]
    cache_dir = cache_dir or _cache_dir()
    out = os.path.join(cache_dir, f"udpbatch-{key}.so")
    if os.path.exists(out):
        return out
    try:
        os.makedirs(cache_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".udpbatch-", suffix=".so")
    except OSError as e:
        log.warning("cannot build the batched UDP helper dir=%s error=%s", cache_dir, e)
        return None
    os.close(fd)
    r = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-Wall", "-o", tmp, SOURCE], capture_output=True, text=True)
    if r.returncode != 0:
        log.warning("batched UDP helper build failed cc=%s err=%s", cc, r.stderr.strip()[-500:])
        os.unlink(tmp)
        return None
    os.replace(tmp, out)  # atomic: several processes may build at once
    return out


def load() -> ctypes.CDLL | None:
    """The helper library, built on first use; None (and a warning, once) if it cannot be had."""
    global _lib, _tried
    if not _tried:
        _tried = True
        path = build()
        if path is None:
            log.warning("no C compiler for the batched UDP helper: answering with one system call per query")
            return None
        lib = ctypes.CDLL(path)
        int_p = ctypes.POINTER(ctypes.c_int)
        lib.na_recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, int_p,
                                ctypes.c_void_p, int_p]
        lib.na_send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, int_p,
                                ctypes.c_void_p, int_p, int_p]
        lib.na_recv.restype = lib.na_send.restype = ctypes.c_int
        _lib = lib
    return _lib


def peer_address(raw: bytes, length: int) -> tuple[Any, ...]:
    """A struct sockaddr_in / sockaddr_in6 as the (host, port[, flowinfo, scope]) Python's socket takes."""
    family = int.from_bytes(raw[:2], sys.byteorder)  # sa_family is in host order, the port in network order
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET6 and length >= 28:
        return (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, int.from_bytes(raw[4:8], "big"),
                int.from_bytes(raw[24:28], sys.byteorder))
    return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)


class BatchUdpListener:
    """Answers the queries arriving on one bound, non-blocking UDP socket, a batch per system call."""

    def __init__(self, handler: DnsHandler, sock: socket.socket, lib: ctypes.CDLL, family: int) -> None:
        self.handler = handler
        self.sock = sock
        self.family = family
        self._lib = lib
        self._fd = sock.fileno()
        # c_char arrays: a slice is bytes (typeshed says list[bytes], hence Any)
        self._buf: Any = (ctypes.c_char * (SLOT * BATCH))()
        self._view = memoryview(self._buf).cast("B")
        self._lens = (ctypes.c_int * BATCH)()
        self._addrs: Any = (ctypes.c_char * (ADDR_LEN * BATCH))()
        self._addrlens = (ctypes.c_int * BATCH)()
        self._failed = ctypes.c_int()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._ready)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop = None
        for t in list(self._tasks):
            t.cancel()
        self.sock.close()

    def _ready(self) -> None:
        for _ in range(BATCHES_PER_WAKE):
            try:
                n = self._batch()
            except Exception:  # a bug must not stop the listener (the reader stays registered)
                log.exception("udp batch failed")
                return
            if n < BATCH:
                return  # the queue is drained; epoll calls again when more arrive

    def _batch(self) -> int:
        """Receive, answer and send one batch; the number of queries received."""
        lib, buf, view, lens = self._lib, self._buf, self._view, self._lens
        n = lib.na_recv(self._fd, buf, SLOT, BATCH, lens, self._addrs, self._addrlens)
        if n <= 0:
            if n not in (-errno.EAGAIN, -errno.EWOULDBLOCK):
                log.debug("udp receive error=%s", os.strerror(-n))
            return 0
        started = time.perf_counter()
        handler = self.handler
        get = handler.udp_cache.get
        hits: list[Any] = []
        hit = hits.append
        for i in range(n):
            off = i * SLOT
            length = lens[i]
            entry = get(buf[off + 2:off + length])
            if entry is not None:  # the common case: the cached answer after the query's own ID
                packed = entry[0]
                view[off + 2:off + 2 + len(packed)] = packed
                lens[i] = 2 + len(packed)
                hit(entry[1])
            else:
                lens[i] = self._slow(i, buf[off:off + length])
        lib.na_send(self._fd, buf, SLOT, n, lens, self._addrs, self._addrlens, ctypes.byref(self._failed))
        if self._failed.value:
            handler.metrics.drop("send_failed", self._failed.value)
        if hits:
            took = time.perf_counter() - started  # each query of the batch waited for the whole batch
            for series, count in Counter(hits).items():
                series.observe_many(count, took)
        return int(n)

    def _slow(self, i: int, data: bytes) -> int:
        """A query the cache did not have: its answer is written into slot i; the answer's length,
        or 0 when there is nothing to send now (dropped, or waiting for the upstream)."""
        from nodeagent.dns.server import Pending

        try:
            result = self.handler.handle_local(data, "udp", self.family)
        except Exception:  # a bug on one query must not stop the listener
            log.exception("query failed")
            return 0
        if result is None:
            return 0
        if isinstance(result, Pending):
            addr = peer_address(self._addrs[i * ADDR_LEN:(i + 1) * ADDR_LEN], self._addrlens[i])
            task = asyncio.get_running_loop().create_task(self._forward(result, addr))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return 0
        if len(result) > SLOT:
            return 0  # cannot happen (truncate() keeps UDP answers within UDP_MAX); never overflow
        off = i * SLOT
        self._view[off:off + len(result)] = result
        return len(result)

    async def _forward(self, pending: Any, addr: tuple[Any, ...]) -> None:
        try:
            answer = await self.handler.finish_pending(pending)
        except Exception:
            log.exception("forward failed peer=%s", addr)
            return
        if answer is None or self._loop is None:
            return
        try:
            self.sock.sendto(answer, addr)
        except OSError as e:  # a full send buffer or no route: UDP may lose, the client asks again
            self.handler.metrics.drop("send_failed")
            log.debug("udp send failed peer=%s error=%s", addr, e)
