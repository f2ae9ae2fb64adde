"""Prometheus metrics with upstream's names, and the /metrics + /healthz endpoint.

Work queue metrics are read from the queues at scrape time (client-go's workqueue_depth and
workqueue_adds_total, labelled by queue name); scheduler metrics are kube-scheduler's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from nodeagent.client.workqueue import WorkQueue

log = logging.getLogger(__name__)


class _QueueCollector(Collector):
    def __init__(self) -> None:
        self.queues: dict[str, WorkQueue] = {}

    def collect(self) -> Iterator[Any]:
        depth = GaugeMetricFamily("workqueue_depth", "Current depth of workqueue", labels=["name"])
        adds = CounterMetricFamily("workqueue_adds_total", "Total number of adds handled by workqueue",
                                   labels=["name"])
        for name, q in sorted(self.queues.items()):
            depth.add_metric([name], len(q))
            adds.add_metric([name], q.adds_total)
        yield depth
        yield adds


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._queues = _QueueCollector()
        self.registry.register(self._queues)
        self.schedule_attempts = Counter(
            "scheduler_schedule_attempts_total",
            "Number of attempts to schedule pods, by the result.", ["result", "profile"], registry=self.registry)
        self.pod_scheduling_duration = Histogram(
            "scheduler_pod_scheduling_duration_seconds",
            "E2e latency for a pod being scheduled which may include multiple scheduling attempts.",
            ["attempts"], registry=self.registry,
            buckets=(0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96))
        self.pending_pods = Gauge("scheduler_pending_pods", "Number of pending pods, by the queue type.",
                                  ["queue"], registry=self.registry)
        self.leader = Gauge("leader_election_master_status",
                            "Gauge of if the reporting system is master of the relevant lease, 0 indicates "
                            "backup, 1 indicates master.", ["name"], registry=self.registry)

    def register_queue(self, name: str, queue: WorkQueue) -> None:
        self._queues.queues[name] = queue

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


async def serve(metrics: Metrics, port: int, healthy: Callable[[], bool], host: str = "0.0.0.0") -> Any:
    """Start the HTTP endpoint; returns the aiohttp runner (call .cleanup() to stop)."""
    from aiohttp import web

    async def get_metrics(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def get_healthz(_: web.Request) -> web.Response:
        if healthy():
            return web.Response(text="ok")
        return web.Response(text="unhealthy", status=500)

    app = web.Application()
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/readyz", get_healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("serving metrics and healthz port=%d", port)
    return runner
