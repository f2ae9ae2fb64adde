"""Forwarding of names outside the cluster domain to one upstream resolver (CoreDNS's `forward`).

The client's query is sent as it came (same ID, same EDNS size), over UDP on a fresh connected
socket per query (so answers cannot be confused between clients and a spoofed answer from another
address is never read), or over TCP when the client asked over TCP. A UDP attempt that times out is
retried once; no answer at all is an UpstreamError, which the server turns into SERVFAIL.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

log = logging.getLogger(__name__)


class UpstreamError(Exception):
    pass


def parse_upstream(value: str) -> tuple[str, int]:
    """IP, IP:PORT, [IPv6]:PORT or a bare IPv6 address -> (host, port)."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif value.count(":") == 1:
        host, _, p = value.partition(":")
        port = int(p)
    else:
        host, port = value, 53
    ipaddress.ip_address(host)  # raises ValueError with the address in the message
    if not 0 < port < 65536:
        raise ValueError(f"upstream port {port} out of range")
    return host, port


class _OneAnswer(asyncio.DatagramProtocol):
    def __init__(self, qid: bytes) -> None:
        self.qid = qid
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if len(data) >= 12 and data[:2] == self.qid and not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable and such
        if not self.answer.done():
            self.answer.set_exception(exc)


class Upstream:
    def __init__(self, host: str, port: int = 53, timeout: float = 2.0, attempts: int = 2) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.attempts = attempts

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def query(self, data: bytes, tcp: bool = False) -> bytes:
        if tcp:
            return await self._tcp(data)
        last: Exception | None = None
        for _ in range(self.attempts):
            try:
                return await self._udp(data)
            except (TimeoutError, OSError) as e:
                last = e
        raise UpstreamError(f"upstream {self.address} did not answer over UDP: {last!r}")

    async def _udp(self, data: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _OneAnswer(data[:2]), remote_addr=(self.host, self.port))
        try:
            transport.sendto(data)
            return await asyncio.wait_for(proto.answer, self.timeout)
        finally:
            transport.close()

    async def _tcp(self, data: bytes) -> bytes:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout)
        except (TimeoutError, OSError) as e:
            raise UpstreamError(f"upstream {self.address} refused TCP: {e!r}") from e
        try:
            writer.write(len(data).to_bytes(2, "big") + data)
            await writer.drain()
            n = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), self.timeout), "big")
            return await asyncio.wait_for(reader.readexactly(n), self.timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as e:
            raise UpstreamError(f"upstream {self.address} failed over TCP: {e!r}") from e
        finally:
            writer.close()
