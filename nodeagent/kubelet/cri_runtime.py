"""RuntimeService over the CRI: nodeagent.runtime's RuntimeClient and podconfig builders.

The one place where a Pod becomes CRI configs (podconfig.sandbox_config / container_config,
with the kubelet's container hash) and CRI messages become the kubelet's records (model.py). The sandbox's network namespace path
comes from the verbose PodSandboxStatus (containerd's runtime spec lists it; otherwise the pause
process's /proc/PID/ns/net), which probes use to connect from inside the pod.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from nodeagent.kubelet.model import (
    ANNOTATION_CONTAINER_HASH,
    LABEL_CONTAINER_NAME,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    Container,
    ContainerOptions,
    ContainerState,
    ExecResult,
    ImageError,
    Sandbox,
    SandboxOptions,
    SandboxState,
    hash_container,
)

log = logging.getLogger(__name__)

_NS = 1e9


def _netns_from_info(info: dict[str, str]) -> str:
    raw = info.get("info")
    if not raw:
        return ""
    try:
        doc = json.loads(raw)
    except ValueError:
        return ""
    for ns in (((doc.get("runtimeSpec") or {}).get("linux") or {}).get("namespaces") or []):
        if ns.get("type") == "network" and ns.get("path"):
            return str(ns["path"])
    pid = doc.get("pid")
    return f"/proc/{pid}/ns/net" if pid else ""


class CRIRuntime:
    def __init__(self, endpoint: str, logs_dir: str, timeout: float = 30.0) -> None:
        from nodeagent.runtime.cri import RuntimeClient, pb

        self.client = RuntimeClient(endpoint, timeout=timeout)
        self.pb = pb
        self.logs_dir = logs_dir
        # CreateContainer needs the sandbox's PodSandboxConfig again: the one cache of it, by sandbox id
        self._sandbox_configs: dict[str, Any] = {}
        # a sandbox's netns never changes: ask for the (large) verbose status only once per sandbox
        self._netns: dict[str, str] = {}

    # --- conversions ---------------------------------------------------------------------------
    def _sandbox(self, s: Any) -> Sandbox:
        labels = dict(s.labels)
        return Sandbox(
            id=s.id, pod_uid=labels.get(LABEL_POD_UID, s.metadata.uid), pod_name=s.metadata.name,
            pod_namespace=s.metadata.namespace, attempt=int(s.metadata.attempt),
            state=SandboxState.READY if s.state == self.pb.SANDBOX_READY else SandboxState.NOTREADY,
            created_at=s.created_at / _NS)

    def _container(self, c: Any) -> Container:
        labels = dict(c.labels)
        return Container(
            id=c.id, pod_uid=labels.get(LABEL_POD_UID, ""), sandbox_id=c.pod_sandbox_id,
            name=labels.get(LABEL_CONTAINER_NAME, c.metadata.name), attempt=int(c.metadata.attempt),
            state=ContainerState(self.pb.ContainerState.Name(c.state)), created_at=c.created_at / _NS,
            image=c.image.image, image_ref=c.image_ref, hash=dict(c.annotations).get(ANNOTATION_CONTAINER_HASH, ""))

    # --- RuntimeService --------------------------------------------------------------------------
    async def version(self) -> tuple[str, str]:
        v = await self.client.version()
        return str(v.runtime_name), str(v.runtime_version)

    async def runtime_ready(self) -> tuple[bool, str]:
        st = await self.client.status()
        bad = [f"{c.type}=false reason:{c.reason} message:{c.message}" for c in st.status.conditions if not c.status]
        if bad:
            return False, "container runtime not ready: " + "; ".join(bad)
        return True, ""

    async def list_sandboxes(self, pod_uid: str | None = None) -> list[Sandbox]:
        sel = {LABEL_POD_UID: pod_uid} if pod_uid else None
        items = await self.client.list_pod_sandbox(label_selector=sel)
        return [self._sandbox(s) for s in items if LABEL_POD_UID in s.labels]  # only what a kubelet made

    async def list_containers(self, pod_uid: str | None = None) -> list[Container]:
        sel = {LABEL_POD_UID: pod_uid} if pod_uid else None
        items = await self.client.list_containers(label_selector=sel)
        return [self._container(c) for c in items if LABEL_POD_UID in c.labels]

    async def sandbox_status(self, sandbox_id: str) -> Sandbox:
        known = self._netns.get(sandbox_id)
        resp = await self.client.pod_sandbox_status(sandbox_id, verbose=known is None)
        s = resp.status
        labels = dict(s.labels)
        host = s.linux.namespaces.options.network == self.pb.NODE
        ips = [s.network.ip] if s.network.ip else []
        ips += [a.ip for a in s.network.additional_ips if a.ip]
        return Sandbox(
            id=s.id, pod_uid=labels.get(LABEL_POD_UID, s.metadata.uid), pod_name=s.metadata.name,
            pod_namespace=s.metadata.namespace, attempt=int(s.metadata.attempt),
            state=SandboxState.READY if s.state == self.pb.SANDBOX_READY else SandboxState.NOTREADY,
            created_at=s.created_at / _NS, ip=s.network.ip, ips=ips,
            netns_path="" if host else (known if known is not None else self._remember_netns(s.id, dict(resp.info))),
            host_network=host)

    def _remember_netns(self, sandbox_id: str, info: dict[str, str]) -> str:
        path = _netns_from_info(info)
        if path:
            self._netns[sandbox_id] = path
        return path

    async def container_status(self, container_id: str) -> Container:
        resp = await self.client.container_status(container_id)
        s = resp.status
        labels = dict(s.labels)
        return Container(
            id=s.id, pod_uid=labels.get(LABEL_POD_UID, ""), sandbox_id="",
            name=labels.get(LABEL_CONTAINER_NAME, s.metadata.name), attempt=int(s.metadata.attempt),
            state=ContainerState(self.pb.ContainerState.Name(s.state)), created_at=s.created_at / _NS,
            image=s.image.image, image_ref=s.image_ref, started_at=s.started_at / _NS,
            finished_at=s.finished_at / _NS, exit_code=int(s.exit_code), reason=s.reason, message=s.message,
            log_path=s.log_path, hash=dict(s.annotations).get(ANNOTATION_CONTAINER_HASH, ""))

    # --- Pod -> CRI ------------------------------------------------------------------------------
    def pod_log_directory(self, pod: dict[str, Any]) -> str:
        from nodeagent.runtime import podconfig

        return podconfig.pod_log_directory(self.logs_dir, pod)

    def _sandbox_config(self, pod: dict[str, Any], opts: SandboxOptions) -> Any:
        from nodeagent.runtime import podconfig

        dns = {"servers": opts.dns_servers, "searches": opts.dns_searches, "options": opts.dns_options}
        return podconfig.sandbox_config(pod, log_directory=self.pod_log_directory(pod), attempt=opts.attempt,
                                        dns_config=dns)

    async def run_sandbox(self, pod: dict[str, Any], opts: SandboxOptions) -> str:
        cfg = self._sandbox_config(pod, opts)
        sid = await self.client.run_pod_sandbox(cfg, runtime_handler=opts.runtime_handler)
        self._sandbox_configs[sid] = cfg
        return str(sid)

    async def stop_sandbox(self, sandbox_id: str) -> None:
        await self.client.stop_pod_sandbox(sandbox_id)

    async def remove_sandbox(self, sandbox_id: str) -> None:
        await self.client.remove_pod_sandbox(sandbox_id)
        self._sandbox_configs.pop(sandbox_id, None)
        self._netns.pop(sandbox_id, None)

    async def ensure_image(self, image: str, pull_policy: str) -> tuple[str, bool]:
        present = await self.client.image_status(image)
        # There is no registry on these machines (shared/ENVIRONMENT.md): an image that is
        # present is used even under pullPolicy Always rather than failing the pull.
        if present is not None:
            return str(present.id), False
        if pull_policy == "Never":
            raise ImageError("ErrImageNeverPull",
                             f'Container image "{image}" is not present with pull policy of Never')
        try:
            ref = await self.client.pull_image(image)
        except Exception as e:
            raise ImageError("ErrImagePull", f'failed to pull image "{image}": {e}') from e
        return str(ref), True

    async def create_container(self, sandbox_id: str, pod: dict[str, Any], container: dict[str, Any],
                               opts: ContainerOptions, sandbox_opts: SandboxOptions) -> str:
        from nodeagent.runtime import podconfig

        sb_cfg = self._sandbox_configs.get(sandbox_id) or self._sandbox_config(pod, sandbox_opts)
        mounts = [{"container_path": m.container_path, "host_path": m.host_path, "readonly": m.readonly}
                  for m in opts.mounts]
        cfg = podconfig.container_config(pod, container, attempt=opts.attempt, env=opts.env, mounts=mounts,
                                         image=opts.image_ref or None, spec_hash=hash_container(container))
        cid = await self.client.create_container(sandbox_id, cfg, sb_cfg)
        return str(cid)

    async def start_container(self, container_id: str) -> None:
        await self.client.start_container(container_id)

    async def stop_container(self, container_id: str, timeout: int) -> None:
        await self.client.stop_container(container_id, timeout)

    async def remove_container(self, container_id: str) -> None:
        await self.client.remove_container(container_id)

    async def reopen_container_log(self, container_id: str) -> None:
        await self.client.reopen_container_log(container_id)

    async def exec_sync(self, container_id: str, cmd: list[str], timeout: float) -> ExecResult:
        r = await self.client.exec_sync(container_id, cmd, timeout=max(1, int(timeout)))
        return ExecResult(r.exit_code, r.stdout, r.stderr)

    async def exec_url(self, container_id: str, cmd: list[str], tty: bool, stdin: bool,
                       stdout: bool, stderr: bool) -> str:
        return await self.client.exec(container_id, cmd, tty=tty, stdin=stdin, stdout=stdout, stderr=stderr)

    async def attach_url(self, container_id: str, tty: bool, stdin: bool, stdout: bool, stderr: bool) -> str:
        return await self.client.attach(container_id, tty=tty, stdin=stdin, stdout=stdout, stderr=stderr)

    async def port_forward_url(self, sandbox_id: str, ports: list[int]) -> str:
        return await self.client.port_forward(sandbox_id, ports)

    async def close(self) -> None:
        await self.client.close()


# Labels the adapter relies on are the runtime's (podconfig sets them); names kept here for readers.
__all__ = ["CRIRuntime", "ImageError", "LABEL_POD_NAME", "LABEL_POD_NAMESPACE"]
