"""The Pod status a sync writes: built from the runtime status (status.py) and written to the
apiserver only when it changed (upstream status/status_manager.go).

Beyond the pure generator it adds what lives on the node: probe results, the worker's waiting
reasons, terminated containers' messages (their termination-log file, or with
FallbackToLogsOnError the end of their log). It tells the start-up tracker (pod_startup.py) which
status the apiserver accepted, and times each write (kubelet_pod_status_sync_duration_seconds).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from nodeagent.clock import Clock
from nodeagent.kubelet import probes as probes_mod
from nodeagent.kubelet.config import HostInfo, KubeletConfig
from nodeagent.kubelet.metrics import KubeletMetrics
from nodeagent.kubelet.model import ContainerState, PodRuntimeStatus
from nodeagent.kubelet.pod_startup import PodStartupTracker
from nodeagent.kubelet.pod_workers import PodWorker
from nodeagent.kubelet.runtime_service import RuntimeService
from nodeagent.kubelet.status import StatusInputs, generate_pod_status
from nodeagent.kubelet.volumes import read_termination_message
from nodeagent.machinery.kinds import PODS

log = logging.getLogger(__name__)

_MESSAGE_CACHE_MAX = 4096


class StatusManager:
    def __init__(self, client: Any, runtime: RuntimeService, probes: probes_mod.ProbeManager, clock: Clock,
                 metrics: KubeletMetrics, config: KubeletConfig, host: HostInfo, startup: PodStartupTracker) -> None:
        self.client = client
        self.runtime = runtime
        self.probes = probes
        self.clock = clock
        self.metrics = metrics
        self.config = config
        self.host = host
        self.startup = startup
        self.last_status: dict[str, dict[str, Any]] = {}  # pod uid -> the status last written
        self._messages: dict[str, str] = {}  # container id -> termination message read

    def forget(self, uid: str) -> None:
        self.last_status.pop(uid, None)
        self.startup.forget(uid)

    def _termination_messages(self, pod: dict[str, Any], rs: PodRuntimeStatus) -> None:
        spec = pod.get("spec", {})
        specs = {c["name"]: c for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])}
        for c in rs.containers:
            if c.state != ContainerState.EXITED or c.message or c.name not in specs:
                continue
            msg = self._messages.get(c.id)
            if msg is None:
                log_file = os.path.join(self.runtime.pod_log_directory(pod), c.name, f"{c.attempt}.log")
                msg = read_termination_message(self.config.pods_dir, rs.uid, specs[c.name], c.attempt, c.exit_code,
                                               log_file)
                if len(self._messages) > _MESSAGE_CACHE_MAX:
                    self._messages.clear()
                self._messages[c.id] = msg
            c.message = msg

    def build(self, w: PodWorker, pod: dict[str, Any], rs: PodRuntimeStatus) -> dict[str, Any]:
        self._termination_messages(pod, rs)
        ready: dict[str, bool] = {}
        started: dict[str, bool] = {}
        for c in pod.get("spec", {}).get("containers") or []:
            latest = rs.latest(c["name"])
            cid = latest.id if latest else ""
            if self.probes.has_probe(w.uid, c["name"], probes_mod.READINESS):
                ready[c["name"]] = self.probes.result(w.uid, c["name"], probes_mod.READINESS, cid) is True
            if self.probes.has_probe(w.uid, c["name"], probes_mod.STARTUP):
                started[c["name"]] = self.probes.result(w.uid, c["name"], probes_mod.STARTUP, cid) is True
        # Waiting reasons only hold while the container has not been restarted since.
        for name in list(w.waiting):
            latest = rs.latest(name)
            if latest is not None and latest.state == ContainerState.RUNNING:
                w.waiting.pop(name)
        old = dict(pod)
        if w.uid in self.last_status:
            old = {**pod, "status": {**(pod.get("status") or {}), **self.last_status[w.uid]}}
        terminal = bool(pod.get("metadata", {}).get("deletionTimestamp")) and not any(
            c.state == ContainerState.RUNNING for c in rs.containers)
        inp = StatusInputs(host_ip=self.host.host_ip, runtime_name=self.host.runtime_name, ready=ready,
                           started=started, waiting=dict(w.waiting), now=self.clock.now(), terminal=terminal)
        return generate_pod_status(old, rs, inp)

    async def write(self, w: PodWorker, pod: dict[str, Any], rs: PodRuntimeStatus) -> None:
        from nodeagent.client import NotFound

        status = self.build(w, pod, rs)
        if self.last_status.get(w.uid) == status:
            return
        started = time.monotonic()
        md = pod["metadata"]
        # A merge patch of the status subresource; the uid makes it fail on a re-created namesake.
        patch = {"metadata": {"uid": w.uid}, "status": status}
        try:
            await self.client.patch(PODS, md["name"], patch, namespace=md.get("namespace", "default"),
                                    patch_type="merge", subresource="status")
        except NotFound:
            return
        self.metrics.pod_status_sync_duration.observe(time.monotonic() - started)
        self.last_status[w.uid] = status
        self.startup.status_written(w.uid, status, pod.get("spec") or {})
