"""Prometheus metrics of the DNS server, named and labelled as CoreDNS's (plugin/metrics), and the
small HTTP endpoint that serves them with /healthz and /readyz.

Each server gets its own CollectorRegistry so several can live in one process (tests).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

# CoreDNS's request duration buckets: prometheus.ExponentialBuckets(0.00025, 2, 16).
DURATION_BUCKETS = tuple(0.00025 * 2**i for i in range(16))

# CoreDNS reports these types by name and everything else as "other" (plugin/metrics/vars).
MONITORED_TYPES = frozenset({"A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT", "ANY",
                             "HTTPS", "SVCB", "NAPTR", "DS", "DNSKEY", "IXFR", "AXFR"})


class Metrics:
    def __init__(self, server: str) -> None:
        self.server = server
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "coredns_dns_requests_total", "Counter of DNS requests made per zone, protocol and family.",
            ["server", "zone", "proto", "family", "type"], registry=self.registry)
        self.responses = Counter(
            "coredns_dns_responses_total", "Counter of response status codes.",
            ["server", "zone", "rcode"], registry=self.registry)
        self.duration = Histogram(
            "coredns_dns_request_duration_seconds", "Histogram of the time (in seconds) each request took.",
            ["server", "zone", "type"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.dropped = Counter(
            "nodeagent_dns_dropped_total", "Queries dropped without an answer, by reason.",
            ["server", "reason"], registry=self.registry)
        self.forward_responses = Counter(
            "coredns_forward_responses_total", "Counter of responses received from the upstream, by rcode.",
            ["to", "rcode"], registry=self.registry)
        self.cache_entries = Gauge(
            "nodeagent_dns_answer_cache_entries", "Answers held by the answer cache.",
            ["server"], registry=self.registry)

        # labels() costs a few microseconds per call: keep the children per label set
        self._children: dict[tuple[str, str, str, int, str, str], tuple[Any, Any, Any]] = {}

    def observe(self, zone: str, proto: str, family: int, qtype: str, rcode: str, seconds: float) -> None:
        key = (self.server, zone, proto, family, qtype, rcode)
        children = self._children.get(key)
        if children is None:
            qt = qtype if qtype in MONITORED_TYPES else "other"
            children = (self.requests.labels(self.server, zone, proto, str(family), qt),
                        self.responses.labels(self.server, zone, rcode),
                        self.duration.labels(self.server, zone, qt))
            self._children[key] = children
        children[0].inc()
        children[1].inc()
        children[2].observe(seconds)

    def drop(self, reason: str) -> None:
        self.dropped.labels(self.server, reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def serve_http(metrics: Metrics, host: str, port: int, healthy: Callable[[], bool],
                     ready: Callable[[], bool]) -> Callable[[], object]:
    """Serve /metrics, /healthz and /readyz; returns an async callable that stops the server."""
    from aiohttp import web

    async def metrics_handler(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def check(fn: Callable[[], bool]) -> Callable[[web.Request], object]:
        async def handler(_: web.Request) -> web.Response:
            ok = fn()
            return web.Response(status=200 if ok else 503, text="ok" if ok else "not ok")
        return handler

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", check(healthy))  # type: ignore[arg-type]
    app.router.add_get("/readyz", check(ready))  # type: ignore[arg-type]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("metrics listening addr=%s:%d", host, port)
    return runner.cleanup
