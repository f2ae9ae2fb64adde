"""Answers for every record type and every error case, through real UDP/TCP sockets on 127.0.0.1,
with Services and EndpointSlices delivered by informers on a FakeClient."""

from __future__ import annotations

from typing import Any

from dnslib import QTYPE, RCODE

from nodeagent.machinery.kinds import ENDPOINTSLICES, SERVICES
from tests.helpers.dns_client import endpoint_slice, ep, service
from tests.helpers.dns_upstream import UPSTREAM_ANSWER, FakeUpstream

D = "cluster.local"


def rdatas(r: Any, rtype: int | None = None) -> list[str]:
    return sorted(str(rr.rdata) for rr in r.rr if rtype is None or rr.rtype == rtype)


def is_nodata(r: Any) -> bool:
    return (r.header.rcode == RCODE.NOERROR and not r.rr and len(r.auth) == 1
            and r.auth[0].rtype == QTYPE.SOA and str(r.auth[0].rname) == f"{D}.")


def is_nxdomain(r: Any) -> bool:
    return r.header.rcode == RCODE.NXDOMAIN and not r.rr and [a.rtype for a in r.auth] == [QTYPE.SOA]


HEADLESS = [
    service("db", cluster_ip="None", ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}]),
    endpoint_slice("db", endpoints=[ep("10.244.1.5", hostname="db-0"), ep("10.244.2.7", ready=None),
                                    ep("10.244.3.9", ready=False)],
                   ports=[{"name": "pg", "port": 5433, "protocol": "TCP"}]),
]


async def test_clusterip_service_a_record(make_dns: Any) -> None:
    dns = await make_dns([service("web", cluster_ip="10.96.0.20")])
    r = await dns.q(f"web.default.svc.{D}")
    assert r.header.rcode == RCODE.NOERROR and r.header.aa == 1
    assert rdatas(r, QTYPE.A) == ["10.96.0.20"]
    assert r.rr[0].ttl == 30
    # names are case-insensitive (RFC 4343); the question comes back as asked
    r = await dns.q(f"WEB.Default.SVC.{D.upper()}")
    assert rdatas(r, QTYPE.A) == ["10.96.0.20"] and str(r.q.qname) == f"WEB.Default.SVC.{D.upper()}."


async def test_ttl_is_configurable(make_dns: Any) -> None:
    dns = await make_dns([service("web")], ttl=5)
    r = await dns.q(f"web.default.svc.{D}")
    assert [rr.ttl for rr in r.rr] == [5]
    r = await dns.q(f"nope.default.svc.{D}")
    assert r.auth[0].ttl == 5 and r.auth[0].rdata.times[-1] == 5  # negative TTL follows (RFC 2308)


async def test_nodata_for_a_type_the_name_lacks(make_dns: Any) -> None:
    dns = await make_dns([service("web")])
    assert is_nodata(await dns.q(f"web.default.svc.{D}", "AAAA"))
    assert is_nodata(await dns.q(f"web.default.svc.{D}", "TXT"))
    assert is_nodata(await dns.q(f"web.default.svc.{D}", "MX"))


async def test_dual_stack_service_answers_each_family(make_dns: Any) -> None:
    svc = service("dual", cluster_ip="10.96.0.30")
    svc["spec"]["clusterIPs"] = ["10.96.0.30", "fd00:10:96::30"]
    dns = await make_dns([svc])
    assert rdatas(await dns.q(f"dual.default.svc.{D}", "A"), QTYPE.A) == ["10.96.0.30"]
    assert rdatas(await dns.q(f"dual.default.svc.{D}", "AAAA"), QTYPE.AAAA) == ["fd00:10:96::30"]


async def test_nxdomain_for_missing_names(make_dns: Any) -> None:
    dns = await make_dns([service("web")])
    for name in (f"nope.default.svc.{D}", f"web.otherns.svc.{D}", f"a.b.c.d.e.svc.{D}",
                 f"web.default.svc.{D}.default.svc.{D}", f"random.{D}", f"x.web.default.svc.{D}"):
        r = await dns.q(name)
        assert is_nxdomain(r), name
        assert r.header.aa == 1


