"""Probes: handlers (exec through the runtime, httpGet, tcpSocket) and the worker's thresholds,
initial delay, startup gating and reset on a new container (prober/worker_test.go)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from nodeagent.clock import FakeClock
from nodeagent.kubelet.model import ExecResult
from nodeagent.kubelet.probes import LIVENESS, READINESS, STARTUP, ProbeManager, ProbeTarget, run_probe
from tests.helpers.kubelet_fake_cri import FakeRuntime


@pytest.fixture
async def http_port() -> AsyncIterator[int]:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def bad(_: web.Request) -> web.Response:
        return web.Response(status=503, text="no")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/bad", bad)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port
    finally:
        await runner.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


TARGET = ProbeTarget(container_id="c1", running=True, started_at=0.0, netns_path="", pod_ip="127.0.0.1")


async def test_http_and_tcp_handlers(http_port: int) -> None:
    rt = FakeRuntime()
    c = {"name": "c", "ports": [{"name": "web", "containerPort": http_port}]}
    assert (await run_probe(rt, {"httpGet": {"path": "/ok", "port": "web"}}, c, TARGET))[0]
    ok, msg = await run_probe(rt, {"httpGet": {"path": "/bad", "port": http_port}}, c, TARGET)
    assert not ok and "503" in msg
    assert (await run_probe(rt, {"tcpSocket": {"port": http_port}}, c, TARGET))[0]
    ok, msg = await run_probe(rt, {"tcpSocket": {"port": _free_port()}}, c, TARGET)
    assert not ok and "dial tcp" in msg


async def test_exec_handler_uses_exec_sync() -> None:
    rt = FakeRuntime()
    rt.exec_results[("check",)] = ExecResult(1, b"not yet", b"")
    ok, msg = await run_probe(rt, {"exec": {"command": ["check"]}}, {"name": "c"}, TARGET)
    assert not ok and "exited with 1" in msg and "not yet" in msg
    assert rt.calls_of("ExecSync") == ["c1"]
    assert (await run_probe(rt, {"exec": {"command": ["fine"]}}, {"name": "c"}, TARGET))[0]


def _pod(**probes: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "d", "uid": "u"},
            "spec": {"containers": [{"name": "c", **probes}]}}


class _World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.rt = FakeRuntime(self.clock)
        self.target: ProbeTarget | None = ProbeTarget("c1", True, self.clock.now(), "", "127.0.0.1")
        self.changes: list[tuple[str, str]] = []
        self.unhealthy: list[str] = []
        self.m = ProbeManager(self.rt, self.clock, lambda uid, name: self.target,
                              lambda uid, kind: self.changes.append((uid, kind)),
                              lambda pod, name, kind, msg: self.unhealthy.append(kind))


async def test_liveness_fails_after_threshold_then_holds_until_new_container() -> None:
    w = _World()
    w.rt.exec_results[("bad",)] = ExecResult(1, b"", b"")
    (worker,) = w.m.add_pod(_pod(livenessProbe={"exec": {"command": ["bad"]}, "failureThreshold": 3}), start=False)
    for _ in range(2):
        await worker.do_probe()
    assert w.m.failed("u", LIVENESS) == {}
    await worker.do_probe()
    assert w.m.failed("u", LIVENESS) == {"c": "c1"} and w.unhealthy == [LIVENESS] * 3
    calls = len(w.rt.calls_of("ExecSync"))
    await worker.do_probe()
    assert len(w.rt.calls_of("ExecSync")) == calls  # on hold: no more probing of the dead container
    w.target = ProbeTarget("c2", True, w.clock.now(), "", "127.0.0.1")  # restarted
    await worker.do_probe()
    assert w.m.failed("u", LIVENESS) == {}  # the new container starts from success
    assert w.m.result("u", "c", LIVENESS, "c2") is True


async def test_readiness_initial_delay_and_success_threshold() -> None:
    w = _World()
    (worker,) = w.m.add_pod(_pod(readinessProbe={"exec": {"command": ["ok"]}, "initialDelaySeconds": 5,
                                                 "successThreshold": 2}), start=False)
    await worker.do_probe()
    assert w.m.result("u", "c", READINESS, "c1") is False and not w.rt.calls_of("ExecSync")
    w.clock.advance(6)
    await worker.do_probe()
    assert w.m.result("u", "c", READINESS, "c1") is False  # 1 of 2 successes
    await worker.do_probe()
    assert w.m.result("u", "c", READINESS, "c1") is True
    assert ("u", READINESS) in w.changes
    w.target = ProbeTarget("c1", False, 0, "", "")  # the container stopped: not ready
    await worker.do_probe()
    assert w.m.result("u", "c", READINESS, "c1") is False


async def test_liveness_waits_for_startup() -> None:
    w = _World()
    w.rt.exec_results[("starting",)] = ExecResult(1, b"", b"")
    workers = w.m.add_pod(_pod(startupProbe={"exec": {"command": ["starting"]}, "failureThreshold": 10},
                               livenessProbe={"exec": {"command": ["live"]}}), start=False)
    live = next(x for x in workers if x.kind == LIVENESS)
    start = next(x for x in workers if x.kind == STARTUP)
    await start.do_probe()
    await live.do_probe()
    assert w.rt.calls_of("ExecSync") == ["c1"]  # only the startup probe ran
    w.rt.exec_results[("starting",)] = ExecResult(0, b"", b"")
    await start.do_probe()
    assert w.m.result("u", "c", STARTUP, "c1") is True
    await live.do_probe()
    assert len(w.rt.calls_of("ExecSync")) == 3
    n = len(w.rt.calls_of("ExecSync"))
    await start.do_probe()
    assert len(w.rt.calls_of("ExecSync")) == n  # a succeeded startup probe stops probing


async def test_remove_pod_cancels_workers() -> None:
    w = _World()
    workers = w.m.add_pod(_pod(readinessProbe={"exec": {"command": ["ok"]}, "periodSeconds": 1}))
    await asyncio.sleep(0)
    w.m.remove_pod("u")
    await asyncio.sleep(0)
    assert all(x.task is not None and x.task.cancelled() for x in workers)
    assert not w.m.workers and not w.m.results
