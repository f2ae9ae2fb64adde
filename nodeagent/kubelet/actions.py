"""The plan step of a pod sync: compare the pod spec with what the runtime holds, decide what to do.

compute_pod_actions is pure (no I/O, no clock): given the Pod, its runtime status and the failed
probes it returns PodActions, which sync.py executes in numbered steps. The decisions follow
upstream's kuberuntime_manager.go computePodActions / podSandboxChanged / containerChanged /
findNextInitContainerToRun and kubecontainer.ShouldContainerBeRestarted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nodeagent.kubelet.model import Container, ContainerState, PodRuntimeStatus, SandboxState, hash_container


@dataclass
class KillInfo:
    name: str
    message: str  # the Killing event's message, as upstream's killContainer records it
    reason: str = ""  # e.g. "Unhealthy" for a failed probe
    spec_changed: bool = False  # killed for a new definition: its restart starts a fresh back-off


@dataclass
class PodActions:
    kill_pod: bool = False
    create_sandbox: bool = False
    sandbox_id: str = ""
    attempt: int = 0
    next_init_container: str | None = None
    containers_to_start: list[str] = field(default_factory=list)
    containers_to_kill: dict[str, KillInfo] = field(default_factory=dict)  # container id -> why

    def is_noop(self) -> bool:
        return not (self.kill_pod or self.create_sandbox or self.next_init_container
                    or self.containers_to_start or self.containers_to_kill)


def restart_policy(pod: dict[str, Any]) -> str:
    return str(pod.get("spec", {}).get("restartPolicy") or "Always")


def should_restart_on_failure(pod: dict[str, Any]) -> bool:
    return restart_policy(pod) != "Never"


def host_network(pod: dict[str, Any]) -> bool:
    return bool(pod.get("spec", {}).get("hostNetwork"))


def _names(containers: list[dict[str, Any]] | None) -> list[str]:
    return [c["name"] for c in containers or []]


def container_succeeded(name: str, status: PodRuntimeStatus) -> bool:
    c = status.latest(name)
    return c is not None and c.state == ContainerState.EXITED and c.exit_code == 0


def init_container_failed(c: Container) -> bool:
    if c.state == ContainerState.EXITED and c.exit_code != 0:
        return True
    return c.state == ContainerState.UNKNOWN


def should_container_be_restarted(name: str, pod: dict[str, Any], status: PodRuntimeStatus) -> bool:
    """kubecontainer.ShouldContainerBeRestarted."""
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    c = status.latest(name)
    if c is None:
        return True  # never started
    if c.state == ContainerState.RUNNING:
        return False
    if c.state in (ContainerState.UNKNOWN, ContainerState.CREATED):
        return True
    policy = restart_policy(pod)
    if policy == "Never":
        return False
    if policy == "OnFailure" and c.exit_code == 0:
        return False
    return True


def container_changed(container: dict[str, Any], c: Container) -> bool:
    """containerChanged: the running container was created from another definition (its hash
    annotation differs from the spec's). A record without the annotation is not compared: the
    kubelet always writes it, so only a hand-built record lacks it."""
    return bool(c.hash) and c.hash != hash_container(container)


def sandbox_changed(pod: dict[str, Any], status: PodRuntimeStatus) -> tuple[bool, int, str]:
    """podSandboxChanged: (create a new sandbox?, its attempt, the current sandbox id)."""
    if not status.sandboxes:
        return True, 0, ""
    newest = status.newest_sandbox()
    assert newest is not None
    if len(status.ready_sandboxes()) > 1:
        return True, newest.attempt + 1, newest.id
    if newest.state != SandboxState.READY:
        return True, newest.attempt + 1, newest.id
    if not host_network(pod) and not newest.ip:
        return True, newest.attempt + 1, newest.id
    return False, newest.attempt, newest.id


def next_init_container(pod: dict[str, Any], status: PodRuntimeStatus) -> tuple[Container | None, str | None, bool]:
    """findNextInitContainerToRun: (status of the last one, the next to run, all done?)."""
    spec = pod.get("spec", {})
    inits = _names(spec.get("initContainers"))
    if not inits:
        return None, None, True
    # Once an app container runs, the init containers have all succeeded.
    for name in _names(spec.get("containers")):
        c = status.latest(name)
        if c is not None and c.state == ContainerState.RUNNING:
            return None, None, True
    for name in reversed(inits):
        c = status.latest(name)
        if c is not None and init_container_failed(c):
            return c, name, False
    for i in range(len(inits) - 1, -1, -1):
        c = status.latest(inits[i])
        if c is None:
            continue
        if c.state in (ContainerState.RUNNING, ContainerState.CREATED):
            return None, None, False  # still running: wait for it
        if c.state == ContainerState.EXITED:
            if i == len(inits) - 1:
                return None, None, True
            return c, inits[i + 1], False
    return None, inits[0], False


def compute_pod_actions(pod: dict[str, Any], status: PodRuntimeStatus,
                        liveness_failed: frozenset[str] | set[str] = frozenset(),
                        startup_failed: frozenset[str] | set[str] = frozenset()) -> PodActions:
    """What to do to bring the runtime to the pod's spec (computePodActions)."""
    spec = pod.get("spec", {})
    app_names = _names(spec.get("containers"))
    init_names = _names(spec.get("initContainers"))
    create, attempt, sandbox_id = sandbox_changed(pod, status)
    actions = PodActions(kill_pod=create, create_sandbox=create, sandbox_id=sandbox_id, attempt=attempt)

    if create:
        # A restartPolicy=Never pod whose sandbox died after its containers ran is finished:
        # a new sandbox would rerun containers that must not run again.
        if not should_restart_on_failure(pod) and attempt != 0 and status.containers:
            actions.create_sandbox = False
            return actions
        to_start = [n for n in app_names
                    if not (restart_policy(pod) == "OnFailure" and container_succeeded(n, status))]
        if not to_start:
            actions.create_sandbox = False
            return actions
        if init_names:
            actions.next_init_container = init_names[0]
            return actions
        actions.containers_to_start = to_start
        return actions

    last_init, nxt, done = next_init_container(pod, status)
    if not done:
        if nxt is not None:
            if last_init is not None and init_container_failed(last_init) and not should_restart_on_failure(pod):
                actions.kill_pod = True
            else:
                if last_init is not None and last_init.state == ContainerState.UNKNOWN:
                    actions.containers_to_kill[last_init.id] = KillInfo(
                        last_init.name, "Init container is in unknown state, try killing it before restart")
                actions.next_init_container = nxt
        return actions

    keep = 0
    for container in spec.get("containers") or []:
        name = container["name"]
        c = status.latest(name)
        if c is None or c.state != ContainerState.RUNNING:
            if should_container_be_restarted(name, pod, status):
                actions.containers_to_start.append(name)
                if c is not None and c.state in (ContainerState.UNKNOWN, ContainerState.CREATED):
                    actions.containers_to_kill[c.id] = KillInfo(
                        name, "Container is in unknown state, try killing it before restart")
            continue
        changed = container_changed(container, c)
        restart = should_restart_on_failure(pod)
        if changed:
            # Restart whatever the restart policy: the container spec changed (upstream).
            message, reason, restart = f"Container {name} definition changed", "", True
        elif name in liveness_failed:
            message, reason = f"Container {name} failed liveness probe", "Unhealthy"
        elif name in startup_failed:
            message, reason = f"Container {name} failed startup probe", "Unhealthy"
        else:
            keep += 1
            continue
        if restart:
            message += ", will be restarted"
            actions.containers_to_start.append(name)
        actions.containers_to_kill[c.id] = KillInfo(name, message, reason, spec_changed=changed)

    if keep == 0 and not actions.containers_to_start:
        actions.kill_pod = True
    return actions