async def test_search_path_expansions_of_outside_names_are_nxdomain(make_dns: Any) -> None:
    # resolv.conf search + ndots:5 makes www.example.com try these first: answer NXDOMAIN here,
    # never forward them (even with an upstream configured).
    up = FakeUpstream()
    await up.start()
    try:
        dns = await make_dns([service("web")], upstream=f"127.0.0.1:{up.port}")
        for suffix in ("default.svc", "svc", ""):
            name = ".".join(p for p in ("www.example.com", suffix, D) if p)
            assert is_nxdomain(await dns.q(name)), name
        assert up.queries == []
    finally:
        await up.stop()


async def test_namespace_and_zone_nodes_exist_without_records(make_dns: Any) -> None:
    dns = await make_dns([service("web", ns="shop")])
    assert is_nodata(await dns.q(f"shop.svc.{D}"))
    assert is_nxdomain(await dns.q(f"nons.svc.{D}"))
    assert is_nodata(await dns.q(f"svc.{D}"))
    assert is_nodata(await dns.q(f"pod.{D}"))
    assert is_nodata(await dns.q(D))


async def test_headless_service_answers_ready_endpoints(make_dns: Any) -> None:
    dns = await make_dns(HEADLESS)
    r = await dns.q(f"db.default.svc.{D}")
    # ready true and ready unset ("nil should be interpreted as true"); never ready false
    assert rdatas(r, QTYPE.A) == ["10.244.1.5", "10.244.2.7"]
    assert r.header.aa == 1


async def test_headless_publish_not_ready_addresses(make_dns: Any) -> None:
    svc, eps = HEADLESS
    svc = {**svc, "spec": {**svc["spec"], "publishNotReadyAddresses": True}}
    dns = await make_dns([svc, eps])
    assert rdatas(await dns.q(f"db.default.svc.{D}"), QTYPE.A) == ["10.244.1.5", "10.244.2.7", "10.244.3.9"]


async def test_headless_without_endpoints_is_nodata(make_dns: Any) -> None:
    dns = await make_dns([service("empty", cluster_ip="None")])
    assert is_nodata(await dns.q(f"empty.default.svc.{D}"))


async def test_headless_endpoint_names(make_dns: Any) -> None:
    dns = await make_dns(HEADLESS)
    assert rdatas(await dns.q(f"db-0.db.default.svc.{D}"), QTYPE.A) == ["10.244.1.5"]
    # an endpoint without hostname is named by its dashed address, as CoreDNS does
    assert rdatas(await dns.q(f"10-244-2-7.db.default.svc.{D}"), QTYPE.A) == ["10.244.2.7"]
    assert is_nxdomain(await dns.q(f"10-244-3-9.db.default.svc.{D}"))  # not ready
    assert is_nxdomain(await dns.q(f"db-9.db.default.svc.{D}"))
    assert is_nodata(await dns.q(f"db-0.db.default.svc.{D}", "AAAA"))


