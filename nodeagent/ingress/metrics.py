"""Metrics of the ingress controller, named as ingress-nginx's (without its nginx_ prefix: the data
plane here is HAProxy): reloads, reload errors, the last reload's result, time and config hash, the
problems found on Ingresses, endpoint changes applied without a reload, and requests per Ingress
and Service by status class, read from HAProxy's per-backend counters (`show stat`) at each scrape.
A reload starts a worker with zeroed counters; the counts of the old one are carried over so the
request counters only go up."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, Metric

log = logging.getLogger(__name__)

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")


class _Requests:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        fam = CounterMetricFamily("ingress_controller_requests", "The total number of client requests, by the "
                                  "Ingress and Service that served them and the response's status class.",
                                  labels=["namespace", "ingress", "service", "status"])
        m = self.metrics
        keys = set(m.base) | set(m.current)
        for k in sorted(keys):
            fam.add_metric(list(k), m.base.get(k, 0) + m.current.get(k, 0))
        yield fam


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reloads = Counter("ingress_controller_success", "Cumulative number of Ingress controller reload "
                               "operations", registry=r)
        self.reload_errors = Counter("ingress_controller_errors", "Cumulative number of Ingress controller errors "
                                     "during reload operations (a config that failed its check counts)", registry=r)
        self.last_ok = Gauge("ingress_controller_config_last_reload_successful",
                             "Whether the last configuration reload attempt was successful", registry=r)
        self.last_ok_time = Gauge("ingress_controller_config_last_reload_successful_timestamp_seconds",
                                  "Timestamp of the last successful configuration reload.", registry=r)
        self.config_hash = Gauge("ingress_controller_config_hash", "Running configuration hash actually running",
                                 registry=r)
        self.endpoint_updates = Counter("ingress_controller_endpoint_updates",
                                        "Backends whose endpoints changed through the runtime API, without a reload",
                                        registry=r)
        self.problems = Gauge("ingress_controller_ingress_problems",
                              "Problems found on an Ingress (each one is also an Event on it)",
                              ["namespace", "ingress", "reason"], registry=r)
        self.base: dict[tuple[str, str, str, str], int] = {}
        self.current: dict[tuple[str, str, str, str], int] = {}
        self.registry.register(_Requests(self))  # type: ignore[arg-type]
        self.backend_labels: dict[str, tuple[str, str, str]] = {}  # backend -> namespace, ingress, service

    def worker_replaced(self) -> None:
        """A reload: the new worker counts from zero."""
        for k, v in self.current.items():
            self.base[k] = self.base.get(k, 0) + v
        self.current = {}

    def read_stats(self, csv_text: str) -> None:
        """HAProxy's `show stat` CSV (management.txt section 9.1): hrsp_1xx .. hrsp_other per backend."""
        rows = csv.DictReader(io.StringIO(csv_text.lstrip("# ")))
        current: dict[tuple[str, str, str, str], int] = {}
        for row in rows:
            if row.get("svname") != "BACKEND":
                continue
            labels = self.backend_labels.get(row.get("pxname") or "")
            if labels is None:
                continue
            for cls in STATUS_CLASSES:
                try:
                    n = int(row.get(f"hrsp_{cls}") or 0)
                except ValueError:
                    n = 0
                if n:
                    k = (*labels, cls)
                    current[k] = current.get(k, 0) + n
        self.current = current

    def set_problems(self, problems: dict[tuple[str, str, str], int]) -> None:
        self.problems.clear()
        for (ns, name, reason), n in problems.items():
            self.problems.labels(ns, name, reason).set(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def serve(metrics: Metrics, host: str, port: int, refresh: Callable[[], Awaitable[None]],
                healthy: Callable[[], bool]) -> Callable[[], Any]:
    from aiohttp import web

    async def metrics_handler(_: web.Request) -> web.Response:
        try:
            await refresh()
        except Exception as e:  # a scrape still answers with what we have
            log.debug("reading haproxy stats failed error=%s", e)
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(_: web.Request) -> web.Response:
        ok = healthy()
        return web.Response(status=200 if ok else 503, text="ok" if ok else "haproxy is not running")

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("metrics listening addr=%s:%d", host, port)
    return runner.cleanup
