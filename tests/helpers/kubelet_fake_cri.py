"""An in-memory runtime implementing nodeagent.kubelet.runtime_service.RuntimeService.

Like upstream's fake runtime service (cri-api/pkg/apis/testing/fake_runtime_service.go): it keeps
sandboxes and containers in dicts, records every call, and lets a test make a container exit.
"""

from __future__ import annotations

import itertools
from typing import Any

from nodeagent.clock import Clock, FakeClock
from nodeagent.kubelet.model import (
    Container,
    ContainerOptions,
    ContainerState,
    ExecResult,
    Sandbox,
    SandboxOptions,
    SandboxState,
    hash_container,
)
from nodeagent.runtime import podconfig


class FakeRuntime:
    def __init__(self, clock: Clock | None = None, logs_dir: str = "/var/log/pods") -> None:
        self.clock = clock or FakeClock()
        self.logs_dir = logs_dir
        self.sandboxes: dict[str, Sandbox] = {}
        self.containers: dict[str, Container] = {}
        self.calls: list[tuple[str, str]] = []
        self.sandbox_opts: dict[str, SandboxOptions] = {}
        self.container_opts: dict[str, ContainerOptions] = {}
        self.container_cmd: dict[str, list[str]] = {}
        self.exec_results: dict[tuple[str, ...], ExecResult] = {}
        self.attaches: list[tuple[str, bool, bool, bool, bool]] = []  # (id, tty, stdin, stdout, stderr)
        self.images: set[str] = set()
        self.fail_next: dict[str, Exception] = {}
        self._ids = itertools.count(1)
        self._ips = itertools.count(2)

    def _call(self, name: str, arg: str = "") -> None:
        self.calls.append((name, arg))
        err = self.fail_next.pop(name, None)
        if err is not None:
            raise err

    def calls_of(self, name: str) -> list[str]:
        return [a for n, a in self.calls if n == name]

    # --- test controls ----------------------------------------------------------------------
    def exit(self, container_id: str, code: int, reason: str = "") -> None:
        c = self.containers[container_id]
        c.state = ContainerState.EXITED
        c.exit_code = code
        c.finished_at = self.clock.now()
        c.reason = reason or ("Completed" if code == 0 else "Error")

    def running(self, pod_uid: str, name: str) -> Container | None:
        for c in self.containers.values():
            if c.pod_uid == pod_uid and c.name == name and c.state == ContainerState.RUNNING:
                return c
        return None

    # --- RuntimeService ----------------------------------------------------------------------
    async def version(self) -> tuple[str, str]:
        return "fake", "0.1.0"

    async def runtime_ready(self) -> tuple[bool, str]:
        return True, ""

    async def list_sandboxes(self, pod_uid: str | None = None) -> list[Sandbox]:
        self._call("ListPodSandbox", pod_uid or "")
        return [Sandbox(**vars(s)) for s in self.sandboxes.values() if pod_uid in (None, s.pod_uid)]

    async def list_containers(self, pod_uid: str | None = None) -> list[Container]:
        self._call("ListContainers", pod_uid or "")
        # As CRI ListContainers: no exit code, reason or times beyond creation.
        return [Container(id=c.id, pod_uid=c.pod_uid, sandbox_id=c.sandbox_id, name=c.name,
                          attempt=c.attempt, state=c.state, created_at=c.created_at, image=c.image,
                          image_ref=c.image_ref, hash=c.hash)
                for c in self.containers.values() if pod_uid in (None, c.pod_uid)]

    async def sandbox_status(self, sandbox_id: str) -> Sandbox:
        self._call("PodSandboxStatus", sandbox_id)
        if sandbox_id not in self.sandboxes:
            raise KeyError(f"sandbox {sandbox_id} not found")
        return Sandbox(**vars(self.sandboxes[sandbox_id]))

    async def container_status(self, container_id: str) -> Container:
        self._call("ContainerStatus", container_id)
        if container_id not in self.containers:
            raise KeyError(f"container {container_id} not found")
        return Container(**vars(self.containers[container_id]))

    def pod_log_directory(self, pod: dict[str, Any]) -> str:
        return podconfig.pod_log_directory(self.logs_dir, pod)

    async def run_sandbox(self, pod: dict[str, Any], opts: SandboxOptions) -> str:
        meta = pod["metadata"]
        self._call("RunPodSandbox", meta["uid"])
        sid = f"sb{next(self._ids)}"
        host = bool(pod.get("spec", {}).get("hostNetwork"))
        ip = "" if host else f"10.244.0.{next(self._ips)}"
        self.sandboxes[sid] = Sandbox(
            id=sid, pod_uid=meta["uid"], pod_name=meta["name"], pod_namespace=meta.get("namespace", "default"),
            attempt=opts.attempt, state=SandboxState.READY, created_at=self.clock.now(), ip=ip,
            ips=[ip] if ip else [], netns_path="" if host else f"/proc/fake/{sid}", host_network=host)
        self.sandbox_opts[sid] = opts
        return sid

    async def stop_sandbox(self, sandbox_id: str) -> None:
        self._call("StopPodSandbox", sandbox_id)
        s = self.sandboxes.get(sandbox_id)
        if s is None:
            return
        s.state = SandboxState.NOTREADY
        for c in self.containers.values():
            if c.sandbox_id == sandbox_id and c.state == ContainerState.RUNNING:
                self.exit(c.id, 137)

    async def remove_sandbox(self, sandbox_id: str) -> None:
        self._call("RemovePodSandbox", sandbox_id)
        self.sandboxes.pop(sandbox_id, None)
        for cid in [c.id for c in self.containers.values() if c.sandbox_id == sandbox_id]:
            del self.containers[cid]

    async def ensure_image(self, image: str, pull_policy: str) -> tuple[str, bool]:
        self._call("EnsureImage", image)
        pulled = image not in self.images
        self.images.add(image)
        return f"sha256:{abs(hash(image)):x}", pulled

    async def create_container(self, sandbox_id: str, pod: dict[str, Any], container: dict[str, Any],
                               opts: ContainerOptions, sandbox_opts: SandboxOptions) -> str:
        self._call("CreateContainer", container["name"])
        if sandbox_id not in self.sandboxes:
            raise KeyError(f"sandbox {sandbox_id} not found")
        cid = f"c{next(self._ids)}"
        self.containers[cid] = Container(
            id=cid, pod_uid=pod["metadata"]["uid"], sandbox_id=sandbox_id, name=container["name"],
            attempt=opts.attempt, state=ContainerState.CREATED, created_at=self.clock.now(),
            image=container.get("image", ""), image_ref=opts.image_ref,
            log_path=podconfig.container_log_path(container["name"], opts.attempt), hash=hash_container(container))
        self.container_opts[cid] = opts
        self.container_cmd[cid] = list(container.get("command") or []) + list(container.get("args") or [])
        return cid

    async def start_container(self, container_id: str) -> None:
        self._call("StartContainer", container_id)
        c = self.containers[container_id]
        c.state = ContainerState.RUNNING
        c.started_at = self.clock.now()

    async def stop_container(self, container_id: str, timeout: int) -> None:
        self._call("StopContainer", f"{container_id}:{timeout}")
        c = self.containers.get(container_id)
        if c is not None and c.state in (ContainerState.RUNNING, ContainerState.CREATED):
            self.exit(container_id, 137 if timeout == 0 else 143)

    async def remove_container(self, container_id: str) -> None:
        self._call("RemoveContainer", container_id)
        self.containers.pop(container_id, None)

    async def reopen_container_log(self, container_id: str) -> None:
        self._call("ReopenContainerLog", container_id)

    async def exec_sync(self, container_id: str, cmd: list[str], timeout: float) -> ExecResult:
        self._call("ExecSync", container_id)
        return self.exec_results.get(tuple(cmd), ExecResult(0, b"", b""))

    async def exec_url(self, container_id: str, cmd: list[str], tty: bool, stdin: bool,
                       stdout: bool, stderr: bool) -> str:
        self._call("Exec", container_id)
        return f"http://127.0.0.1:1/exec/{container_id}"

    async def attach_url(self, container_id: str, tty: bool, stdin: bool, stdout: bool, stderr: bool) -> str:
        self._call("Attach", container_id)
        self.attaches.append((container_id, tty, stdin, stdout, stderr))
        return f"http://127.0.0.1:1/attach/{container_id}"

    async def port_forward_url(self, sandbox_id: str, ports: list[int]) -> str:
        self._call("PortForward", sandbox_id)
        return f"http://127.0.0.1:1/portforward/{sandbox_id}"

    async def close(self) -> None:
        pass
