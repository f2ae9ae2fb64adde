"""Liveness, readiness and startup probes (upstream pkg/kubelet/prober).

One worker per (pod, container, probe type) runs the probe every periodSeconds once
initialDelaySeconds have passed since the container started, counts consecutive results against
successThreshold / failureThreshold, and publishes the result. exec probes go through CRI ExecSync;
httpGet and tcpSocket connect from inside the pod's network namespace (nodeagent.netns), so they
work whether or not the kubelet's own namespace routes to the pod network.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import random
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nodeagent import netns
from nodeagent.clock import Clock
from nodeagent.kubelet.runtime_service import RuntimeService

log = logging.getLogger(__name__)

LIVENESS, READINESS, STARTUP = "liveness", "readiness", "startup"
PROBE_FIELDS = {LIVENESS: "livenessProbe", READINESS: "readinessProbe", STARTUP: "startupProbe"}


@dataclass
class ProbeTarget:
    """Where a container runs, as the probe worker needs it."""

    container_id: str
    running: bool
    started_at: float
    netns_path: str  # "" for hostNetwork pods: probe from the kubelet's own namespace
    pod_ip: str


TargetGetter = Callable[[str, str], ProbeTarget | None]  # (pod uid, container name)


def _resolve_port(port: Any, container: dict[str, Any]) -> int:
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"named port {port!r} not found in container {container.get('name')}")


def _http_probe(host: str, port: int, path: str, scheme: str, headers: dict[str, str], timeout: float) -> tuple[bool, str]:
    conn: http.client.HTTPConnection
    if scheme.upper() == "HTTPS":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # upstream does not verify probe certificates either
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        hdrs = {"User-Agent": "kube-probe/1.32", "Accept": "*/*", **headers}
        conn.request("GET", path or "/", headers=hdrs)
        resp = conn.getresponse()
        body = resp.read(10 * 1024)
        if 200 <= resp.status < 400:
            return True, ""
        return False, f"HTTP probe failed with statuscode: {resp.status} {body[:100]!r}"
    except OSError as e:
        return False, f'Get "{scheme.lower()}://{host}:{port}{path}": {e}'
    finally:
        conn.close()


def _tcp_probe(host: str, port: int, timeout: float) -> tuple[bool, str]:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as e:
        return False, f"dial tcp {host}:{port}: {e}"


async def run_probe(runtime: RuntimeService, probe: dict[str, Any], container: dict[str, Any],
                    target: ProbeTarget) -> tuple[bool, str]:
    """Run one probe attempt; (success, message for the Unhealthy event)."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    if "exec" in probe:
        cmd = list(probe["exec"].get("command") or [])
        try:
            res = await runtime.exec_sync(target.container_id, cmd, timeout)
        except Exception as e:
            return False, f"exec probe failed: {e}"
        if res.exit_code == 0:
            return True, ""
        out = (res.stdout + res.stderr).decode("utf-8", "replace").strip()
        return False, f"command {cmd} exited with {res.exit_code}: {out}"
    if "httpGet" in probe:
        g = probe["httpGet"]
        port = _resolve_port(g.get("port"), container)
        host = g.get("host") or target.pod_ip or "127.0.0.1"
        headers = {h["name"]: h["value"] for h in g.get("httpHeaders") or []}
        args = (host, port, g.get("path", "/"), g.get("scheme", "HTTP"), headers, timeout)
        if target.netns_path:
            return await netns.arun_in_netns(target.netns_path, _http_probe, *args)
        return await asyncio.to_thread(_http_probe, *args)
    if "tcpSocket" in probe:
        t = probe["tcpSocket"]
        port = _resolve_port(t.get("port"), container)
        host = t.get("host") or target.pod_ip or "127.0.0.1"
        if target.netns_path:
            return await netns.arun_in_netns(target.netns_path, _tcp_probe, host, port, timeout)
        return await asyncio.to_thread(_tcp_probe, host, port, timeout)
    return False, f"probe has no handler (exec, httpGet, tcpSocket): {sorted(probe)}"


