"""What the kubelet knows about the runtime: plain records, independent of the CRI's protobufs.

The kubelet reasons about sandboxes and containers through these records only; the adapter in
cri_runtime.py turns CRI messages into them, and the fake CRI in the tests builds them directly.
(Upstream keeps the same split: kubecontainer.Pod / PodStatus vs. runtimeapi.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# Labels the kubelet puts on every sandbox and container (upstream's names, pkg/kubelet/types/labels.go)
# so that a restarted kubelet can adopt what it finds.
LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"
# The hash of the container's spec at creation (kuberuntime/labels.go containerHashLabel): the
# plan compares it with the spec's current hash and restarts the container when they differ.
ANNOTATION_CONTAINER_HASH = "io.kubernetes.container.hash"

_FNV32_OFFSET, _FNV32_PRIME = 0x811C9DC5, 0x01000193


def hash_container(container: Mapping[str, Any]) -> str:
    """kubecontainer.HashContainer: FNV-32a of the JSON of the fields a running container cannot
    follow without a restart, in hex. Upstream hashes only name and image (pickFieldsToHash):
    image is the one container field the apiserver lets a Pod update change, and hashing the
    whole spec would restart every container whenever defaulting adds a field."""
    data = json.dumps({"image": str(container.get("image", "")), "name": str(container.get("name", ""))},
                      sort_keys=True, separators=(",", ":")).encode()
    h = _FNV32_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV32_PRIME) & 0xFFFFFFFF
    return f"{h:x}"


class SandboxState(StrEnum):
    READY = "SANDBOX_READY"
    NOTREADY = "SANDBOX_NOTREADY"


class ContainerState(StrEnum):
    CREATED = "CONTAINER_CREATED"
    RUNNING = "CONTAINER_RUNNING"
    EXITED = "CONTAINER_EXITED"
    UNKNOWN = "CONTAINER_UNKNOWN"


@dataclass
class Sandbox:
    id: str
    pod_uid: str
    pod_name: str
    pod_namespace: str
    attempt: int
    state: SandboxState
    created_at: float  # seconds since the epoch
    ip: str = ""
    ips: list[str] = field(default_factory=list)
    netns_path: str = ""  # "" for hostNetwork sandboxes or when unknown
    host_network: bool = False


@dataclass
class Container:
    id: str
    pod_uid: str
    sandbox_id: str
    name: str
    attempt: int
    state: ContainerState
    created_at: float
    image: str = ""
    image_ref: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    log_path: str = ""
    hash: str = ""  # ANNOTATION_CONTAINER_HASH as created; "" when the runtime record has none


@dataclass
class PodRuntimeStatus:
    """Everything the runtime holds for one pod: its sandboxes (newest first) and containers."""

    uid: str
    name: str = ""
    namespace: str = ""
    sandboxes: list[Sandbox] = field(default_factory=list)
    containers: list[Container] = field(default_factory=list)

    def latest(self, name: str) -> Container | None:
        """The newest container of that name (highest attempt, then newest)."""
        mine = [c for c in self.containers if c.name == name]
        if not mine:
            return None
        return max(mine, key=lambda c: (c.attempt, c.created_at))

    def by_name(self, name: str) -> list[Container]:
        """All containers of that name, newest first."""
        return sorted((c for c in self.containers if c.name == name),
                      key=lambda c: (c.attempt, c.created_at), reverse=True)

    def ready_sandboxes(self) -> list[Sandbox]:
        return [s for s in self.sandboxes if s.state == SandboxState.READY]

    def newest_sandbox(self) -> Sandbox | None:
        if not self.sandboxes:
            return None
        return max(self.sandboxes, key=lambda s: (s.attempt, s.created_at))


@dataclass
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


@dataclass
class SandboxOptions:
    """What the kubelet resolved for a sandbox beyond the pod spec (the runtime service derives
    the rest of the PodSandboxConfig from the pod: hostname, log directory, labels, ports)."""

    attempt: int
    dns_servers: list[str] = field(default_factory=list)
    dns_searches: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    runtime_handler: str = ""  # the pod's RuntimeClass handler ("": the runtime's default)


@dataclass
class Mount:
    container_path: str
    host_path: str
    readonly: bool = False


@dataclass
class ContainerOptions:
    """What the kubelet resolved for one container: env, mounts, attempt, the image it found
    (the runtime service derives the rest of the ContainerConfig: log path, labels, hash)."""

    attempt: int
    env: list[tuple[str, str]]
    mounts: list[Mount]
    image_ref: str = ""


class ImageError(Exception):
    """The image is not available: `reason` is the container's waiting reason (ErrImagePull...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