async def test_srv_for_named_port_of_clusterip_service(make_dns: Any) -> None:
    dns = await make_dns([service("web", cluster_ip="10.96.0.20", ports=[
        {"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"},
        {"port": 9000, "protocol": "TCP"}])])
    r = await dns.q(f"_http._tcp.web.default.svc.{D}", "SRV")
    assert r.header.rcode == RCODE.NOERROR
    assert [(rr.rdata.priority, rr.rdata.weight, rr.rdata.port, str(rr.rdata.target)) for rr in r.rr] == [
        (0, 100, 80, f"web.default.svc.{D}.")]
    assert [(str(a.rname), str(a.rdata)) for a in r.ar] == [(f"web.default.svc.{D}.", "10.96.0.20")]
    r = await dns.q(f"_dns._udp.web.default.svc.{D}", "SRV")
    assert [rr.rdata.port for rr in r.rr] == [53]
    assert is_nxdomain(await dns.q(f"_dns._tcp.web.default.svc.{D}", "SRV"))  # wrong protocol
    assert is_nxdomain(await dns.q(f"_nope._tcp.web.default.svc.{D}", "SRV"))
    assert is_nodata(await dns.q(f"_http._tcp.web.default.svc.{D}", "A"))
    assert is_nodata(await dns.q(f"_tcp.web.default.svc.{D}", "SRV"))  # empty non-terminal
    # SRV on the service name lists every named port (unnamed ports have no SRV)
    r = await dns.q(f"web.default.svc.{D}", "SRV")
    assert sorted(rr.rdata.port for rr in r.rr) == [53, 80]


async def test_srv_of_headless_service_names_each_endpoint(make_dns: Any) -> None:
    dns = await make_dns(HEADLESS)
    r = await dns.q(f"_pg._tcp.db.default.svc.{D}", "SRV")
    got = sorted((rr.rdata.port, str(rr.rdata.target)) for rr in r.rr)
    # the endpoint port (targetPort) from the slice, one record per ready endpoint
    assert got == [(5433, f"10-244-2-7.db.default.svc.{D}."), (5433, f"db-0.db.default.svc.{D}.")]
    assert sorted((str(a.rname), str(a.rdata)) for a in r.ar) == [
        (f"10-244-2-7.db.default.svc.{D}.", "10.244.2.7"), (f"db-0.db.default.svc.{D}.", "10.244.1.5")]


async def test_pod_a_records(make_dns: Any) -> None:
    dns = await make_dns([])
    assert rdatas(await dns.q(f"10-244-1-5.default.pod.{D}"), QTYPE.A) == ["10.244.1.5"]
    assert rdatas(await dns.q(f"fd00-10-244--5.default.pod.{D}", "AAAA"), QTYPE.AAAA) == ["fd00:10:244::5"]
    assert is_nodata(await dns.q(f"10-244-1-5.default.pod.{D}", "AAAA"))
    for bad in ("10-244-1", "10-244-1-300", "web", "010-1-2-3"):
        assert is_nxdomain(await dns.q(f"{bad}.default.pod.{D}")), bad
    assert is_nxdomain(await dns.q(f"x.10-244-1-5.default.pod.{D}"))


async def test_external_name_is_a_cname(make_dns: Any) -> None:
    dns = await make_dns([
        service("ext", cluster_ip=None, type="ExternalName", externalName="db.example.org"),
        service("alias", cluster_ip=None, type="ExternalName", externalName=f"web.default.svc.{D}"),
        service("web", cluster_ip="10.96.0.20"),
    ])
    r = await dns.q(f"ext.default.svc.{D}")
    assert [(rr.rtype, str(rr.rdata)) for rr in r.rr] == [(QTYPE.CNAME, "db.example.org.")]
    assert r.header.rcode == RCODE.NOERROR
    r = await dns.q(f"ext.default.svc.{D}", "CNAME")
    assert rdatas(r, QTYPE.CNAME) == ["db.example.org."]
    # a target inside the zone is followed
    r = await dns.q(f"alias.default.svc.{D}")
    assert [(rr.rtype, str(rr.rdata)) for rr in r.rr] == [(QTYPE.CNAME, f"web.default.svc.{D}."),
                                                            (QTYPE.A, "10.96.0.20")]


async def test_external_name_loop_is_servfail(make_dns: Any) -> None:
    dns = await make_dns([
        service("a", cluster_ip=None, type="ExternalName", externalName=f"b.default.svc.{D}"),
        service("b", cluster_ip=None, type="ExternalName", externalName=f"a.default.svc.{D}"),
        service("self", cluster_ip=None, type="ExternalName", externalName=f"self.default.svc.{D}"),
    ])
    for name in ("a", "self"):
        r = await dns.q(f"{name}.default.svc.{D}")  # answered at once, not a timeout
        assert r.header.rcode == RCODE.SERVFAIL and r.rr and all(rr.rtype == QTYPE.CNAME for rr in r.rr)


