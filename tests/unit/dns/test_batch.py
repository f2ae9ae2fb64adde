"""The batched UDP listener (recvmmsg/sendmmsg, answers written over their queries in one buffer)
against the plain asyncio path: bursts of queries from many sockets, every answer with its own ID and
name, cached and uncached mixed in one batch, forwarding from an IPv6 listener."""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from nodeagent.dns.udpbatch import BATCH, peer_address
from tests.helpers.dns_client import make_query, service
from tests.helpers.dns_upstream import UPSTREAM_ANSWER, FakeUpstream

D = "cluster.local"


def burst(host: str, port: int, queries: list[DNSRecord], sockets: int = 4, timeout: float = 3.0) -> dict[int, DNSRecord]:
    """Send every query before reading any answer (so they queue up and arrive in batches), from
    `sockets` sockets round robin; the answers by ID."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(sockets)]
    try:
        for s in socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.settimeout(timeout)
        for i, q in enumerate(queries):
            socks[i % sockets].sendto(q.pack(), (host, port))
        answers: dict[int, DNSRecord] = {}
        for i, s in enumerate(socks):
            for _ in range(len(queries[i::sockets])):
                r = DNSRecord.parse(s.recv(4096))
                answers[r.header.id] = r
        return answers
    finally:
        for s in socks:
            s.close()


@pytest.mark.parametrize("batch", [True, False], ids=["batched", "asyncio"])
async def test_bursts_get_each_query_its_own_answer(make_dns: Any, batch: bool) -> None:
    dns = await make_dns([service(f"svc-{i}", cluster_ip=f"10.96.1.{i}") for i in range(20)], udp_batch=batch)
    assert dns.app.server.batched is batch
    for rnd in range(2):  # the first round fills the cache mid-burst, the second is all cached
        queries = []
        for i in range(3 * BATCH):
            name = f"svc-{i % 23}.default.svc.{D}"  # svc-20..22 do not exist: NXDOMAIN
            q = make_query(name, "AAAA" if i % 7 == 0 else "A")
            q.header.id = 1000 * rnd + i
            queries.append(q)
        answers = await asyncio.to_thread(burst, dns.host, dns.port, queries)
        assert sorted(answers) == sorted(q.header.id for q in queries)
        for q in queries:
            r = answers[q.header.id]
            assert str(r.q.qname) == str(q.q.qname) and r.q.qtype == q.q.qtype
            n = int(str(q.q.qname).split(".")[0].split("-")[1])
            if n >= 20:
                assert r.header.rcode == RCODE.NXDOMAIN
            elif q.q.qtype == QTYPE.AAAA:
                assert r.header.rcode == RCODE.NOERROR and not r.rr  # NODATA: the Service is IPv4 only
            else:
                assert [str(rr.rdata) for rr in r.rr] == [f"10.96.1.{n}"]
    total = sum(s.count for s in dns.app.metrics.series_all())
    assert total == 2 * 3 * BATCH  # every query counted once, cached or not


async def test_forwarding_from_an_ipv6_listener(make_dns: Any) -> None:
    up = FakeUpstream()
    await up.start()
    try:
        dns = await make_dns([service("web", cluster_ip="10.96.0.20")], bind="::1", upstream=f"127.0.0.1:{up.port}")
        assert dns.app.server.batched
        r = await dns.q("www.example.com")  # answered later, to the peer address kept from the batch
        assert [str(rr.rdata) for rr in r.rr] == [UPSTREAM_ANSWER]
        r = await dns.q(f"web.default.svc.{D}")
        assert [str(rr.rdata) for rr in r.rr] == ["10.96.0.20"]
    finally:
        await up.stop()


def test_peer_address_decodes_both_families() -> None:
    v4 = bytearray(28)
    v4[0:2] = socket.AF_INET.to_bytes(2, sys.byteorder)
    v4[2:4] = (5353).to_bytes(2, "big")
    v4[4:8] = socket.inet_aton("10.53.0.2")
    assert peer_address(bytes(v4), 16) == ("10.53.0.2", 5353)
    v6 = bytearray(28)
    v6[0:2] = socket.AF_INET6.to_bytes(2, sys.byteorder)
    v6[2:4] = (53).to_bytes(2, "big")
    v6[8:24] = socket.inet_pton(socket.AF_INET6, "fd00::5")
    v6[24:28] = (3).to_bytes(4, sys.byteorder)
    assert peer_address(bytes(v6), 28) == ("fd00::5", 53, 0, 3)
