"""/metrics (Prometheus text) and /healthz (upstream's JSON body, 503 when syncing has stalled)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nodeagent.proxy.metrics import Health, ProxyMetrics


def _ts(t: float | None) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z") if t else ""


def healthz_app(health: Health) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        ok = health.healthy()
        body = {"lastUpdated": _ts(health.last_updated), "currentTime": _ts(health.clock()), "nodeEligible": True}
        return web.Response(status=200 if ok else 503, text=json.dumps(body), content_type="application/json")

    async def livez(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", livez)
    return app


def metrics_app(metrics: ProxyMetrics, health: Health) -> web.Application:
    async def handle(_: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(metrics.registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    app = healthz_app(health)  # upstream serves /healthz on the metrics port too
    app.router.add_get("/metrics", handle)
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
