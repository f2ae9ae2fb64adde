"""/metrics (Prometheus text), /healthz and /livez with upstream's JSON bodies
(pkg/proxy/healthcheck/proxier_health.go): 503 when syncing has stalled; /healthz also when this node
is not eligible for load-balancer traffic (being deleted)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nodeagent.proxy.metrics import Health, ProxyMetrics

# both health servers answer with these (X-Content-Type-Options keeps browsers from sniffing)
JSON_HEADERS = {"X-Content-Type-Options": "nosniff"}


def _ts(t: float | None) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z") if t else ""


def json_response(status: int, body: dict[str, object]) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json",
                        headers=JSON_HEADERS)


def _times(health: Health, healthy: bool) -> dict[str, object]:
    now = health.clock()
    # while healthy, upstream reports lastUpdated as now: older releases meant "the sync loop ran
    # recently", and clients compare the two (the metrics have the real last sync time)
    return {"lastUpdated": _ts(now if healthy else health.last_updated), "currentTime": _ts(now)}


def healthz_app(health: Health, metrics: ProxyMetrics | None = None) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        eligible = health.node_eligible
        ok = health.healthy() and eligible
        if metrics is not None:
            metrics.healthz.labels(code="200" if ok else "503").inc()
        return json_response(200 if ok else 503, {**_times(health, ok), "nodeEligible": eligible})

    async def livez(_: web.Request) -> web.Response:
        # liveness is the sync loop's alone: a node being drained must not get its proxy restarted
        ok = health.healthy()
        if metrics is not None:
            metrics.livez.labels(code="200" if ok else "503").inc()
        return json_response(200 if ok else 503, _times(health, ok))

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", livez)
    return app


def metrics_app(metrics: ProxyMetrics, health: Health) -> web.Application:
    async def handle(_: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(metrics.registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    app = healthz_app(health, metrics)  # upstream serves /healthz on the metrics port too
    app.router.add_get("/metrics", handle)
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
