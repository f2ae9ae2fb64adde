"""The kubelet: the pod informer, the PLEG and the probes feeding one worker per pod.

This module wires the parts and routes events; the work is elsewhere: pod_workers.py (one
serialized worker per pod), sync.py (SyncPod: the plan, then numbered steps), containers.py
(start and kill containers), termination.py (graceful deletion, teardown), status_manager.py (the
status written after each sync), housekeeping.py (orphans, gauges, log rotation).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from nodeagent.clock import Clock, RealClock
from nodeagent.kubelet import probes as probes_mod
from nodeagent.kubelet.admission import admit_pod_count, is_terminal, reject_pod
from nodeagent.kubelet.backoff import Backoff
from nodeagent.kubelet.config import HostInfo, KubeletConfig
from nodeagent.kubelet.containers import Containers, grace_period
from nodeagent.kubelet.dns import read_host_resolv_conf
from nodeagent.kubelet.env import api_object_getter
from nodeagent.kubelet.housekeeping import clean_up_orphans, count_running, rotate_logs
from nodeagent.kubelet.metrics import KubeletMetrics
from nodeagent.kubelet.model import ContainerState
from nodeagent.kubelet.pleg import GenericPLEG, PodLifecycleEvent
from nodeagent.kubelet.pod_startup import PodStartupTracker
from nodeagent.kubelet.pod_workers import PodWorker, PodWorkers
from nodeagent.kubelet.runtime_service import RuntimeService
from nodeagent.kubelet.runtimeclass import RuntimeClassManager
from nodeagent.kubelet.status_manager import StatusManager
from nodeagent.kubelet.sync import PodSyncer
from nodeagent.kubelet.termination import PodTerminator
from nodeagent.kubelet.tokens import TokenManager, refresh_loop
from nodeagent.kubelet.volumes import setup_volumes
from nodeagent.machinery.kinds import PODS, SERVICES

log = logging.getLogger(__name__)


class Kubelet:
    def __init__(self, client: Any, runtime: RuntimeService, config: KubeletConfig,
                 clock: Clock | None = None, metrics: KubeletMetrics | None = None,
                 recorder: Any = None) -> None:
        from nodeagent.client import EventRecorder, Informer

        self.client = client
        self.runtime = runtime
        self.config = config
        self.clock = clock or RealClock()
        self.metrics = metrics or KubeletMetrics()
        self.recorder = recorder or EventRecorder(client, component="kubelet", host=config.node_name)
        self.host = HostInfo(config.node_ip)
        self.informer = Informer(client, PODS, field_selector=f"spec.nodeName={config.node_name}")
        self.informer.add_handlers(on_add=self._on_pod, on_update=lambda old, new: self._on_pod(new),
                                   on_delete=self._on_pod_delete)
        # Services for the pods' environment variables (enableServiceLinks, KUBERNETES_SERVICE_*).
        self.services = Informer(client, SERVICES)
        self.tokens = TokenManager(client)
        self.pleg = GenericPLEG(runtime, self.clock, on_event=self._on_pleg_event,
                                relist_period=config.pleg_relist_period,
                                relist_threshold=config.pleg_relist_threshold,
                                on_relist=self._on_relist)
        self.probes = probes_mod.ProbeManager(runtime, self.clock, self._probe_target, self._on_probe_change,
                                              self._on_unhealthy)
        self.backoff = Backoff(self.clock, config.backoff_initial, config.backoff_max)
        self.pod_workers = PodWorkers(self.sync, config.sync_frequency)
        self.workers: dict[str, PodWorker] = self.pod_workers.workers
        get_object = api_object_getter(client)
        self.startup = PodStartupTracker(self.metrics, self.clock)
        self.runtime_classes = RuntimeClassManager(client)
        self.status = StatusManager(client, runtime, self.probes, self.clock, self.metrics, config, self.host,
                                    self.startup)
        self.containers = Containers(runtime, self.recorder, self.backoff, self.clock, config, self.host, get_object,
                                     self.services.list, self.startup)
        self.syncer = PodSyncer(runtime, self.pleg, self.probes, self.containers, self.status, self.backoff,
                                self.recorder, config, self.host, read_host_resolv_conf(config.resolv_conf),
                                get_object, self.startup, self.runtime_classes.lookup_runtime_handler, self.tokens)
        self.get_object = get_object
        self.terminator = PodTerminator(client, self.pleg, self.probes, self.containers, self.status, self.backoff,
                                        config)
        self._tasks: list[asyncio.Task[Any]] = []
        self._rejected: set[str] = set()  # uids refused at admission (they never run here)
        self._rejecting: set[asyncio.Task[None]] = set()

    @property
    def host_ip(self) -> str:
        return self.host.host_ip

    @host_ip.setter
    def host_ip(self, ip: str) -> None:
        self.host.host_ip = ip

    @property
    def last_status(self) -> dict[str, dict[str, Any]]:
        return self.status.last_status

    # ------------------------------------------------------------------ wiring
    async def start(self) -> None:
        name, _ = await self.runtime.version()
        self.host.runtime_name = name or "containerd"
        os.makedirs(self.config.pods_dir, exist_ok=True)
        os.makedirs(self.config.logs_dir, exist_ok=True)
        self.metrics.node_name.labels(self.config.node_name).set(1)
        # Relist once before the informer so the first syncs see the runtime as it is (adoption).
        try:
            await self.pleg.relist()
        except Exception as e:
            log.warning("initial relist failed err=%s", e)
        self._tasks.append(asyncio.create_task(self.services.run(), name="kubelet-service-informer"))
        self.runtime_classes.start()
        try:
            # upstream waits for the service informer too, so that the first containers get the variables
            await self.services.wait_synced(timeout=10)
        except TimeoutError:
            log.warning("service informer not synced after 10s: starting pods without service variables")
        await self.runtime_classes.wait_synced(timeout=5)
        self._tasks.append(asyncio.create_task(self.informer.run(), name="kubelet-pod-informer"))
        self._tasks.append(asyncio.create_task(self.pleg.run(), name="kubelet-pleg"))
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="kubelet-housekeeping"))
        self._tasks.append(asyncio.create_task(self._rotate_logs(), name="kubelet-log-rotation"))
        self._tasks.append(asyncio.create_task(refresh_loop(
            lambda: [w.pod for w in self.workers.values() if w.pod and w.volume_paths], self.tokens,
            lambda pod: setup_volumes(pod, self.config.pods_dir, self.get_object, self.tokens.token)),
            name="kubelet-token-refresh"))

    async def stop(self) -> None:
        self.informer.stop()
        self.services.stop()
        self.runtime_classes.stop()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, self.pod_workers.stop(), return_exceptions=True)
        await self.probes.stop()
        try:
            await asyncio.wait_for(self.recorder.flush(), 2)
        except (TimeoutError, Exception):
            pass

    # ------------------------------------------------------------------ triggers
    def _on_pod(self, pod: dict[str, Any]) -> None:
        self.startup.observe_on_watch(pod)
        uid = pod.get("metadata", {}).get("uid", "")
        if uid not in self.workers and not self._admit(pod):
            return
        if self.pod_workers.update(pod) is not None:
            self.probes.add_pod(pod)

    def _admit(self, pod: dict[str, Any]) -> bool:
        """A pod new to this kubelet (upstream HandlePodAdditions -> canAdmitPod): run it, reject
        it (over --max-pods), or leave it (terminal, with nothing in the runtime to run or clean)."""
        md = pod.get("metadata", {})
        uid = md.get("uid", "")
        if uid in self.pleg.known_uids or md.get("deletionTimestamp"):
            return True  # already here (a restart adopts it), or its deletion must be confirmed
        if uid in self._rejected or is_terminal(pod):
            return False
        active = sum(1 for w in self.workers.values() if w.pod is not None and not w.removed and not is_terminal(w.pod))
        rejection = admit_pod_count(active, self.config.max_pods)
        if rejection is None:
            return True
        self._rejected.add(uid)
        task = asyncio.create_task(reject_pod(self.client, self.recorder, pod, rejection), name=f"kubelet-reject-{uid}")
        self._rejecting.add(task)
        task.add_done_callback(self._rejecting.discard)
        return False

    def _on_pod_delete(self, pod: dict[str, Any]) -> None:
        uid = pod.get("metadata", {}).get("uid", "")
        self.tokens.forget(uid)
        self._rejected.discard(uid)
        w = self.workers.get(uid)
        if w is not None:
            self.pod_workers.remove(uid, grace_period(w.pod))

    def _on_pleg_event(self, ev: PodLifecycleEvent) -> None:
        self.pod_workers.wake(ev.pod_uid)

    def _on_probe_change(self, uid: str, kind: str) -> None:
        self.pod_workers.wake(uid)

    def _on_unhealthy(self, pod: dict[str, Any], name: str, kind: str, message: str) -> None:
        self.recorder.event(pod, "Warning", "Unhealthy", f"{kind.capitalize()} probe failed: {message}",
                            field_path=f"spec.containers{{{name}}}")

    def _on_relist(self, seconds: float) -> None:
        self.metrics.pleg_relist_duration.observe(seconds)
        self.metrics.pleg_last_seen.set(self.clock.now())

    # ------------------------------------------------------------------ one pod's sync
    async def sync(self, w: PodWorker) -> None:
        """What the pod's worker does each time (upstream: SyncPod, SyncTerminatingPod, SyncTerminatedPod)."""
        if w.removed or w.pod is None:
            await self.terminator.tear_down(w)
        elif w.pod.get("metadata", {}).get("deletionTimestamp"):
            await self.terminator.terminate(w, w.pod)
        else:
            await self.syncer.sync_pod(w, w.pod)

    def _probe_target(self, uid: str, name: str) -> probes_mod.ProbeTarget | None:
        rs = self.pleg.cached(uid)
        if rs is None:
            return None
        c = rs.latest(name)
        if c is None:
            return None
        sb = next((s for s in rs.sandboxes if s.id == c.sandbox_id), None) or rs.newest_sandbox()
        host = bool(sb and sb.host_network)
        return probes_mod.ProbeTarget(
            container_id=c.id, running=c.state == ContainerState.RUNNING, started_at=c.started_at or c.created_at,
            netns_path="" if (sb is None or host) else sb.netns_path,
            pod_ip=self.host.host_ip if host or sb is None else sb.ip)

    # ------------------------------------------------------------------ timers
    def _count_running(self) -> None:
        count_running(self.pleg.cached_statuses(), self.metrics)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(self.config.housekeeping_interval)
            try:
                if not self.informer.has_synced:
                    continue
                self._count_running()
                api_uids = {p.get("metadata", {}).get("uid", "") for p in self.informer.list()}
                clean_up_orphans(self.pod_workers, set(self.pleg.known_uids), api_uids)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("housekeeping failed err=%s", e)

    async def _rotate_logs(self) -> None:
        while True:
            await asyncio.sleep(self.config.log_rotation_interval)
            await rotate_logs(self.pod_workers, self.pleg, self.runtime, self.config, self.clock)
