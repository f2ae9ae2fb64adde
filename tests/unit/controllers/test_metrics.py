"""/metrics and /healthz with upstream metric names."""

from __future__ import annotations

import asyncio
import socket
import urllib.request

from nodeagent.client.workqueue import WorkQueue
from nodeagent.controllers.metrics import Metrics, serve


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


async def test_metrics_endpoint_reports_queues_and_scheduler_figures() -> None:
    m = Metrics()
    q = WorkQueue(name="deployment")
    m.register_queue("deployment", q)
    q.add("default/a")
    q.add("default/b")
    q.add("default/a")  # deduplicated: not counted as an add
    m.schedule_attempts.labels("scheduled", "default-scheduler").inc()
    m.pod_scheduling_duration.labels("1").observe(0.05)
    port = _free_port()
    runner = await serve(m, port, lambda: True, host="127.0.0.1")
    try:
        text = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
        health = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/healthz")
    finally:
        await runner.cleanup()
    assert 'workqueue_depth{name="deployment"} 2.0' in text
    assert 'workqueue_adds_total{name="deployment"} 2.0' in text
    assert 'scheduler_schedule_attempts_total{profile="default-scheduler",result="scheduled"} 1.0' in text
    assert 'scheduler_pod_scheduling_duration_seconds_bucket{attempts="1",le="0.08"} 1.0' in text
    assert health == "ok"
