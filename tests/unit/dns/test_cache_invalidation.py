"""Cached answers are dropped by what their resolution read: a watch event for one Service leaves
every other cached answer in place, and every answer that read the changed Service (directly, through
an ExternalName, through its namespace or the reverse map) is answered anew."""

from __future__ import annotations

from typing import Any

from dnslib import QTYPE, RCODE

from nodeagent.machinery.kinds import ENDPOINTSLICES, SERVICES
from tests.helpers.dns_client import endpoint_slice, ep, make_query, service

D = "cluster.local"


def cached(dns: Any, name: str, qtype: str = "A") -> bool:
    return bytes(make_query(name, qtype).pack()[2:]) in dns.app.handler.udp_cache


def rdatas(r: Any) -> list[str]:
    return sorted(str(rr.rdata) for rr in r.rr)


async def warm(dns: Any, *queries: tuple[str, str]) -> None:
    for name, qtype in queries:
        await dns.q(name, qtype)
        assert cached(dns, name, qtype), name


async def test_a_slice_change_drops_only_its_service_answers(make_dns: Any, fake: Any) -> None:
    dns = await make_dns([service("web", cluster_ip="10.96.0.20"), service("db", cluster_ip="None"),
                          endpoint_slice("db", endpoints=[ep("10.244.1.5")])])
    outside = f"www.example.com.default.svc.{D}"  # a search-path expansion: NXDOMAIN whatever changes
    await warm(dns, (f"web.default.svc.{D}", "A"), (f"db.default.svc.{D}", "A"), (outside, "A"))
    eps = await fake.get(ENDPOINTSLICES, "db-abcde", namespace="default")
    eps["endpoints"].append(ep("10.244.2.7"))
    await fake.update(ENDPOINTSLICES, eps)
    await dns.until(lambda: not cached(dns, f"db.default.svc.{D}"), "db's answer dropped")
    assert cached(dns, f"web.default.svc.{D}") and cached(dns, outside)
    assert rdatas(await dns.q(f"db.default.svc.{D}")) == ["10.244.1.5", "10.244.2.7"]


async def test_negative_answers_follow_the_names_they_looked_up(make_dns: Any, fake: Any) -> None:
    dns = await make_dns([service("web", cluster_ip="10.96.0.20")])
    await warm(dns, (f"api.default.svc.{D}", "A"), (f"svc.other.svc.{D}", "A"), (f"other.svc.{D}", "A"),
               (f"web.default.svc.{D}", "A"))
    assert (await dns.q(f"other.svc.{D}")).header.rcode == RCODE.NXDOMAIN  # no Service in namespace other
    await fake.create(SERVICES, service("api", cluster_ip="10.96.0.40"))
    await dns.until(lambda: not cached(dns, f"api.default.svc.{D}"), "api's NXDOMAIN dropped")
    assert rdatas(await dns.q(f"api.default.svc.{D}")) == ["10.96.0.40"]
    assert cached(dns, f"other.svc.{D}") and cached(dns, f"web.default.svc.{D}")
    await fake.create(SERVICES, service("svc", ns="other", cluster_ip="10.96.0.50"))
    await dns.until(lambda: not cached(dns, f"other.svc.{D}"), "the namespace's NXDOMAIN dropped")
    r = await dns.q(f"other.svc.{D}")
    assert r.header.rcode == RCODE.NOERROR and not r.rr  # the namespace exists now: NODATA
    assert rdatas(await dns.q(f"svc.other.svc.{D}")) == ["10.96.0.50"]


