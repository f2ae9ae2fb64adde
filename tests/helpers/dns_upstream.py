"""A fake upstream resolver for forwarding tests: answers every A query with 192.0.2.1 (TEST-NET-1),
names starting with "nx." with NXDOMAIN, over UDP and TCP, and counts what it received."""

from __future__ import annotations

import asyncio
from typing import Any

from dnslib import QTYPE, RCODE, RR, A, DNSRecord

UPSTREAM_ANSWER = "192.0.2.1"


class FakeUpstream:
    def __init__(self) -> None:
        self.queries: list[tuple[str, str, str]] = []  # (proto, name, type)
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    def answer(self, data: bytes, proto: str) -> bytes:
        q = DNSRecord.parse(data)
        name = str(q.q.qname)
        self.queries.append((proto, name, QTYPE.get(q.q.qtype)))
        reply = q.reply()
        if name.startswith("nx."):
            reply.header.rcode = RCODE.NXDOMAIN
        elif q.q.qtype == QTYPE.A:
            reply.add_answer(RR(name, QTYPE.A, ttl=60, rdata=A(UPSTREAM_ANSWER)))
        return bytes(reply.pack())

    async def start(self, host: str = "127.0.0.1") -> None:
        loop = asyncio.get_running_loop()
        outer = self

        class Proto(asyncio.DatagramProtocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: Any) -> None:
                self.transport.sendto(outer.answer(data, "udp"), addr)

        async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                n = int.from_bytes(await reader.readexactly(2), "big")
                out = self.answer(await reader.readexactly(n), "tcp")
                writer.write(len(out).to_bytes(2, "big") + out)
                await writer.drain()
            finally:
                writer.close()

        for _ in range(20):  # the UDP port the kernel picked may be taken for TCP: pick again
            self._udp, _ = await loop.create_datagram_endpoint(Proto, local_addr=(host, 0))
            self.port = self._udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(tcp, host, self.port)
                return
            except OSError:
                self._udp.close()
        raise RuntimeError("no port free for both UDP and TCP")

    async def stop(self) -> None:
        if self._udp:
            self._udp.close()
        if self._tcp:
            self._tcp.close()
            await self._tcp.wait_closed()
