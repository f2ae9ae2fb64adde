"""The runtime operations the kubelet needs, as a Protocol.

cri_runtime.CRIRuntime implements it over the CRI (nodeagent.runtime); the tests' fake CRI
(tests/helpers/kubelet_fake_cri.py) implements it in memory. Every call is a single CRI call or
a short fixed sequence of them.

The kubelet hands the service a Pod and what it resolved on the node (SandboxOptions,
ContainerOptions); all Pod -> CRI translation (PodSandboxConfig, ContainerConfig, labels,
annotations, the pod's log directory) happens behind it, in one place (upstream keeps it in
kuberuntime: generatePodSandboxConfig, generateContainerConfig, BuildPodLogsDirectory).
"""

from __future__ import annotations

from typing import Any, Protocol

from nodeagent.kubelet.model import (
    Container,
    ContainerOptions,
    ExecResult,
    Sandbox,
    SandboxOptions,
)


class RuntimeService(Protocol):
    async def version(self) -> tuple[str, str]:
        """(runtime name, runtime version), e.g. ("containerd", "1.6.20")."""
        ...

    async def runtime_ready(self) -> tuple[bool, str]:
        """CRI Status: (RuntimeReady and NetworkReady, why not)."""
        ...

    async def list_sandboxes(self, pod_uid: str | None = None) -> list[Sandbox]: ...

    async def list_containers(self, pod_uid: str | None = None) -> list[Container]:
        """Containers (of one pod if pod_uid); exit codes and times only from container_status."""
        ...

    async def sandbox_status(self, sandbox_id: str) -> Sandbox: ...

    async def container_status(self, container_id: str) -> Container: ...

    def pod_log_directory(self, pod: dict[str, Any]) -> str:
        """Where the pod's container logs live (<logs root>/<ns>_<name>_<uid>): each container's
        attempts are <name>/<attempt>.log in it."""
        ...

    async def run_sandbox(self, pod: dict[str, Any], opts: SandboxOptions) -> str:
        """RunPodSandbox; the service keeps the PodSandboxConfig for the sandbox's containers."""
        ...

    async def stop_sandbox(self, sandbox_id: str) -> None: ...

    async def remove_sandbox(self, sandbox_id: str) -> None: ...

    async def ensure_image(self, image: str, pull_policy: str) -> tuple[str, bool]:
        """Make the image present; return (image reference, whether it was pulled now)."""
        ...

    async def create_container(self, sandbox_id: str, pod: dict[str, Any], container: dict[str, Any],
                               opts: ContainerOptions, sandbox_opts: SandboxOptions) -> str:
        """CreateContainer with the sandbox's config as run_sandbox built it; `sandbox_opts` rebuild
        it only for a sandbox this service did not create (adopted after a kubelet restart)."""
        ...

    async def start_container(self, container_id: str) -> None: ...

    async def stop_container(self, container_id: str, timeout: int) -> None: ...

    async def remove_container(self, container_id: str) -> None: ...

    async def reopen_container_log(self, container_id: str) -> None:
        """Make the runtime reopen the container's log file (after the kubelet rotated it)."""
        ...

    async def exec_sync(self, container_id: str, cmd: list[str], timeout: float) -> ExecResult: ...

    async def exec_url(self, container_id: str, cmd: list[str], tty: bool, stdin: bool,
                       stdout: bool, stderr: bool) -> str:
        """The streaming server URL for an interactive exec (CRI Exec)."""
        ...

    async def attach_url(self, container_id: str, tty: bool, stdin: bool, stdout: bool, stderr: bool) -> str:
        """The streaming server URL for attaching to the container's main process (CRI Attach); `tty`
        must be what the container was created with."""
        ...

    async def port_forward_url(self, sandbox_id: str, ports: list[int]) -> str:
        """The streaming server URL for a port forward into the pod's sandbox (CRI PortForward)."""
        ...

    async def close(self) -> None: ...