async def test_external_name_and_ptr_answers_follow_their_targets(make_dns: Any, fake: Any) -> None:
    dns = await make_dns([service("web", cluster_ip="10.96.0.20"),
                          service("alias", cluster_ip=None, type="ExternalName", externalName=f"web.default.svc.{D}"),
                          service("other", cluster_ip="10.96.0.30")])
    await warm(dns, (f"alias.default.svc.{D}", "A"), ("20.0.96.10.in-addr.arpa", "PTR"),
               (f"other.default.svc.{D}", "A"))
    web = await fake.get(SERVICES, "web", namespace="default")
    await fake.delete(SERVICES, "web", namespace="default")
    await dns.until(lambda: not cached(dns, f"alias.default.svc.{D}"), "the alias's answer dropped")
    r = await dns.q(f"alias.default.svc.{D}")
    assert [rr.rtype for rr in r.rr] == [QTYPE.CNAME] and r.header.rcode == RCODE.NXDOMAIN
    assert not cached(dns, "20.0.96.10.in-addr.arpa", "PTR")
    assert (await dns.q("20.0.96.10.in-addr.arpa", "PTR")).header.rcode == RCODE.REFUSED  # no longer ours
    assert cached(dns, f"other.default.svc.{D}")
    web["metadata"].pop("resourceVersion", None)
    await fake.create(SERVICES, web)
    await dns.until(lambda: dns.app.index.service("default", "web") is not None, "web is back")
    assert rdatas(await dns.q(f"alias.default.svc.{D}")) == ["10.96.0.20", f"web.default.svc.{D}."]


def test_cached_answers_equal_fresh_ones_after_random_changes() -> None:
    """Random Service and EndpointSlice events over a small universe; after each, every query answered
    through the cache equals the same query resolved with an empty cache (no Dep is missed)."""
    import random

    from nodeagent.dns.index import ClusterIndex
    from nodeagent.dns.metrics import Metrics
    from nodeagent.dns.resolver import Resolver
    from nodeagent.dns.server import DnsHandler

    rng = random.Random(23)
    index = ClusterIndex()
    resolver = Resolver(index, D)
    cached_h, fresh_h = DnsHandler(resolver, Metrics("a")), DnsHandler(resolver, Metrics("b"))
    names = [(n, ns) for n in ("a", "b", "c") for ns in ("x", "y")]
    ips = [f"10.96.0.{i}" for i in range(1, 5)]
    queries = [bytes(make_query(q, t).pack()) for q, t in [
        *((f"{n}.{ns}.svc.{D}", t) for n, ns in names for t in ("A", "SRV")),
        (f"x.svc.{D}", "A"), (f"y.svc.{D}", "A"), (f"h0.a.x.svc.{D}", "A"), (f"_http._tcp.b.y.svc.{D}", "SRV"),
        *((".".join(reversed(ip.split("."))) + ".in-addr.arpa", "PTR") for ip in ips),
        ("5.1.244.10.in-addr.arpa", "PTR")]]
    services: dict[tuple[str, str], dict[str, Any]] = {}
    slices: dict[tuple[str, str], dict[str, Any]] = {}
    for step in range(300):
        n, ns = rng.choice(names)
        kind = rng.random()
        if kind < 0.45:
            shape = rng.random()
            if shape < 0.4:
                svc = service(n, ns=ns, cluster_ip=rng.choice(ips))
            elif shape < 0.7:
                svc = service(n, ns=ns, cluster_ip="None")
            else:
                t, tns = rng.choice(names)
                svc = service(n, ns=ns, cluster_ip=None, type="ExternalName", externalName=f"{t}.{tns}.svc.{D}")
            if (n, ns) in services:
                index.service_updated(services[(n, ns)], svc)
            else:
                index.service_added(svc)
            services[(n, ns)] = svc
        elif kind < 0.6 and (n, ns) in services:
            index.service_deleted(services.pop((n, ns)))
        elif kind < 0.9:
            eps = endpoint_slice(n, ns=ns, endpoints=[ep(f"10.244.1.{rng.randrange(1, 7)}",
                                                         hostname=rng.choice([None, "h0"]),
                                                         ready=rng.choice([True, None, False]))])
            if (n, ns) in slices:
                index.slice_updated(slices[(n, ns)], eps)
            else:
                index.slice_added(eps)
            slices[(n, ns)] = eps
        elif (n, ns) in slices:
            index.slice_deleted(slices.pop((n, ns)))
        for q in rng.sample(queries, 8):
            got = cached_h.handle_local(q, "udp")
            fresh_h.udp_cache.clear()
            want = fresh_h.handle_local(q, "udp")
            assert isinstance(got, bytes | bytearray) and isinstance(want, bytes | bytearray)
            assert bytes(got) == bytes(want), f"step {step}: stale cached answer for {q!r}"