async def test_external_name_target_resolved_upstream(make_dns: Any) -> None:
    up = FakeUpstream()
    await up.start()
    try:
        dns = await make_dns([service("ext", cluster_ip=None, type="ExternalName", externalName="db.example.org")],
                             upstream=f"127.0.0.1:{up.port}")
        r = await dns.q(f"ext.default.svc.{D}")
        assert [(rr.rtype, str(rr.rdata)) for rr in r.rr] == [(QTYPE.CNAME, "db.example.org."),
                                                                (QTYPE.A, UPSTREAM_ANSWER)]
        assert ("udp", "db.example.org.", "A") in up.queries
    finally:
        await up.stop()


async def test_zone_apex_soa_ns_and_schema_version(make_dns: Any) -> None:
    dns = await make_dns([], service_ip="10.96.0.10")
    r = await dns.q(D, "SOA")
    soa = r.rr[0].rdata
    assert r.rr[0].rtype == QTYPE.SOA and str(soa.mname) == f"ns.dns.{D}." and str(soa.rname) == f"hostmaster.{D}."
    r = await dns.q(D, "NS")
    assert rdatas(r, QTYPE.NS) == [f"ns.dns.{D}."]
    assert [(str(a.rname), str(a.rdata)) for a in r.ar] == [(f"ns.dns.{D}.", "10.96.0.10")]
    assert rdatas(await dns.q(f"ns.dns.{D}"), QTYPE.A) == ["10.96.0.10"]
    assert rdatas(await dns.q(f"dns-version.{D}", "TXT"), QTYPE.TXT) == ['"1.1.0"']


async def test_reverse_lookup_of_cluster_ips_and_endpoints(make_dns: Any) -> None:
    dns = await make_dns([service("web", cluster_ip="10.96.0.20"), *HEADLESS])
    assert rdatas(await dns.q("20.0.96.10.in-addr.arpa", "PTR"), QTYPE.PTR) == [f"web.default.svc.{D}."]
    assert rdatas(await dns.q("5.1.244.10.in-addr.arpa", "PTR"), QTYPE.PTR) == [f"db-0.db.default.svc.{D}."]
    r = await dns.q("99.99.99.10.in-addr.arpa", "PTR")  # not ours and no upstream
    assert r.header.rcode == RCODE.REFUSED


async def test_custom_cluster_domain(make_dns: Any) -> None:
    dns = await make_dns([service("web", cluster_ip="10.96.0.20")], cluster_domain="corp.example")
    assert rdatas(await dns.q("web.default.svc.corp.example"), QTYPE.A) == ["10.96.0.20"]
    assert (await dns.q(f"web.default.svc.{D}")).header.rcode == RCODE.REFUSED


async def test_outside_names_refused_without_upstream(make_dns: Any) -> None:
    dns = await make_dns([])
    r = await dns.q("www.example.com")
    assert r.header.rcode == RCODE.REFUSED and not r.rr and r.header.aa == 0 and r.header.ra == 0


async def test_outside_names_forwarded_over_udp_and_tcp(make_dns: Any) -> None:
    up = FakeUpstream()
    await up.start()
    try:
        dns = await make_dns([], upstream=f"127.0.0.1:{up.port}")
        r = await dns.q("www.example.com")
        assert rdatas(r, QTYPE.A) == [UPSTREAM_ANSWER] and r.header.ra == 1
        r = await dns.q("www.example.com", tcp=True)
        assert rdatas(r, QTYPE.A) == [UPSTREAM_ANSWER]
        r = await dns.q("nx.example.com")
        assert r.header.rcode == RCODE.NXDOMAIN
        assert [p for p, _, _ in up.queries] == ["udp", "tcp", "udp"]
    finally:
        await up.stop()


