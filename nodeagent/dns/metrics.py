"""Prometheus metrics of the DNS server, named and labelled as CoreDNS's (plugin/metrics), and the
small HTTP endpoint that serves them with /healthz and /readyz.

The per-query metrics (requests, responses, request duration) are plain counters in a Series per label
set, summed into Prometheus families only when /metrics is read: prometheus_client's inc() and
observe() take a lock and cost a few microseconds each, more than a cached answer itself (issue 23).
A batch of cached answers is counted with one call per Series (Series.observe_many).

Each server gets its own CollectorRegistry so several can live in one process (tests).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

log = logging.getLogger(__name__)

# CoreDNS's request duration buckets: prometheus.ExponentialBuckets(0.00025, 2, 16).
DURATION_BUCKETS = tuple(0.00025 * 2**i for i in range(16))

# CoreDNS reports these types by name and everything else as "other" (plugin/metrics/vars).
MONITORED_TYPES = frozenset({"A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT", "ANY",
                             "HTTPS", "SVCB", "NAPTR", "DS", "DNSKEY", "IXFR", "AXFR"})


class Series:
    """The counts of one (zone, proto, family, type, rcode): a request counter and its durations."""

    __slots__ = ("zone", "proto", "family", "qtype", "rcode", "count", "sum", "buckets")

    def __init__(self, zone: str, proto: str, family: int, qtype: str, rcode: str) -> None:
        self.zone, self.proto, self.family, self.rcode = zone, proto, family, rcode
        self.qtype = qtype if qtype in MONITORED_TYPES else "other"
        self.count = 0
        self.sum = 0.0
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)  # the last one is +Inf

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.sum += seconds
        self.buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1

    def observe_many(self, n: int, seconds: float) -> None:
        """n queries that each took `seconds` (a batch answered together)."""
        self.count += n
        self.sum += seconds * n
        self.buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += n


class _QueryCollector:
    """Renders the Series as CoreDNS's three per-query families."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # unchecked: the names are fixed and nothing else registers them

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        requests: dict[tuple[str, ...], int] = {}
        responses: dict[tuple[str, ...], int] = {}
        durations: dict[tuple[str, ...], tuple[list[int], float]] = {}
        for s in list(m.series_all()):
            req_key = (m.server, s.zone, s.proto, str(s.family), s.qtype)
            requests[req_key] = requests.get(req_key, 0) + s.count
            resp_key = (m.server, s.zone, s.rcode)
            responses[resp_key] = responses.get(resp_key, 0) + s.count
            dur_key = (m.server, s.zone, s.qtype)
            buckets, total = durations.get(dur_key, ([0] * len(s.buckets), 0.0))
            durations[dur_key] = ([a + b for a, b in zip(buckets, s.buckets, strict=True)], total + s.sum)
        req = CounterMetricFamily("coredns_dns_requests", "Counter of DNS requests made per zone, protocol and family.",
                                  labels=["server", "zone", "proto", "family", "type"])
        for labels, n in requests.items():
            req.add_metric(list(labels), n)
        yield req
        resp = CounterMetricFamily("coredns_dns_responses", "Counter of response status codes.",
                                   labels=["server", "zone", "rcode"])
        for labels, n in responses.items():
            resp.add_metric(list(labels), n)
        yield resp
        dur = HistogramMetricFamily("coredns_dns_request_duration_seconds",
                                    "Histogram of the time (in seconds) each request took.",
                                    labels=["server", "zone", "type"])
        for labels, (buckets, total) in durations.items():
            cumulative, acc = [], 0
            for le, n in zip([*(floatToGoString(b) for b in DURATION_BUCKETS), "+Inf"], buckets, strict=True):
                acc += n
                cumulative.append((le, acc))
            dur.add_metric(list(labels), cumulative, total)
        yield dur


class Metrics:
    def __init__(self, server: str) -> None:
        self.server = server
        self.registry = CollectorRegistry(auto_describe=True)
        self._series: dict[tuple[str, str, int, str, str], Series] = {}
        self.registry.register(_QueryCollector(self))  # type: ignore[arg-type]
        self.dropped = Counter(
            "nodeagent_dns_dropped_total", "Queries dropped without an answer, by reason.",
            ["server", "reason"], registry=self.registry)
        self.forward_responses = Counter(
            "coredns_forward_responses_total", "Counter of responses received from the upstream, by rcode.",
            ["to", "rcode"], registry=self.registry)
        self.cache_entries = Gauge(
            "nodeagent_dns_answer_cache_entries", "Answers held by the answer cache.",
            ["server"], registry=self.registry)
        self.cache_size: Callable[[], int] = lambda: 0  # set by the handler that owns the cache

    def series(self, zone: str, proto: str, family: int, qtype: str, rcode: str) -> Series:
        key = (zone, proto, family, qtype, rcode)
        s = self._series.get(key)
        if s is None:
            s = self._series[key] = Series(zone, proto, family, qtype, rcode)
        return s

    def series_all(self) -> Iterator[Series]:
        return iter(self._series.values())

    def observe(self, zone: str, proto: str, family: int, qtype: str, rcode: str, seconds: float) -> None:
        self.series(zone, proto, family, qtype, rcode).observe(seconds)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped.labels(self.server, reason).inc(n)

    def render(self) -> bytes:
        self.cache_entries.labels(self.server).set(self.cache_size())
        return generate_latest(self.registry)


async def serve_http(metrics: Metrics, host: str, port: int, healthy: Callable[[], bool],
                     ready: Callable[[], bool]) -> Callable[[], Any]:
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
