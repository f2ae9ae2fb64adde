"""Malformed, oversized and hostile queries get FORMERR (or another error) or are dropped, and the
server keeps answering good queries afterwards."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from typing import Any

from dnslib import EDNS0, QTYPE, RCODE, DNSQuestion, DNSRecord

from tests.helpers.dns_client import make_query, service

D = "cluster.local"
GOOD = f"web.default.svc.{D}"


async def assert_still_serving(dns: Any) -> None:
    r = await dns.q(GOOD)
    assert [str(rr.rdata) for rr in r.rr] == ["10.96.0.20"]
    r = await dns.q(GOOD, tcp=True)
    assert [str(rr.rdata) for rr in r.rr] == ["10.96.0.20"]


def header(qid: int, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


async def test_garbage_after_a_header_is_formerr(make_dns: Any) -> None:
    dns = await make_dns([service("web")])
    for body in (b"\xff" * 30, b"\x05abc", b"\xc0\x0c\x00\x01\x00\x01", os.urandom(64)):  # bad labels, a loop
        raw = await dns.raw(header(0x1234) + body)
        assert raw is not None
        r = DNSRecord.parse(raw)
        assert r.header.id == 0x1234 and r.header.qr == 1 and r.header.rcode == RCODE.FORMERR
    await assert_still_serving(dns)


async def test_short_datagrams_and_responses_are_dropped(make_dns: Any) -> None:
    dns = await make_dns([service("web")])
    assert await dns.raw(b"\x00\x01\x02", timeout=0.5) is None
    assert await dns.raw(b"", timeout=0.5) is None
    response = make_query(GOOD).reply().pack()  # QR set: never answer a response (no loops)
    assert await dns.raw(response, timeout=0.5) is None
    assert dns.app.metrics.dropped.labels(dns.app.metrics.server, "response")._value.get() == 1
    await assert_still_serving(dns)


async def test_oversized_udp_query_is_formerr(make_dns: Any) -> None:
    dns = await make_dns([service("web")])
    q = make_query(GOOD)
    raw = await dns.raw(q.pack() + b"\x00" * 5000)
    assert raw is not None and DNSRecord.parse(raw).header.rcode == RCODE.FORMERR
    await assert_still_serving(dns)


async def test_two_questions_is_formerr_and_other_opcodes_notimp(make_dns: Any) -> None:
    dns = await make_dns([service("web")])
    q = make_query(GOOD)
    q.add_question(DNSQuestion(f"other.default.svc.{D}", QTYPE.A))
    r = DNSRecord.parse(await dns.raw(q.pack()) or b"")
    assert r.header.rcode == RCODE.FORMERR and r.header.id == q.header.id
    q = make_query(GOOD)
    q.header.opcode = 2  # STATUS
    r = DNSRecord.parse(await dns.raw(q.pack()) or b"")
    assert r.header.rcode == RCODE.NOTIMP
    raw = await dns.raw(header(7, qd=0))  # no question at all
    assert raw is not None and DNSRecord.parse(raw).header.rcode == RCODE.FORMERR
    await assert_still_serving(dns)


async def test_unknown_edns_version_is_badvers(make_dns: Any) -> None:
    dns = await make_dns([service("web")])
    q = make_query(GOOD)
    q.add_ar(EDNS0(udp_len=1232, version=1))
    r = DNSRecord.parse(await dns.raw(q.pack()) or b"")
    opt = [a for a in r.ar if a.rtype == QTYPE.OPT]
    # BADVERS = 16: the upper 8 bits (1) go in the OPT record's extended rcode, the header keeps 0
    assert len(opt) == 1 and (opt[0].ttl >> 24) == 1 and r.header.rcode == 0 and not r.rr
    await assert_still_serving(dns)


async def test_non_internet_class_is_refused(make_dns: Any) -> None:
    dns = await make_dns([service("web")])
    q = DNSRecord(q=DNSQuestion("version.bind", QTYPE.TXT, 3))  # CHAOS
    r = DNSRecord.parse(await dns.raw(q.pack()) or b"")
    assert r.header.rcode == RCODE.REFUSED


async def test_tcp_oversized_length_closes_only_that_connection(make_dns: Any) -> None:
    dns = await make_dns([service("web")])
    reader, writer = await asyncio.open_connection(dns.host, dns.port)
    writer.write(b"\xff\xff" + b"\x00" * 100)  # claims 65535 bytes
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed without an answer
    writer.close()
    await assert_still_serving(dns)


async def test_tcp_garbage_gets_formerr_then_connection_still_usable(make_dns: Any) -> None:
    dns = await make_dns([service("web")])
    reader, writer = await asyncio.open_connection(dns.host, dns.port)
    try:
        bad = header(0x4242) + b"\xff" * 20
        writer.write(len(bad).to_bytes(2, "big") + bad)
        good = make_query(GOOD).pack()
        writer.write(len(good).to_bytes(2, "big") + good)  # pipelined on the same connection
        await writer.drain()
        answers = []
        for _ in range(2):
            n = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 5), "big")
            answers.append(DNSRecord.parse(await reader.readexactly(n)))
        assert answers[0].header.id == 0x4242 and answers[0].header.rcode == RCODE.FORMERR
        assert [str(rr.rdata) for rr in answers[1].rr] == ["10.96.0.20"]
    finally:
        writer.close()


async def test_half_open_tcp_connection_does_not_block_others(make_dns: Any) -> None:
    dns = await make_dns([service("web")])
    stalled = socket.create_connection((dns.host, dns.port))
    try:
        stalled.sendall(b"\x00\x40")  # a length and then nothing
        await assert_still_serving(dns)
    finally:
        stalled.close()


async def test_random_fuzz_never_stops_the_server(make_dns: Any) -> None:
    dns = await make_dns([service("web")])
    good = make_query(GOOD).pack()
    rng = __import__("random").Random(9)
    for i in range(300):
        data = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if i % 3 == 0:
            data = data[: rng.randrange(len(data))]
        if len(data) < 12:  # dropped without an answer (tested above): send and move on
            await dns.raw(bytes(data), timeout=0.01)
            continue
        data[2] &= 0x7F  # keep QR clear so the fuzzed packet is a query
        raw = await dns.raw(bytes(data), timeout=1.0)
        assert raw is not None, bytes(data).hex()
        if raw is not None:  # whatever it answers must itself be a well-formed DNS message
            assert DNSRecord.parse(raw).header.qr == 1
    await assert_still_serving(dns)
