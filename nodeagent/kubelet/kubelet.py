"""The kubelet: pod workers driven by the pod informer, the PLEG and the probes.

Each pod bound to this node gets one worker task (upstream pod_workers.go). A worker syncs when
something about its pod changed (the API object, a runtime event, a probe result) and at least
every sync_frequency; a sync is compute_pod_actions (the plan, actions.py) followed by the
numbered steps of sync_pod below (kuberuntime_manager.go SyncPod), then a status write.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from nodeagent.clock import Clock, RealClock
from nodeagent.kubelet import probes as probes_mod
from nodeagent.kubelet.actions import PodActions, compute_pod_actions
from nodeagent.kubelet.backoff import Backoff
from nodeagent.kubelet.config import KubeletConfig
from nodeagent.kubelet.dns import pod_dns_config, read_host_resolv_conf
from nodeagent.kubelet.env import ContainerConfigError, make_environment, service_environment
from nodeagent.kubelet.metrics import KubeletMetrics
from nodeagent.kubelet.model import (
    ContainerOptions,
    ContainerState,
    ImageError,
    PodRuntimeStatus,
    SandboxOptions,
    SandboxState,
)
from nodeagent.kubelet.pleg import GenericPLEG, PodLifecycleEvent
from nodeagent.kubelet.runtime_service import RuntimeService
from nodeagent.kubelet.status import StatusInputs, generate_pod_status
from nodeagent.kubelet.volumes import (
    VolumeError,
    container_mounts,
    read_termination_message,
    remove_pod_dir,
    setup_volumes,
    termination_message_mount,
)
from nodeagent.machinery.kinds import CONFIGMAPS, PODS, SECRETS, SERVICES

log = logging.getLogger(__name__)

# upstream: the shortest grace period the kubelet gives a container (kuberuntime_container.go)
MIN_GRACE_SECONDS = 2
DEFAULT_GRACE_SECONDS = 30


def pod_key(pod: dict[str, Any]) -> str:
    md = pod.get("metadata", {})
    return f"{md.get('namespace', 'default')}/{md.get('name', '')}"


def _grace(pod: dict[str, Any] | None) -> int:
    if not pod:
        return MIN_GRACE_SECONDS
    md = pod.get("metadata", {})
    if md.get("deletionGracePeriodSeconds") is not None:
        return int(md["deletionGracePeriodSeconds"])
    g = pod.get("spec", {}).get("terminationGracePeriodSeconds")
    return DEFAULT_GRACE_SECONDS if g is None else int(g)


def _is_not_found(e: BaseException) -> bool:
    return bool(getattr(e, "not_found", False)) or isinstance(e, KeyError)


@dataclass
class PodWorker:
    uid: str
    pod: dict[str, Any] | None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    removed: bool = False  # gone from the API (or orphaned in the runtime)
    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)  # container -> (reason, message)
    requeue_after: float | None = None
    volume_paths: dict[str, str] | None = None
    sandbox_opts: SandboxOptions | None = None
    first_seen: float = field(default_factory=time.monotonic)
    start_recorded: bool = False
    last_grace: int = MIN_GRACE_SECONDS
    done: bool = False


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
        self.informer = Informer(client, PODS, field_selector=f"spec.nodeName={config.node_name}")
        self.informer.add_handlers(on_add=self._on_pod, on_update=lambda old, new: self._on_pod(new),
                                   on_delete=self._on_pod_delete)
        # Services for the pods' environment variables (enableServiceLinks, KUBERNETES_SERVICE_*).
        self.services = Informer(client, SERVICES)
        self.pleg = GenericPLEG(runtime, self.clock, on_event=self._on_pleg_event,
                                relist_period=config.pleg_relist_period,
                                relist_threshold=config.pleg_relist_threshold,
                                on_relist=self._on_relist)
        self.probes = probes_mod.ProbeManager(runtime, self.clock, self._probe_target, self._on_probe_change,
                                              self._on_unhealthy)
        self.backoff = Backoff(self.clock, config.backoff_initial, config.backoff_max)
        self.workers: dict[str, PodWorker] = {}
        self.finished: set[str] = set()  # uids whose deletion this kubelet completed
        self.last_status: dict[str, dict[str, Any]] = {}
        self._messages: dict[str, str] = {}  # container id -> termination message read
        self.host_ip = config.node_ip
        self.runtime_name = "containerd"
        self.host_dns = read_host_resolv_conf(config.resolv_conf)
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = False
        self._start_slots = asyncio.Semaphore(config.parallel_pod_starts) if config.parallel_pod_starts > 0 else None

    # ------------------------------------------------------------------ wiring
    async def start(self) -> None:
        name, _ = await self.runtime.version()
        self.runtime_name = name or "containerd"
        os.makedirs(self.config.pods_dir, exist_ok=True)
        os.makedirs(self.config.logs_dir, exist_ok=True)
        self.metrics.node_name.labels(self.config.node_name).set(1)
        # Relist once before the informer so the first syncs see the runtime as it is (adoption).
        try:
            await self.pleg.relist()
        except Exception as e:
            log.warning("initial relist failed err=%s", e)
        self._tasks.append(asyncio.create_task(self.services.run(), name="kubelet-service-informer"))
        try:
            # upstream waits for the service informer too, so that the first containers get the variables
            await self.services.wait_synced(timeout=10)
        except TimeoutError:
            log.warning("service informer not synced after 10s: starting pods without service variables")
        self._tasks.append(asyncio.create_task(self.informer.run(), name="kubelet-pod-informer"))
        self._tasks.append(asyncio.create_task(self.pleg.run(), name="kubelet-pleg"))
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="kubelet-housekeeping"))
        self._tasks.append(asyncio.create_task(self._rotate_logs(), name="kubelet-log-rotation"))

    async def stop(self) -> None:
        self._stopping = True
        self.informer.stop()
        self.services.stop()
        workers = [w.task for w in self.workers.values() if w.task]
        for t in self._tasks + workers:
            t.cancel()
        await asyncio.gather(*self._tasks, *workers, return_exceptions=True)
        await self.probes.stop()
        try:
            await asyncio.wait_for(self.recorder.flush(), 2)
        except (TimeoutError, Exception):
            pass

    # ------------------------------------------------------------------ triggers
    def _on_pod(self, pod: dict[str, Any]) -> None:
        uid = pod.get("metadata", {}).get("uid", "")
        if not uid or uid in self.finished:
            return
        w = self.workers.get(uid)
        if w is None:
            w = PodWorker(uid, pod)
            self.workers[uid] = w
            w.wake.set()
            w.task = asyncio.get_running_loop().create_task(self._worker_loop(w), name=f"pod-worker-{uid}")
            self.probes.add_pod(pod)
        else:
            w.pod = pod
            w.wake.set()

    def _on_pod_delete(self, pod: dict[str, Any]) -> None:
        uid = pod.get("metadata", {}).get("uid", "")
        w = self.workers.get(uid)
        if w is not None:
            w.last_grace = _grace(w.pod)
            w.removed = True
            w.wake.set()

    def _on_pleg_event(self, ev: PodLifecycleEvent) -> None:
        w = self.workers.get(ev.pod_uid)
        if w is not None:
            w.wake.set()

    def _on_probe_change(self, uid: str, kind: str) -> None:
        w = self.workers.get(uid)
        if w is not None:
            w.wake.set()

    def _on_unhealthy(self, pod: dict[str, Any], name: str, kind: str, message: str) -> None:
        self.recorder.event(pod, "Warning", "Unhealthy", f"{kind.capitalize()} probe failed: {message}",
                            field_path=f"spec.containers{{{name}}}")

    def _on_relist(self, seconds: float) -> None:
        self.metrics.pleg_relist_duration.observe(seconds)
        self.metrics.pleg_last_seen.set(self.clock.now())

    async def _housekeeping(self) -> None:
        """Adopt orphans: runtime pods no API pod claims (deleted while we were down) are torn down."""
        while True:
            await asyncio.sleep(self.config.housekeeping_interval)
            try:
                if not self.informer.has_synced:
                    continue
                self._count_running()
                for uid in self.pleg.known_uids:
                    if uid not in self.workers and uid not in self.finished:
                        log.info("tearing down orphaned pod pod_uid=%s", uid)
                        w = PodWorker(uid, None, removed=True)
                        self.workers[uid] = w
                        w.wake.set()
                        w.task = asyncio.get_running_loop().create_task(self._worker_loop(w))
                api_uids = {p.get("metadata", {}).get("uid") for p in self.informer.list()}
                for uid in list(self.finished):
                    if uid not in self.pleg.known_uids and uid not in api_uids:
                        self.finished.discard(uid)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("housekeeping failed err=%s", e)

    async def _rotate_logs(self) -> None:
        """Rotate running containers' logs past container_log_max_size, then CRI ReopenContainerLog."""
        from nodeagent.kubelet.logs import rotate_if_needed

        while True:
            await asyncio.sleep(self.config.log_rotation_interval)
            for w in list(self.workers.values()):
                rs = self.pleg.cached(w.uid)
                if rs is None or w.pod is None:
                    continue
                log_dir = self._log_dir(w.pod)
                for c in rs.containers:
                    if c.state != ContainerState.RUNNING:
                        continue
                    path = os.path.join(log_dir, c.name, f"{c.attempt}.log")
                    try:
                        if rotate_if_needed(path, self.config.container_log_max_size,
                                            self.config.container_log_max_files, self.clock.now()):
                            await self.runtime.reopen_container_log(c.id)
                    except asyncio.CancelledError:
                        raise
                    except Exception as e:
                        log.warning("log rotation failed container=%s path=%s err=%s", c.id, path, e)

    def _log_dir(self, pod: dict[str, Any]) -> str:
        from nodeagent.runtime import podconfig

        return podconfig.pod_log_directory(self.config.logs_dir, pod)

    def _count_running(self) -> None:
        pods = 0
        by_state = {s: 0 for s in ContainerState}
        for st in self.pleg.cached_statuses():
            if any(s.state == SandboxState.READY for s in st.sandboxes):
                pods += 1
            for c in st.containers:
                by_state[c.state] += 1
        self.metrics.running_pods.set(pods)
        for state, n in by_state.items():
            # upstream's label values: created, running, exited, unknown
            self.metrics.running_containers.labels(state.value.removeprefix("CONTAINER_").lower()).set(n)

    # ------------------------------------------------------------------ the worker loop
    async def _worker_loop(self, w: PodWorker) -> None:
        retry = 1.0
        while not self._stopping:
            timeout = self.config.sync_frequency
            if w.requeue_after is not None:
                timeout = min(timeout, max(w.requeue_after, 0.05))
            try:
                await asyncio.wait_for(w.wake.wait(), timeout)
            except TimeoutError:
                pass
            w.wake.clear()
            w.requeue_after = None
            try:
                await self.sync(w)
                retry = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as e:
                name = pod_key(w.pod) if w.pod else w.uid
                log.warning("pod sync failed pod=%s pod_uid=%s err=%s", name, w.uid, e)
                w.requeue_after = retry
                retry = min(retry * 2, 30.0)
            if w.done:
                self.workers.pop(w.uid, None)
                return

    # ------------------------------------------------------------------ syncing one pod
    async def sync(self, w: PodWorker) -> None:
        if w.removed or w.pod is None:
            await self._teardown(w)
            return
        pod = w.pod
        if pod.get("metadata", {}).get("deletionTimestamp"):
            await self._terminate(w, pod)
            return
        await self.sync_pod(w, pod)

    async def _get_object(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        from nodeagent.client import NotFound

        try:
            return await self.client.get(CONFIGMAPS if kind == "configmap" else SECRETS, name, namespace=ns)
        except NotFound:
            return None

    def _sandbox_options(self, pod: dict[str, Any], attempt: int) -> SandboxOptions:
        from nodeagent.runtime import podconfig  # pure helpers for names/paths (hostname, log dir)

        dns = pod_dns_config(pod, self.config.cluster_dns, self.config.cluster_domain, self.host_dns)
        return SandboxOptions(attempt=attempt, hostname=podconfig.pod_hostname(pod),
                              log_directory=podconfig.pod_log_directory(self.config.logs_dir, pod),
                              dns_servers=dns.servers, dns_searches=dns.searches, dns_options=dns.options)

    async def sync_pod(self, w: PodWorker, pod: dict[str, Any]) -> None:
        uid = w.uid
        rs = await self.pleg.refresh(uid)
        liveness = self._failed_probes(uid, rs, probes_mod.LIVENESS)
        startup = self._failed_probes(uid, rs, probes_mod.STARTUP)
        actions = compute_pod_actions(pod, rs, liveness, startup)
        log.debug("sync pod=%s actions=%s", pod_key(pod), actions)

        # Step 1: kill the pod if its sandbox changed or it has nothing left to run.
        if actions.kill_pod:
            if any(s.state == SandboxState.READY for s in rs.sandboxes) or \
                    any(c.state == ContainerState.RUNNING for c in rs.containers):
                await self.kill_pod(pod, rs, _grace(pod), remove=False)
                rs = await self.pleg.refresh(uid)
        else:
            # Step 2: kill the containers that must go (failed liveness, unknown state).
            for cid, info in actions.containers_to_kill.items():
                self.recorder.event(pod, "Normal", "Killing", info.message if info.reason
                                    else f"Stopping container {info.name}",
                                    field_path=f"spec.containers{{{info.name}}}")
                await self._stop_container(cid, _grace(pod))
            if actions.containers_to_kill:
                rs = await self.pleg.refresh(uid)

        # Volumes before the sandbox (upstream waits for mounts before SyncPod).
        if actions.create_sandbox or actions.next_init_container or actions.containers_to_start:
            try:
                w.volume_paths = await setup_volumes(pod, self.config.pods_dir, self._get_object)
            except VolumeError as e:
                self.recorder.event(pod, "Warning", "FailedMount", f"MountVolume.SetUp failed: {e}")
                w.requeue_after = 2.0
                await self._write_status(w, pod, rs)
                return

        if actions.create_sandbox and self._start_slots is not None:
            # A new sandbox is the expensive part (runc, CNI): bound how many start at once so a
            # burst of pods finishes in order instead of all together at the end.
            async with self._start_slots:
                rs = await self._create_and_start(w, pod, rs, actions)
        else:
            rs = await self._create_and_start(w, pod, rs, actions)

        if not actions.is_noop():
            rs = await self.pleg.refresh(uid)
        await self._write_status(w, pod, rs)

    async def _create_and_start(self, w: PodWorker, pod: dict[str, Any], rs: PodRuntimeStatus,
                                actions: PodActions) -> PodRuntimeStatus:
        uid = w.uid
        # Step 3: create the sandbox.
        sandbox_id = actions.sandbox_id
        if actions.create_sandbox:
            opts = self._sandbox_options(pod, actions.attempt)
            try:
                sandbox_id = await self.runtime.run_sandbox(pod, opts)
            except Exception as e:
                self.recorder.event(pod, "Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {e}")
                await self._write_status(w, pod, rs)
                raise
            w.sandbox_opts = opts
            rs = await self.pleg.refresh(uid)
        if w.sandbox_opts is None:
            newest = rs.newest_sandbox()
            w.sandbox_opts = self._sandbox_options(pod, newest.attempt if newest else 0)
        sandbox = next((s for s in rs.sandboxes if s.id == sandbox_id), None)
        pod_ip = self.host_ip if pod.get("spec", {}).get("hostNetwork") else (sandbox.ip if sandbox else "")

        # Step 5: the next init container.
        if actions.next_init_container:
            spec = next(c for c in pod["spec"]["initContainers"] if c["name"] == actions.next_init_container)
            await self._start_container(w, pod, rs, sandbox_id, spec, pod_ip, "initContainers")

        # Step 6: app containers.
        for name in actions.containers_to_start:
            spec = next(c for c in pod["spec"]["containers"] if c["name"] == name)
            await self._start_container(w, pod, rs, sandbox_id, spec, pod_ip, "containers")

        return rs

    def _failed_probes(self, uid: str, rs: PodRuntimeStatus, kind: str) -> set[str]:
        out = set()
        for name, cid in self.probes.failed(uid, kind).items():
            latest = rs.latest(name)
            if latest is not None and latest.id == cid and latest.state == ContainerState.RUNNING:
                out.add(name)
        return out

    async def _start_container(self, w: PodWorker, pod: dict[str, Any], rs: PodRuntimeStatus, sandbox_id: str,
                               spec: dict[str, Any], pod_ip: str, field: str) -> None:
        name = spec["name"]
        fp = f"spec.{field}{{{name}}}"
        latest = rs.latest(name)
        attempt = latest.attempt + 1 if latest is not None else 0
        key = f"{w.uid}/{name}"
        # CrashLoopBackOff: a container that exited before waits 10 s, 20 s, ... up to 5 min.
        if latest is not None and latest.state == ContainerState.EXITED:
            finished = latest.finished_at or self.clock.now()
            left = self.backoff.remaining(key, finished)
            if left > 0:
                delay = self.backoff.get(key)
                msg = (f"back-off {int(delay)}s restarting failed container={name} "
                       f"pod={pod['metadata']['name']}_{pod['metadata'].get('namespace', 'default')}({w.uid})")
                self.recorder.event(pod, "Warning", "BackOff", "Back-off restarting failed container "
                                    f"{name} in pod {pod['metadata']['name']}_{pod['metadata'].get('namespace', 'default')}"
                                    f"({w.uid})", field_path=fp)
                w.waiting[name] = ("CrashLoopBackOff", msg)
                w.requeue_after = left if w.requeue_after is None else min(w.requeue_after, left)
                return
            self.backoff.next(key, finished)
        image = spec.get("image", "")
        policy = spec.get("imagePullPolicy") or ("Always" if image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1]
                                                 else "IfNotPresent")
        try:
            image_ref, pulled = await self.runtime.ensure_image(image, policy)
        except ImageError as e:
            self.recorder.event(pod, "Warning", "Failed", f"Failed to pull image \"{image}\": {e.message}", field_path=fp)
            w.waiting[name] = (e.reason, e.message)
            w.requeue_after = 5.0
            return
        if pulled:
            self.recorder.event(pod, "Normal", "Pulling", f'Pulling image "{image}"', field_path=fp)
            self.recorder.event(pod, "Normal", "Pulled", f'Successfully pulled image "{image}"', field_path=fp)
        else:
            self.recorder.event(pod, "Normal", "Pulled", f'Container image "{image}" already present on machine',
                                field_path=fp)
        try:
            links = pod.get("spec", {}).get("enableServiceLinks", True) is not False
            svc_env = service_environment(self.services.list(), pod["metadata"].get("namespace", "default"), links)
            env = await make_environment(pod, spec, self._get_object, pod_ip, self.host_ip, self.config.node_name,
                                         service_env=svc_env)
            mounts = container_mounts(spec, w.volume_paths or {})
        except (ContainerConfigError, VolumeError) as e:
            self.recorder.event(pod, "Warning", "Failed", f"Error: {e}", field_path=fp)
            w.waiting[name] = ("CreateContainerConfigError", str(e))
            w.requeue_after = 2.0
            return
        # Keep only the latest dead container of this name (for `logs --previous`), as upstream's GC.
        for old in rs.by_name(name)[1:]:
            if old.state != ContainerState.RUNNING:
                try:
                    await self.runtime.remove_container(old.id)
                except Exception as e:
                    log.debug("remove old container failed container=%s err=%s", old.id, e)
        assert w.sandbox_opts is not None
        term = termination_message_mount(self.config.pods_dir, w.uid, spec, attempt)
        if term is not None:
            mounts.append(term)
        opts = ContainerOptions(attempt=attempt, env=env, mounts=mounts, log_path=f"{name}/{attempt}.log",
                                image_ref=image_ref)
        try:
            cid = await self.runtime.create_container(sandbox_id, pod, spec, opts, w.sandbox_opts)
        except Exception as e:
            self.recorder.event(pod, "Warning", "Failed", f"Error: {e}", field_path=fp)
            w.waiting[name] = ("CreateContainerError", str(e))
            raise
        self.recorder.event(pod, "Normal", "Created", f"Created container {name}", field_path=fp)
        try:
            await self.runtime.start_container(cid)
        except Exception as e:
            self.recorder.event(pod, "Warning", "Failed", f"Error: {e}", field_path=fp)
            w.waiting[name] = ("RunContainerError", str(e))
            raise
        w.waiting.pop(name, None)
        self.recorder.event(pod, "Normal", "Started", f"Started container {name}", field_path=fp)

    async def _stop_container(self, cid: str, grace: int) -> None:
        try:
            await self.runtime.stop_container(cid, max(grace, MIN_GRACE_SECONDS) if grace > 0 else MIN_GRACE_SECONDS)
        except Exception as e:
            if not _is_not_found(e):
                raise

    async def kill_pod(self, pod: dict[str, Any] | None, rs: PodRuntimeStatus, grace: int, remove: bool) -> None:
        """Stop every container with the grace period (SIGTERM, then SIGKILL at the end of it), in
        parallel, then stop the sandboxes (CNI DEL) and, when `remove`, remove them."""
        running = [c for c in rs.containers if c.state in (ContainerState.RUNNING, ContainerState.CREATED,
                                                             ContainerState.UNKNOWN)]
        for c in running:
            if pod is not None and c.state == ContainerState.RUNNING:
                self.recorder.event(pod, "Normal", "Killing", f"Stopping container {c.name}",
                                    field_path=f"spec.containers{{{c.name}}}")
        await asyncio.gather(*(self._stop_container(c.id, grace) for c in running))
        for s in rs.sandboxes:
            try:
                if s.state == SandboxState.READY or remove:
                    await self.runtime.stop_sandbox(s.id)
                if remove:
                    await self.runtime.remove_sandbox(s.id)
            except Exception as e:
                if not _is_not_found(e):
                    raise

    async def _terminate(self, w: PodWorker, pod: dict[str, Any]) -> None:
        """The pod has a deletionTimestamp: stop it with its grace period, then confirm the delete."""
        from nodeagent.client import ApiError, NotFound

        uid = w.uid
        rs = await self.pleg.refresh(uid)
        grace = _grace(pod)
        log.info("terminating pod pod=%s grace=%d", pod_key(pod), grace)
        self.probes.remove_pod(uid)
        await self.kill_pod(pod, rs, grace, remove=False)
        rs = await self.pleg.refresh(uid)
        try:
            await self._write_status(w, pod, rs)
        except Exception as e:
            log.warning("final status not written pod=%s err=%s", pod_key(pod), e)
        await self.kill_pod(None, rs, 0, remove=True)
        remove_pod_dir(self.config.pods_dir, uid)
        self.backoff.forget_prefix(f"{uid}/")
        md = pod["metadata"]
        try:
            await self.client.delete(PODS, md["name"], namespace=md.get("namespace", "default"),
                                     grace_period_seconds=0, preconditions={"uid": uid})
        except NotFound:
            pass
        except ApiError as e:
            if getattr(e, "code", 0) != 409:
                raise
        self.finished.add(uid)
        self.pleg.forget(uid)
        self.last_status.pop(uid, None)
        w.done = True

    async def _teardown(self, w: PodWorker) -> None:
        """The pod is gone from the API (or was never known): remove everything it left."""
        uid = w.uid
        self.probes.remove_pod(uid)
        rs = await self.pleg.refresh(uid)
        await self.kill_pod(None, rs, w.last_grace, remove=True)
        remove_pod_dir(self.config.pods_dir, uid)
        self.backoff.forget_prefix(f"{uid}/")
        self.finished.add(uid)
        self.pleg.forget(uid)
        self.last_status.pop(uid, None)
        w.done = True

    # ------------------------------------------------------------------ status
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
            pod_ip=self.host_ip if host or sb is None else sb.ip)

    def _termination_messages(self, pod: dict[str, Any], rs: PodRuntimeStatus) -> None:
        """Fill in terminated containers' messages from their termination-log files (or, with
        FallbackToLogsOnError, the end of their logs), as upstream does."""
        from nodeagent.runtime import podconfig

        specs = {c["name"]: c for c in (pod.get("spec", {}).get("containers") or [])
                 + (pod.get("spec", {}).get("initContainers") or [])}
        for c in rs.containers:
            if c.state != ContainerState.EXITED or c.message or c.name not in specs:
                continue
            msg = self._messages.get(c.id)
            if msg is None:
                log_dir = podconfig.pod_log_directory(self.config.logs_dir, pod)
                msg = read_termination_message(self.config.pods_dir, rs.uid, specs[c.name], c.attempt, c.exit_code,
                                               os.path.join(log_dir, c.name, f"{c.attempt}.log"))
                if len(self._messages) > 4096:
                    self._messages.clear()
                self._messages[c.id] = msg
            c.message = msg

    def build_status(self, w: PodWorker, pod: dict[str, Any], rs: PodRuntimeStatus) -> dict[str, Any]:
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
        inp = StatusInputs(host_ip=self.host_ip, runtime_name=self.runtime_name, ready=ready, started=started,
                           waiting=dict(w.waiting), now=self.clock.now(), terminal=terminal)
        return generate_pod_status(old, rs, inp)

    async def _write_status(self, w: PodWorker, pod: dict[str, Any], rs: PodRuntimeStatus) -> None:
        from nodeagent.client import NotFound

        status = self.build_status(w, pod, rs)
        if not w.start_recorded and status.get("phase") == "Running" and all(
                "running" in s["state"] for s in status.get("containerStatuses", [])):
            w.start_recorded = True
            self.metrics.pod_start_duration.observe(time.monotonic() - w.first_seen)
        if self.last_status.get(w.uid) == status:
            return
        md = pod["metadata"]
        # A merge patch of the status subresource; the uid makes it fail on a re-created namesake.
        patch = {"metadata": {"uid": w.uid}, "status": status}
        try:
            await self.client.patch(PODS, md["name"], patch, namespace=md.get("namespace", "default"),
                                    patch_type="merge", subresource="status")
        except NotFound:
            return
        self.last_status[w.uid] = status
