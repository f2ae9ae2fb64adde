"""The DNS wire protocol: UDP and TCP listeners on asyncio, query checks, answers, truncation.

One query's life: checks on the raw bytes (length; QR set means someone sent us a response, which is
dropped so two servers cannot loop), parse with dnslib (a parse error is FORMERR, built from the raw
header alone), then the Resolver answers names in the cluster domain; other names go to the upstream
when one is configured, else REFUSED (CoreDNS's answer for a zone it does not serve). Over UDP an
answer larger than the client's size (512 bytes, or its EDNS0 size, RFC 6891 section 6.2.3) keeps the
records that fit and sets TC so the client retries over TCP (RFC 1035 section 4.2.1, RFC 7766).

Local answers are cached as packed bytes keyed by the query's bytes after its ID, so a repeated query
costs one dict lookup and the answer differs from the cached bytes only in its ID. Each cached answer
is kept until a change touches what its resolution read (index.py's Deps): a watch event for one
Service drops the answers about that Service (and the PTR answers), not the whole cache. Over UDP the
batched listener (udpbatch.py) looks cached answers up itself and sends them without entering
handle_local.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any

from dnslib import EDNS0, QTYPE, RCODE, RR, DNSHeader, DNSRecord

from nodeagent.dns import udpbatch
from nodeagent.dns.index import ClusterIndex, Dep
from nodeagent.dns.metrics import Metrics, Series
from nodeagent.dns.resolver import Answer, Resolver
from nodeagent.dns.udpbatch import BatchUdpListener
from nodeagent.dns.upstream import Upstream, UpstreamError

log = logging.getLogger(__name__)

HEADER_LEN = 12
MAX_QUERY = 4096          # one question plus EDNS options fits in far less; larger is abuse
UDP_MIN = 512             # RFC 1035 section 2.3.4
UDP_MAX = 4096            # we never send larger UDP answers, whatever the client advertises
EDNS_SIZE = 1232          # what we advertise (DNS flag day 2020)
CACHE_MAX = 10000
TCP_IDLE_TIMEOUT = 10.0   # CoreDNS's read timeout for TCP
TCP_MAX_CONNECTIONS = 256
MAX_PENDING_FORWARDS = 1024
OPCODE_QUERY = 0
RCODE_BADVERS = 16        # extended rcode (RFC 6891 section 9)
QCLASS_IN, QCLASS_ANY = 1, 255

CacheEntry = tuple[bytes, Series]  # the packed answer after its ID, and the Series it counts in


def error_from_header(data: bytes, rcode: int) -> bytes:
    """A bare answer (no sections) to a query we cannot parse: its ID, opcode and RD echoed."""
    flags1 = 0x80 | (data[2] & 0x79)  # QR, opcode, RD
    return data[:2] + bytes([flags1, rcode & 0x0F]) + b"\x00" * 8


@dataclass
class Pending:
    """A parsed query whose answer needs the upstream."""

    query: DNSRecord
    data: bytes
    proto: str
    family: int
    qtype: str
    started: float
    udp_size: int
    answer: Answer


class DnsHandler:
    def __init__(self, resolver: Resolver, metrics: Metrics, upstream: Upstream | None = None,
                 cache_max: int = CACHE_MAX) -> None:
        self.resolver = resolver
        self.index: ClusterIndex = resolver.index
        self.metrics = metrics
        self.upstream = upstream
        self.cache_max = cache_max
        # UDP and TCP answers apart: they differ when UDP truncates
        self.udp_cache: dict[bytes, CacheEntry] = {}
        self.tcp_cache: dict[bytes, CacheEntry] = {}
        self._dependents: dict[Dep, set[tuple[bool, bytes]]] = {}  # Dep -> (tcp, key) of cached answers
        self._pending = 0
        metrics.cache_size = lambda: len(self.udp_cache) + len(self.tcp_cache)
        self.index.on_change.append(self._invalidate)

    def _invalidate(self, deps: list[Dep]) -> None:
        """Drop the cached answers whose resolution read one of `deps` (an informer just changed them)."""
        for dep in deps:
            for tcp, key in self._dependents.pop(dep, ()):
                (self.tcp_cache if tcp else self.udp_cache).pop(key, None)

    def _remember(self, tcp: bool, key: bytes, entry: CacheEntry, deps: set[Dep]) -> None:
        cache = self.tcp_cache if tcp else self.udp_cache
        if len(cache) >= self.cache_max:
            self.udp_cache.clear()
            self.tcp_cache.clear()
            self._dependents.clear()
        cache[key] = entry
        for dep in deps:
            self._dependents.setdefault(dep, set()).add((tcp, key))

    # ---- the synchronous part: everything but the upstream ----
    def handle_local(self, data: bytes, proto: str, family: int = 4) -> bytes | Pending | None:
        """The answer bytes, a Pending to finish with the upstream, or None to drop the query."""
        started = time.perf_counter()
        if len(data) < HEADER_LEN:
            self.metrics.drop("short")
            return None
        if data[2] & 0x80:
            self.metrics.drop("response")  # a response, not a query: never answer it (no loops)
            return None
        tcp = proto == "tcp"
        hit = (self.tcp_cache if tcp else self.udp_cache).get(bytes(data[2:]))
        if hit is not None:
            packed, series = hit
            series.observe(time.perf_counter() - started)
            return data[:2] + packed
        if len(data) > MAX_QUERY:
            return self._raw_error(data, RCODE.FORMERR, proto, family, started)
        try:
            query = DNSRecord.parse(data)
        except Exception as e:  # dnslib raises DNSError, but also struct/index/unicode errors
            log.debug("malformed query proto=%s len=%d error=%s", proto, len(data), e)
            return self._raw_error(data, RCODE.FORMERR, proto, family, started)
        if query.header.opcode != OPCODE_QUERY:
            return self._raw_error(data, RCODE.NOTIMP, proto, family, started)
        if len(query.questions) != 1:
            return self._raw_error(data, RCODE.FORMERR, proto, family, started)
        q = query.q
        qtype = QTYPE.get(q.qtype, str(q.qtype))
        opt = next((rr for rr in query.ar if rr.rtype == QTYPE.OPT), None)
        udp_size = UDP_MIN
        if opt is not None:
            udp_size = max(UDP_MIN, min(int(opt.rclass), UDP_MAX))
            if (opt.ttl >> 16) & 0xFF != 0:  # EDNS version other than 0
                reply = self._reply(query, Answer(RCODE.NOERROR), ext_rcode=RCODE_BADVERS >> 4)
                return self._finish(reply, query, proto, family, qtype, "BADVERS", ".", started, udp_size)[0]
        deps: set[Dep] = set()
        if q.qclass not in (QCLASS_IN, QCLASS_ANY):
            answer = Answer(RCODE.REFUSED, forward=True)
        else:
            self.index.recording = deps
            try:
                answer = self.resolver.resolve(str(q.qname), q.qtype)
            finally:
                self.index.recording = None
        if (answer.forward or answer.chase) and self.upstream is not None and q.qclass == QCLASS_IN:
            return Pending(query, data, proto, family, qtype, started, udp_size, answer)
        reply = self._reply(query, answer)
        rcode = RCODE.get(answer.rcode, str(answer.rcode))
        packed, series = self._finish(reply, query, proto, family, qtype, rcode, answer.zone, started, udp_size)
        if not answer.forward and not answer.chase:
            self._remember(tcp, bytes(data[2:]), (packed[2:], series), deps)
        return packed

    # ---- the asynchronous part ----
    async def handle(self, data: bytes, proto: str, family: int = 4) -> bytes | None:
        result = self.handle_local(data, proto, family)
        if isinstance(result, Pending):
            return await self.finish_pending(result)
        return result

    async def finish_pending(self, p: Pending) -> bytes | None:
        assert self.upstream is not None
        if self._pending >= MAX_PENDING_FORWARDS:
            self.metrics.drop("forward_backlog")
            return None
        self._pending += 1
        try:
            if p.answer.chase:
                return await self._chase(p)
            try:
                raw = await self.upstream.query(p.data, tcp=p.proto == "tcp")
            except UpstreamError as e:
                log.warning("forward failed name=%s type=%s error=%s", p.query.q.qname, p.qtype, e)
                reply = self._reply(p.query, Answer(RCODE.SERVFAIL, forward=True))
                return self._finish(reply, p.query, p.proto, p.family, p.qtype, "SERVFAIL", ".", p.started,
                                    p.udp_size)[0]
            rcode = RCODE.get(raw[3] & 0x0F, str(raw[3] & 0x0F))
            self.metrics.forward_responses.labels(self.upstream.address, rcode).inc()
            self.metrics.observe(".", p.proto, p.family, p.qtype, rcode, time.perf_counter() - p.started)
            return raw
        finally:
            self._pending -= 1

    async def _chase(self, p: Pending) -> bytes:
        """An ExternalName whose target is outside the zone: the CNAME plus the upstream's records for
        the target (CoreDNS does the same lookup through its upstream)."""
        assert self.upstream is not None and p.answer.chase
        answer = p.answer
        lookup = DNSRecord.question(p.answer.chase, QTYPE.get(p.query.q.qtype, "A"))
        try:
            raw = await self.upstream.query(lookup.pack(), tcp=p.proto == "tcp")
            upstream_answer = DNSRecord.parse(raw)
            answer = Answer(upstream_answer.header.rcode, answer=answer.answer + list(upstream_answer.rr),
                            zone=answer.zone)
        except (UpstreamError, Exception) as e:  # noqa: B014 - a bad upstream answer is the same failure
            log.info("ExternalName target lookup failed target=%s error=%s", p.answer.chase, e)
        reply = self._reply(p.query, answer)
        rcode = RCODE.get(answer.rcode, str(answer.rcode))
        return self._finish(reply, p.query, p.proto, p.family, p.qtype, rcode, answer.zone, p.started,
                            p.udp_size)[0]

    # ---- building answers ----
    def _reply(self, query: DNSRecord, answer: Answer, ext_rcode: int = 0) -> DNSRecord:
        h = query.header
        reply = DNSRecord(DNSHeader(id=h.id, qr=1, aa=int(answer.authoritative), rd=h.rd,
                                    ra=int(self.upstream is not None), rcode=answer.rcode & 0x0F),
                          q=query.q)
        reply.rr = list(answer.answer)
        reply.auth = list(answer.authority)
        reply.ar = list(answer.additional)
        if any(rr.rtype == QTYPE.OPT for rr in query.ar):
            reply.ar.append(EDNS0(udp_len=EDNS_SIZE, ext_rcode=ext_rcode))
        return reply

    def _finish(self, reply: DNSRecord, query: DNSRecord, proto: str, family: int, qtype: str, rcode: str,
                zone: str, started: float, udp_size: int) -> tuple[bytes, Series]:
        """The reply packed (and truncated for UDP), counted in its Series, which it also returns."""
        try:
            packed = reply.pack()
        except Exception as e:  # a name we cannot encode (a label over 63 bytes, ...)
            log.info("cannot pack answer name=%s error=%s", query.q.qname, e)
            reply = self._reply(query, Answer(RCODE.SERVFAIL))
            rcode = "SERVFAIL"
            packed = reply.pack()
        if proto == "udp" and len(packed) > udp_size:
            packed = truncate(reply, udp_size)
        series = self.metrics.series(zone, proto, family, qtype, rcode)
        series.observe(time.perf_counter() - started)
        return packed, series

    def _raw_error(self, data: bytes, rcode: int, proto: str, family: int, started: float) -> bytes:
        self.metrics.observe(".", proto, family, "other", RCODE.get(rcode, str(rcode)),
                             time.perf_counter() - started)
        return error_from_header(data, rcode)


def truncate(reply: DNSRecord, size: int) -> bytes:
    """The reply cut to `size` bytes with TC set: as many answer records as fit (clients that never
    retry over TCP, like musl's, still get some), no authority, only the OPT record kept."""
    opt = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
    answers: list[RR] = list(reply.rr)
    reply.header.tc = 1
    reply.auth = []
    reply.ar = opt

    def packed_with(n: int) -> bytes:
        reply.rr = answers[:n]
        return bytes(reply.pack())

    lo, hi = 0, len(answers)  # the largest n whose packing fits: binary search, log(n) packs
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(packed_with(mid)) <= size:
            lo = mid
        else:
            hi = mid - 1
    return packed_with(lo)


# ---- listeners ----
class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, handler: DnsHandler, family: int) -> None:
        self.handler = handler
        self.family = family
        self.transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            result = self.handler.handle_local(data, "udp", self.family)
        except Exception:  # a bug on one query must not stop the listener
            log.exception("query failed peer=%s", addr)
            return
        if result is None:
            return
        if isinstance(result, Pending):
            task = asyncio.get_running_loop().create_task(self._forward(result, addr))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        assert self.transport is not None
        self.transport.sendto(result, addr)

    async def _forward(self, pending: Pending, addr: Any) -> None:
        try:
            answer = await self.handler.finish_pending(pending)
        except Exception:
            log.exception("forward failed peer=%s", addr)
            return
        if answer is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(answer, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error=%s", exc)


class DnsServer:
    """UDP and TCP listeners on one address and port, answering through one DnsHandler.

    UDP goes through the batched listener (udpbatch.py) unless `batch` is off or its C helper cannot
    be built; then through asyncio's datagram transport."""

    def __init__(self, handler: DnsHandler, host: str = "0.0.0.0", port: int = 53, batch: bool = True) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.batch = batch
        self._udp: asyncio.DatagramTransport | BatchUdpListener | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    @property
    def family(self) -> int:
        return 6 if ":" in self.host else 4

    @property
    def batched(self) -> bool:
        return isinstance(self._udp, BatchUdpListener)

    async def start(self) -> None:
        family = socket.AF_INET6 if self.family == 6 else socket.AF_INET
        # UDP first: with port 0 the kernel picks one, and TCP then binds the same number; if that
        # TCP port is taken, try another pick (only when the port was left to the kernel).
        attempts = 20 if self.port == 0 else 1
        for attempt in range(attempts):
            udp, port = await self._open_udp(family)
            try:
                self._tcp = await asyncio.start_server(self._tcp_client, self.host, port, family=family,
                                                       reuse_address=True)
            except OSError as e:
                udp.close()
                if e.errno != errno.EADDRINUSE or attempt == attempts - 1:
                    raise
                continue
            self._udp, self.port = udp, port
            break
        log.info("dns listening addr=%s port=%d udp=%s", self.host, self.port,
                 "batched" if self.batched else "asyncio")

    async def _open_udp(self, family: int) -> tuple[asyncio.DatagramTransport | BatchUdpListener, int]:
        lib = udpbatch.load() if self.batch else None
        if lib is None:
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _UdpProtocol(self.handler, self.family), local_addr=(self.host, self.port), family=family)
            return transport, int(transport.get_extra_info("sockname")[1])
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self.port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        listener = BatchUdpListener(self.handler, sock, lib, self.family)
        listener.start()
        return listener, int(sock.getsockname()[1])

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            for w in list(self._connections):
                w.close()
            await self._tcp.wait_closed()

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= TCP_MAX_CONNECTIONS:
            self.handler.metrics.drop("tcp_connections")
            writer.close()
            return
        self._connections.add(writer)
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                n = int.from_bytes(head, "big")
                if n > MAX_QUERY:  # framing we will not buffer: answer nothing, hang up
                    self.handler.metrics.drop("oversized")
                    return
                data = await asyncio.wait_for(reader.readexactly(n), TCP_IDLE_TIMEOUT)
                answer = await self.handler.handle(data, "tcp", self.family)
                if answer is None:
                    continue
                writer.write(len(answer).to_bytes(2, "big") + answer)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception:
            log.exception("tcp query failed")
        finally:
            self._connections.discard(writer)
            writer.close()