async def test_dead_upstream_is_servfail(make_dns: Any) -> None:
    up = FakeUpstream()
    await up.start()
    port = up.port
    await up.stop()  # nothing listens there now: ICMP port unreachable or a timeout
    dns = await make_dns([], upstream=f"127.0.0.1:{port}")
    r = await dns.q("www.example.com")
    assert r.header.rcode == RCODE.SERVFAIL
    assert (await dns.q(f"nope.default.svc.{D}")).header.rcode == RCODE.NXDOMAIN  # still serving


async def test_watch_changes_reach_answers(make_dns: Any, fake: Any) -> None:
    dns = await make_dns([service("web", cluster_ip="10.96.0.20"), *HEADLESS])
    assert rdatas(await dns.q(f"web.default.svc.{D}"), QTYPE.A) == ["10.96.0.20"]  # now cached
    await fake.delete(SERVICES, "web", namespace="default")
    await dns.until(lambda: dns.app.index.service("default", "web") is None, "service web leaves the index")
    assert is_nxdomain(await dns.q(f"web.default.svc.{D}"))
    # an endpoint turning ready is answered at once
    eps = await fake.get(ENDPOINTSLICES, "db-abcde", namespace="default")
    eps["endpoints"][2]["conditions"]["ready"] = True
    await fake.update(ENDPOINTSLICES, eps)
    await dns.until(lambda: len(dns.app.index.endpoints("default", "db")) == 3, "third endpoint ready")
    assert rdatas(await dns.q(f"db.default.svc.{D}"), QTYPE.A) == ["10.244.1.5", "10.244.2.7", "10.244.3.9"]
    # a new Service resolves
    await fake.create(SERVICES, service("api", cluster_ip="10.96.0.40"))
    await dns.until(lambda: dns.app.index.service("default", "api") is not None, "service api arrives")
    assert rdatas(await dns.q(f"api.default.svc.{D}"), QTYPE.A) == ["10.96.0.40"]


async def test_endpoints_merged_over_slices(make_dns: Any) -> None:
    dns = await make_dns([
        service("big", cluster_ip="None"),
        endpoint_slice("big", name="big-1", endpoints=[ep("10.244.1.1"), ep("10.244.1.2")]),
        endpoint_slice("big", name="big-2", endpoints=[ep("10.244.1.2"), ep("10.244.1.3")]),
    ])
    assert rdatas(await dns.q(f"big.default.svc.{D}"), QTYPE.A) == ["10.244.1.1", "10.244.1.2", "10.244.1.3"]


async def test_tcp_answers(make_dns: Any) -> None:
    dns = await make_dns([service("web", cluster_ip="10.96.0.20")])
    r = await dns.q(f"web.default.svc.{D}", tcp=True)
    assert rdatas(r, QTYPE.A) == ["10.96.0.20"] and r.header.tc == 0


async def test_large_answers_truncate_over_udp(make_dns: Any) -> None:
    eps = [ep(f"10.244.{i // 200}.{i % 200 + 1}") for i in range(120)]
    dns = await make_dns([service("many", cluster_ip="None"), endpoint_slice("many", endpoints=eps)])
    name = f"many.default.svc.{D}"
    r = await dns.q(name)  # plain UDP: 512 bytes
    assert r.header.tc == 1 and 0 < len(r.rr) < 120
    assert len(r.pack()) <= 512
    r = await dns.q(name, edns=1232)  # EDNS0 raises the limit; still not enough for 120 records
    assert r.header.tc == 1 and len(r.rr) > 40 and len(r.pack()) <= 1232
    assert any(a.rtype == QTYPE.OPT for a in r.ar)
    r = await dns.q(name, edns=4096)
    assert r.header.tc == 0 and len(r.rr) == 120
    r = await dns.q(name, tcp=True)
    assert r.header.tc == 0 and len(r.rr) == 120
