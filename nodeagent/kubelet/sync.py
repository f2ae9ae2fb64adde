"""SyncPod: bring the runtime to a running pod's spec, as upstream's kuberuntime_manager.go.

Step 1 reads the runtime once and computes the plan (actions.py, pure); the numbered steps carry
it out (upstream's numbering: 5, ephemeral containers, and 7, in-place resize, are not here yet),
re-reading by id only the objects they acted on; after any change the runtime is listed once more
for the status the sync writes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from nodeagent.kubelet import probes as probes_mod
from nodeagent.kubelet.actions import PodActions, compute_pod_actions
from nodeagent.kubelet.backoff import Backoff
from nodeagent.kubelet.config import HostInfo, KubeletConfig
from nodeagent.kubelet.containers import Containers, grace_period
from nodeagent.kubelet.dns import DNSConfig, pod_dns_config
from nodeagent.kubelet.env import ObjectGetter
from nodeagent.kubelet.model import ContainerState, PodRuntimeStatus, SandboxOptions, SandboxState
from nodeagent.kubelet.pleg import GenericPLEG
from nodeagent.kubelet.pod_startup import PodStartupTracker
from nodeagent.kubelet.pod_workers import PodWorker, pod_key
from nodeagent.kubelet.podstatus import reread
from nodeagent.kubelet.runtime_service import RuntimeService
from nodeagent.kubelet.status_manager import StatusManager
from nodeagent.kubelet.tokens import TokenManager
from nodeagent.kubelet.volumes import VolumeError, setup_volumes

log = logging.getLogger(__name__)


class PodSyncer:
    def __init__(self, runtime: RuntimeService, pleg: GenericPLEG, probes: probes_mod.ProbeManager,
                 containers: Containers, status: StatusManager, backoff: Backoff, recorder: Any,
                 config: KubeletConfig, host: HostInfo, host_dns: DNSConfig, get_object: ObjectGetter,
                 startup: PodStartupTracker, runtime_handler: Callable[[str | None], str],
                 tokens: TokenManager | None = None) -> None:
        self.runtime = runtime
        self.pleg = pleg
        self.probes = probes
        self.containers = containers
        self.status = status
        self.backoff = backoff
        self.recorder = recorder
        self.config = config
        self.host = host
        self.host_dns = host_dns
        self.get_object = get_object
        self.tokens = tokens  # the service account tokens of projected volumes (tokens.py)
        self.startup = startup
        self.runtime_handler = runtime_handler  # RuntimeClass name -> CRI handler (runtimeclass.py)
        # A new sandbox is the expensive part (runc, CNI): bound how many start at once so that a
        # burst of pods finishes in order instead of all together at the end.
        self._start_slots = asyncio.Semaphore(config.parallel_pod_starts) if config.parallel_pod_starts > 0 else None

    def sandbox_options(self, pod: dict[str, Any], attempt: int) -> SandboxOptions:
        """What the node resolves for the pod's sandbox (upstream's runtimeHelper.GetPodDNS)."""
        dns = pod_dns_config(pod, self.config.cluster_dns, self.config.cluster_domain, self.host_dns)
        return SandboxOptions(attempt=attempt, dns_servers=dns.servers, dns_searches=dns.searches,
                              dns_options=dns.options)

    def _failed_probes(self, uid: str, rs: PodRuntimeStatus, kind: str) -> set[str]:
        out = set()
        for name, cid in self.probes.failed(uid, kind).items():
            latest = rs.latest(name)
            if latest is not None and latest.id == cid and latest.state == ContainerState.RUNNING:
                out.add(name)
        return out

    async def read_runtime(self, w: PodWorker) -> PodRuntimeStatus:
        """Step 1's read of the runtime, skipped when it can be: a status the PLEG read after this
        pod's last sync ended is current (the PLEG event that woke the worker came with it, as
        upstream's pod workers take it from the pod cache), and a pod this kubelet has never synced
        and the runtime does not hold (the last relist, done before the informer started, did not
        see it) has nothing to read."""
        if w.synced_reads is None:
            if w.uid not in self.pleg.known_uids and self.pleg.cached(w.uid) is None:
                return PodRuntimeStatus(uid=w.uid)
        elif (cached := self.pleg.cached_since(w.uid, w.synced_reads)) is not None:
            return cached
        return await self.pleg.refresh(w.uid)

    async def sync_pod(self, w: PodWorker, pod: dict[str, Any]) -> None:
        try:
            await self._sync_pod(w, pod)
        finally:
            w.synced_reads = self.pleg.reads_started

    async def _sync_pod(self, w: PodWorker, pod: dict[str, Any]) -> None:
        # Step 1: compute sandbox and container changes, from one read of the runtime.
        rs = await self.read_runtime(w)
        actions = compute_pod_actions(pod, rs, self._failed_probes(w.uid, rs, probes_mod.LIVENESS),
                                      self._failed_probes(w.uid, rs, probes_mod.STARTUP))
        log.debug("sync pod=%s actions=%s", pod_key(pod), actions)
        changed = False

        if actions.kill_pod:
            changed, rs = await self._step_kill_pod(pod, rs)
        else:
            changed, rs = await self._step_kill_containers(w, pod, rs, actions)

        if actions.create_sandbox or actions.next_init_container or actions.containers_to_start:
            # Volumes before the sandbox (upstream waits for mounts before SyncPod).
            try:
                w.volume_paths = await setup_volumes(pod, self.config.pods_dir, self.get_object,
                                                     self.tokens.token if self.tokens else None)
            except VolumeError as e:
                self.recorder.event(pod, "Warning", "FailedMount", f"MountVolume.SetUp failed: {e}")
                w.requeue(2.0)
                await self._write_status(w, pod, rs, changed)
                return
            if actions.create_sandbox and self._start_slots is not None:
                async with self._start_slots:
                    started = await self._create_and_start(w, pod, rs, actions)
            else:
                started = await self._create_and_start(w, pod, rs, actions)
            changed = changed or started
        await self._write_status(w, pod, rs, changed)

    async def _write_status(self, w: PodWorker, pod: dict[str, Any], rs: PodRuntimeStatus, changed: bool) -> None:
        if changed:  # the second (and last) list of this sync
            rs = await self.pleg.refresh(w.uid)
        await self.status.write(w, pod, rs)

    async def _step_kill_pod(self, pod: dict[str, Any], rs: PodRuntimeStatus) -> tuple[bool, PodRuntimeStatus]:
        """Step 2: kill the pod if its sandbox changed or it has nothing left to run."""
        if not (any(s.state == SandboxState.READY for s in rs.sandboxes)
                or any(c.state == ContainerState.RUNNING for c in rs.containers)):
            return False, rs
        changed = await self.containers.kill_pod(pod, rs, grace_period(pod), remove=False)
        return changed, await reread(self.runtime, rs, containers=[c.id for c in rs.containers])

    async def _step_kill_containers(self, w: PodWorker, pod: dict[str, Any], rs: PodRuntimeStatus,
                                    actions: PodActions) -> tuple[bool, PodRuntimeStatus]:
        """Step 3: kill the containers that must go (a new definition, a failed probe, unknown state)."""
        for cid, info in actions.containers_to_kill.items():
            if info.spec_changed:
                self.backoff.forget(f"{w.uid}/{info.name}")
            await self.containers.kill_container(pod, cid, info.name, info.message, grace_period(pod))
        if not actions.containers_to_kill:
            return False, rs
        return True, await reread(self.runtime, rs, containers=list(actions.containers_to_kill))

    async def _create_and_start(self, w: PodWorker, pod: dict[str, Any], rs: PodRuntimeStatus,
                                actions: PodActions) -> bool:
        """Steps 4, 6 and 8; True when a sandbox or container was created."""
        changed = False
        # Step 4: create the sandbox.
        sandbox_id = actions.sandbox_id
        if actions.create_sandbox:
            self.startup.sandbox_starting(w.uid)
            try:
                opts = replace(self.sandbox_options(pod, actions.attempt),
                               runtime_handler=self.runtime_handler(pod.get("spec", {}).get("runtimeClassName")))
                with self.startup.step(w.uid, "sandbox"):
                    sandbox_id = await self.runtime.run_sandbox(pod, opts)
            except Exception as e:
                self.recorder.event(pod, "Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {e}")
                await self.status.write(w, pod, rs)
                raise
            changed = True
            rs = await reread(self.runtime, rs, sandboxes=[sandbox_id])  # its IP (upstream: PodSandboxStatus)
        sandbox = next((s for s in rs.sandboxes if s.id == sandbox_id), None)
        sandbox_opts = self.sandbox_options(pod, sandbox.attempt if sandbox else actions.attempt)
        pod_ip = self.host.host_ip if pod.get("spec", {}).get("hostNetwork") else (sandbox.ip if sandbox else "")

        # Step 6: the next init container.
        if actions.next_init_container:
            spec = next(c for c in pod["spec"]["initContainers"] if c["name"] == actions.next_init_container)
            changed |= await self.containers.start(w, pod, rs, sandbox_id, sandbox_opts, spec, pod_ip,
                                                   "initContainers")

        # Step 8: the app containers.
        for name in actions.containers_to_start:
            spec = next(c for c in pod["spec"]["containers"] if c["name"] == name)
            changed |= await self.containers.start(w, pod, rs, sandbox_id, sandbox_opts, spec, pod_ip, "containers")
        return changed