class ProbeWorker:
    """prober/worker.go: one probe of one container."""

    def __init__(self, manager: ProbeManager, pod: dict[str, Any], container: dict[str, Any], kind: str) -> None:
        self.m = manager
        self.pod = pod
        self.uid = pod["metadata"]["uid"]
        self.container = container
        self.name = container["name"]
        self.kind = kind
        self.probe: dict[str, Any] = container[PROBE_FIELDS[kind]]
        self.container_id = ""
        self.result_run = 0
        self.last_result: bool | None = None
        self.on_hold = False
        self.task: asyncio.Task[None] | None = None

    @property
    def period(self) -> float:
        return float(self.probe.get("periodSeconds") or 10)

    def _initial(self) -> bool | None:
        # Before the first probe: liveness succeeds, readiness fails, startup is unknown.
        return {LIVENESS: True, READINESS: False, STARTUP: None}[self.kind]

    def _set(self, result: bool | None) -> None:
        key = (self.uid, self.name, self.kind)
        new = (self.container_id, result)
        changed = self.m.results.get(key) != new
        self.m.results[key] = new
        if changed:
            self.m.changed(self.uid, self.kind)

    async def do_probe(self) -> bool:
        """One iteration; returns False when the worker should stop. (doProbe in worker.go)"""
        target = self.m.target(self.uid, self.name)
        if target is None or not target.running:
            if self.kind == READINESS:
                self._set(False)  # a container that is not running is not ready
            return True
        if target.container_id != self.container_id:
            # A new container (first start or restart) starts from scratch, as upstream resets
            # its worker when the container ID changes.
            self.container_id = target.container_id
            self.result_run = 0
            self.last_result = None
            self.on_hold = False
            self._set(self._initial())
        if self.on_hold:
            return True  # liveness/startup failed: wait for the restarted container
        now = self.m.clock.now()
        if self.kind != STARTUP and PROBE_FIELDS[STARTUP] in self.container \
                and self.m.result(self.uid, self.name, STARTUP, self.container_id) is not True:
            return True  # liveness and readiness wait for the startup probe to succeed
        if self.kind == STARTUP and self.m.result(self.uid, self.name, STARTUP, self.container_id) is True:
            return True  # a startup probe stops once it has succeeded
        if now - target.started_at < float(self.probe.get("initialDelaySeconds") or 0):
            return True
        ok, message = await run_probe(self.m.runtime, self.probe, self.container, target)
        if ok == self.last_result:
            self.result_run += 1
        else:
            self.last_result = ok
            self.result_run = 1
        if not ok:
            self.m.unhealthy(self.pod, self.name, self.kind, message)
        threshold = int(self.probe.get("successThreshold") or 1) if ok else int(self.probe.get("failureThreshold") or 3)
        if self.result_run < threshold:
            return True
        self._set(ok)
        if not ok and self.kind in (LIVENESS, STARTUP):
            self.result_run = 0
            self.on_hold = True
        return True

    async def run(self) -> None:
        # Spread the first probes over a period, as upstream's jitter does.
        await asyncio.sleep(random.uniform(0, min(self.period, 1.0)))
        while True:
            try:
                if not await self.do_probe():
                    return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("probe error pod_uid=%s container=%s probe=%s err=%s", self.uid, self.name, self.kind, e)
            await asyncio.sleep(self.period)


class ProbeManager:
    def __init__(self, runtime: RuntimeService, clock: Clock, target: TargetGetter,
                 on_change: Callable[[str, str], None],
                 on_unhealthy: Callable[[dict[str, Any], str, str, str], None] | None = None) -> None:
        self.runtime = runtime
        self.clock = clock
        self.target = target
        self._on_change = on_change
        self._on_unhealthy = on_unhealthy
        # (pod uid, container name, kind) -> (container id the result is for, result)
        self.results: dict[tuple[str, str, str], tuple[str, bool | None]] = {}
        self.workers: dict[tuple[str, str, str], ProbeWorker] = {}

    def changed(self, uid: str, kind: str) -> None:
        self._on_change(uid, kind)

    def unhealthy(self, pod: dict[str, Any], name: str, kind: str, message: str) -> None:
        if self._on_unhealthy:
            self._on_unhealthy(pod, name, kind, message)

    def add_pod(self, pod: dict[str, Any], start: bool = True) -> list[ProbeWorker]:
        made = []
        uid = pod["metadata"]["uid"]
        for c in pod.get("spec", {}).get("containers") or []:
            for kind, fieldname in PROBE_FIELDS.items():
                key = (uid, c["name"], kind)
                if c.get(fieldname) and key not in self.workers:
                    w = ProbeWorker(self, pod, c, kind)
                    self.workers[key] = w
                    self.results[key] = ("", w._initial())
                    if start:
                        w.task = asyncio.get_running_loop().create_task(w.run())
                    made.append(w)
        return made

    def remove_pod(self, uid: str) -> None:
        for key in [k for k in self.workers if k[0] == uid]:
            w = self.workers.pop(key)
            if w.task:
                w.task.cancel()
            self.results.pop(key, None)

    def result(self, uid: str, name: str, kind: str, container_id: str) -> bool | None:
        """The latest result of that probe for that very container; None if there is none yet."""
        cid, r = self.results.get((uid, name, kind), ("", None))
        return r if cid == container_id else None

    def failed(self, uid: str, kind: str) -> dict[str, str]:
        """container name -> id of the container whose liveness/startup probe failed."""
        return {n: cid for (u, n, k), (cid, r) in self.results.items() if u == uid and k == kind and r is False and cid}

    def has_probe(self, uid: str, name: str, kind: str) -> bool:
        return (uid, name, kind) in self.workers

    async def stop(self) -> None:
        tasks = [w.task for w in self.workers.values() if w.task]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.workers.clear()

