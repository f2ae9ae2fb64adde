"""Starting and stopping one pod's containers, with their events (kuberuntime_container.go).

start() is upstream's startContainer: CrashLoopBackOff, the image, the container's config (env,
mounts, termination-message file), CreateContainer, StartContainer; a step that cannot go on yet
leaves the container's waiting reason in the worker. kill_container and kill_pod stop containers
with the pod's grace period (SIGTERM, then SIGKILL at its end), as killContainer / KillPod.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from nodeagent.clock import Clock
from nodeagent.kubelet.backoff import Backoff
from nodeagent.kubelet.config import HostInfo, KubeletConfig
from nodeagent.kubelet.env import ContainerConfigError, ObjectGetter, make_environment, service_environment
from nodeagent.kubelet.model import (
    ContainerOptions,
    ContainerState,
    ImageError,
    PodRuntimeStatus,
    SandboxOptions,
    SandboxState,
)
from nodeagent.kubelet.pod_startup import PodStartupTracker
from nodeagent.kubelet.pod_workers import PodWorker
from nodeagent.kubelet.runtime_service import RuntimeService
from nodeagent.kubelet.volumes import VolumeError, container_mounts, termination_message_mount

log = logging.getLogger(__name__)

# upstream: the shortest grace period the kubelet gives a container (kuberuntime_container.go)
MIN_GRACE_SECONDS = 2
DEFAULT_GRACE_SECONDS = 30


def grace_period(pod: dict[str, Any] | None) -> int:
    """The pod's deletion grace period, else its terminationGracePeriodSeconds (default 30 s)."""
    if not pod:
        return MIN_GRACE_SECONDS
    md = pod.get("metadata", {})
    if md.get("deletionGracePeriodSeconds") is not None:
        return int(md["deletionGracePeriodSeconds"])
    g = pod.get("spec", {}).get("terminationGracePeriodSeconds")
    return DEFAULT_GRACE_SECONDS if g is None else int(g)


def is_not_found(e: BaseException) -> bool:
    return bool(getattr(e, "not_found", False)) or isinstance(e, KeyError)


def pull_policy(container: dict[str, Any]) -> str:
    """imagePullPolicy, defaulted as the apiserver does: Always for :latest or no tag."""
    image = container.get("image", "")
    if container.get("imagePullPolicy"):
        return str(container["imagePullPolicy"])
    untagged = ":" not in image.rsplit("/", 1)[-1]
    return "Always" if image.endswith(":latest") or untagged else "IfNotPresent"


def _field_path(field: str, name: str) -> str:
    return f"spec.{field}{{{name}}}"


class Containers:
    def __init__(self, runtime: RuntimeService, recorder: Any, backoff: Backoff, clock: Clock,
                 config: KubeletConfig, host: HostInfo, get_object: ObjectGetter,
                 services: Callable[[], list[dict[str, Any]]], startup: PodStartupTracker) -> None:
        self.runtime = runtime
        self.recorder = recorder
        self.backoff = backoff
        self.clock = clock
        self.config = config
        self.host = host
        self.get_object = get_object
        self.services = services  # the Services the pods' environment variables come from
        self.startup = startup  # the steps of a pod's first start (pod_startup.py)

    # ------------------------------------------------------------------ start
    async def start(self, w: PodWorker, pod: dict[str, Any], rs: PodRuntimeStatus, sandbox_id: str,
                    sandbox_opts: SandboxOptions, spec: dict[str, Any], pod_ip: str, field: str) -> bool:
        """Start the container `spec` in the sandbox; False when it cannot start yet (back-off, image
        or configuration: the worker's waiting reason says why). Runtime errors raise."""
        name = spec["name"]
        fp = _field_path(field, name)
        latest = rs.latest(name)
        attempt = latest.attempt + 1 if latest is not None else 0
        if latest is not None and latest.state == ContainerState.EXITED and self._in_backoff(w, pod, latest, name, fp):
            return False
        image_ref = await self._ensure_image(w, pod, spec, fp)
        if image_ref is None:
            return False
        opts = await self._options(w, pod, spec, fp, attempt, pod_ip, image_ref)
        if opts is None:
            return False
        # Keep only the latest dead container of this name (for `logs --previous`), as upstream's GC.
        for old in rs.by_name(name)[1:]:
            if old.state != ContainerState.RUNNING:
                try:
                    await self.runtime.remove_container(old.id)
                except Exception as e:
                    log.debug("remove old container failed container=%s err=%s", old.id, e)
        try:
            with self.startup.step(w.uid, "create"):
                cid = await self.runtime.create_container(sandbox_id, pod, spec, opts, sandbox_opts)
        except Exception as e:
            self.recorder.event(pod, "Warning", "Failed", f"Error: {e}", field_path=fp)
            w.waiting[name] = ("CreateContainerError", str(e))
            raise
        self.recorder.event(pod, "Normal", "Created", f"Created container {name}", field_path=fp)
        try:
            with self.startup.step(w.uid, "start"):
                await self.runtime.start_container(cid)
        except Exception as e:
            self.recorder.event(pod, "Warning", "Failed", f"Error: {e}", field_path=fp)
            w.waiting[name] = ("RunContainerError", str(e))
            raise
        w.waiting.pop(name, None)
        self.recorder.event(pod, "Normal", "Started", f"Started container {name}", field_path=fp)
        return True

    def _in_backoff(self, w: PodWorker, pod: dict[str, Any], latest: Any, name: str, fp: str) -> bool:
        """CrashLoopBackOff: a container that exited before waits 10 s, 20 s, ... up to 5 min."""
        key = f"{w.uid}/{name}"
        finished = latest.finished_at or self.clock.now()
        left = self.backoff.remaining(key, finished)
        if left <= 0:
            self.backoff.next(key, finished)
            return False
        md = pod["metadata"]
        pod_ref = f"{md['name']}_{md.get('namespace', 'default')}({w.uid})"
        self.recorder.event(pod, "Warning", "BackOff", f"Back-off restarting failed container {name} in pod {pod_ref}",
                            field_path=fp)
        w.waiting[name] = ("CrashLoopBackOff",
                           f"back-off {int(self.backoff.get(key))}s restarting failed container={name} pod={pod_ref}")
        w.requeue(left)
        return True

    async def _ensure_image(self, w: PodWorker, pod: dict[str, Any], spec: dict[str, Any], fp: str) -> str | None:
        image = spec.get("image", "")
        t0 = self.startup.monotonic()
        try:
            with self.startup.step(w.uid, "image"):
                image_ref, pulled = await self.runtime.ensure_image(image, pull_policy(spec))
        except ImageError as e:
            self.recorder.event(pod, "Warning", "Failed", f"Failed to pull image \"{image}\": {e.message}", field_path=fp)
            w.waiting[spec["name"]] = (e.reason, e.message)
            w.requeue(5.0)
            return None
        if pulled:
            self.startup.pulled(w.uid, self.startup.monotonic() - t0)
            self.recorder.event(pod, "Normal", "Pulling", f'Pulling image "{image}"', field_path=fp)
            self.recorder.event(pod, "Normal", "Pulled", f'Successfully pulled image "{image}"', field_path=fp)
        else:
            self.recorder.event(pod, "Normal", "Pulled", f'Container image "{image}" already present on machine',
                                field_path=fp)
        return image_ref

    async def _options(self, w: PodWorker, pod: dict[str, Any], spec: dict[str, Any], fp: str, attempt: int,
                       pod_ip: str, image_ref: str) -> ContainerOptions | None:
        """What the container gets on this node (GenerateRunContainerOptions): env, mounts."""
        name = spec["name"]
        try:
            links = pod.get("spec", {}).get("enableServiceLinks", True) is not False
            svc_env = service_environment(self.services(), pod["metadata"].get("namespace", "default"), links)
            env = await make_environment(pod, spec, self.get_object, pod_ip, self.host.host_ip, self.config.node_name,
                                         service_env=svc_env)
            mounts = container_mounts(spec, w.volume_paths or {})
        except (ContainerConfigError, VolumeError) as e:
            self.recorder.event(pod, "Warning", "Failed", f"Error: {e}", field_path=fp)
            w.waiting[name] = ("CreateContainerConfigError", str(e))
            w.requeue(2.0)
            return None
        term = termination_message_mount(self.config.pods_dir, w.uid, spec, attempt)
        if term is not None:
            mounts.append(term)
        return ContainerOptions(attempt=attempt, env=env, mounts=mounts, image_ref=image_ref)

    # ------------------------------------------------------------------ stop
    async def stop(self, cid: str, grace: int) -> None:
        try:
            await self.runtime.stop_container(cid, max(grace, MIN_GRACE_SECONDS) if grace > 0 else MIN_GRACE_SECONDS)
        except Exception as e:
            if not is_not_found(e):
                raise

    async def kill_container(self, pod: dict[str, Any], cid: str, name: str, message: str, grace: int) -> None:
        """killContainer: the Killing event says why, then the stop with the grace period."""
        self.recorder.event(pod, "Normal", "Killing", message or f"Stopping container {name}",
                            field_path=_field_path("containers", name))
        await self.stop(cid, grace)

    async def kill_pod(self, pod: dict[str, Any] | None, rs: PodRuntimeStatus, grace: int, remove: bool) -> bool:
        """Stop every container with the grace period, in parallel, then stop the sandboxes (CNI
        DEL) and, when `remove`, remove them. True when it changed anything in the runtime."""
        running = [c for c in rs.containers if c.state in (ContainerState.RUNNING, ContainerState.CREATED,
                                                             ContainerState.UNKNOWN)]
        for c in running:
            if pod is not None and c.state == ContainerState.RUNNING:
                self.recorder.event(pod, "Normal", "Killing", f"Stopping container {c.name}",
                                    field_path=_field_path("containers", c.name))
        await asyncio.gather(*(self.stop(c.id, grace) for c in running))
        changed = bool(running)
        for s in rs.sandboxes:
            try:
                if s.state == SandboxState.READY or remove:
                    changed = True
                    await self.runtime.stop_sandbox(s.id)
                if remove:
                    await self.runtime.remove_sandbox(s.id)
            except Exception as e:
                if not is_not_found(e):
                    raise
        return changed
