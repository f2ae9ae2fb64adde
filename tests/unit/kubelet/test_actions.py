"""compute_pod_actions: the plan step, against hand-built runtime states (kuberuntime_manager_test.go)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from nodeagent.kubelet.actions import compute_pod_actions
from nodeagent.kubelet.model import (
    Container,
    ContainerState,
    PodRuntimeStatus,
    Sandbox,
    SandboxState,
    hash_container,
)

UID = "uid-1"


def pod(policy: str = "Always", containers: tuple[str, ...] = ("a", "b"), inits: tuple[str, ...] = (),
        host_network: bool = False, deleting: bool = False) -> dict[str, Any]:
    p: dict[str, Any] = {
        "metadata": {"name": "p", "namespace": "default", "uid": UID},
        "spec": {"restartPolicy": policy, "containers": [{"name": n, "image": "img"} for n in containers],
                 "initContainers": [{"name": n, "image": "img"} for n in inits], "hostNetwork": host_network},
    }
    if deleting:
        p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return p


def sandbox(sid: str = "sb", attempt: int = 0, ready: bool = True, ip: str = "10.244.0.5") -> Sandbox:
    return Sandbox(id=sid, pod_uid=UID, pod_name="p", pod_namespace="default", attempt=attempt,
                   state=SandboxState.READY if ready else SandboxState.NOTREADY, created_at=float(attempt), ip=ip)


def ctr(name: str, state: ContainerState, exit_code: int = 0, attempt: int = 0, cid: str | None = None) -> Container:
    return Container(id=cid or f"{name}-{attempt}", pod_uid=UID, sandbox_id="sb", name=name, attempt=attempt,
                     state=state, created_at=float(attempt), exit_code=exit_code)


def status(*items: Sandbox | Container) -> PodRuntimeStatus:
    return PodRuntimeStatus(uid=UID, sandboxes=[i for i in items if isinstance(i, Sandbox)],
                            containers=[i for i in items if isinstance(i, Container)])


RUN, EXIT, CREATED, UNKNOWN = (ContainerState.RUNNING, ContainerState.EXITED, ContainerState.CREATED,
                               ContainerState.UNKNOWN)


def test_new_pod_creates_sandbox_and_starts_all_containers() -> None:
    a = compute_pod_actions(pod(), status())
    assert a.create_sandbox and a.kill_pod and a.attempt == 0
    assert a.containers_to_start == ["a", "b"]
    assert a.next_init_container is None


def test_new_pod_with_init_containers_starts_the_first_init_only() -> None:
    a = compute_pod_actions(pod(inits=("i1", "i2")), status())
    assert a.create_sandbox and a.next_init_container == "i1" and a.containers_to_start == []


def test_all_running_is_noop() -> None:
    a = compute_pod_actions(pod(), status(sandbox(), ctr("a", RUN), ctr("b", RUN)))
    assert a.is_noop()


def test_dead_sandbox_is_recreated_with_next_attempt() -> None:
    a = compute_pod_actions(pod(), status(sandbox(ready=False, attempt=2), ctr("a", EXIT), ctr("b", EXIT)))
    assert a.create_sandbox and a.kill_pod and a.attempt == 3 and a.sandbox_id == "sb"


def test_sandbox_without_ip_is_recreated_unless_host_network() -> None:
    assert compute_pod_actions(pod(), status(sandbox(ip=""), ctr("a", RUN), ctr("b", RUN))).create_sandbox
    hn = compute_pod_actions(pod(host_network=True), status(sandbox(ip=""), ctr("a", RUN), ctr("b", RUN)))
    assert not hn.create_sandbox and hn.is_noop()


def test_two_ready_sandboxes_are_replaced() -> None:
    a = compute_pod_actions(pod(), status(sandbox("s1", 0), sandbox("s2", 1), ctr("a", RUN), ctr("b", RUN)))
    assert a.create_sandbox and a.attempt == 2


def test_never_pod_with_dead_sandbox_is_not_recreated() -> None:
    a = compute_pod_actions(pod("Never"), status(sandbox(ready=False), ctr("a", EXIT, 1), ctr("b", EXIT, 0)))
    assert not a.create_sandbox and a.kill_pod and not a.containers_to_start


def test_onfailure_sandbox_recreated_only_for_unsucceeded_containers() -> None:
    a = compute_pod_actions(pod("OnFailure"), status(sandbox(ready=False), ctr("a", EXIT, 0), ctr("b", EXIT, 2)))
    assert a.create_sandbox and a.containers_to_start == ["b"]
    done = compute_pod_actions(pod("OnFailure"), status(sandbox(ready=False), ctr("a", EXIT, 0), ctr("b", EXIT, 0)))
    assert not done.create_sandbox


def test_restart_policy_always_restarts_exited_containers() -> None:
    a = compute_pod_actions(pod("Always"), status(sandbox(), ctr("a", EXIT, 0), ctr("b", RUN)))
    assert a.containers_to_start == ["a"] and not a.kill_pod


def test_restart_policy_onfailure_restarts_only_failures() -> None:
    a = compute_pod_actions(pod("OnFailure"), status(sandbox(), ctr("a", EXIT, 0), ctr("b", EXIT, 1)))
    assert a.containers_to_start == ["b"] and not a.kill_pod


def test_restart_policy_never_finished_pod_is_killed() -> None:
    a = compute_pod_actions(pod("Never"), status(sandbox(), ctr("a", EXIT, 0), ctr("b", EXIT, 1)))
    assert a.containers_to_start == [] and a.kill_pod and not a.create_sandbox


def test_never_keeps_pod_while_one_container_runs() -> None:
    a = compute_pod_actions(pod("Never"), status(sandbox(), ctr("a", EXIT, 1), ctr("b", RUN)))
    assert a.is_noop()


def test_failed_liveness_kills_and_restarts() -> None:
    a = compute_pod_actions(pod(), status(sandbox(), ctr("a", RUN), ctr("b", RUN)), liveness_failed={"a"})
    assert a.containers_to_start == ["a"]
    assert list(a.containers_to_kill) == ["a-0"]
    assert a.containers_to_kill["a-0"].reason == "Unhealthy"
    assert "will be restarted" in a.containers_to_kill["a-0"].message


def test_failed_liveness_under_never_kills_without_restart() -> None:
    a = compute_pod_actions(pod("Never"), status(sandbox(), ctr("a", RUN), ctr("b", RUN)), liveness_failed={"a"})
    assert a.containers_to_start == [] and list(a.containers_to_kill) == ["a-0"] and not a.kill_pod


def test_failed_startup_probe_restarts() -> None:
    a = compute_pod_actions(pod(), status(sandbox(), ctr("a", RUN), ctr("b", RUN)), startup_failed={"b"})
    assert a.containers_to_start == ["b"] and "b-0" in a.containers_to_kill


def test_unknown_container_is_killed_before_restart() -> None:
    a = compute_pod_actions(pod(), status(sandbox(), ctr("a", UNKNOWN), ctr("b", RUN)))
    assert a.containers_to_start == ["a"] and "a-0" in a.containers_to_kill


def test_init_containers_run_in_order() -> None:
    p = pod(inits=("i1", "i2"))
    running = compute_pod_actions(p, status(sandbox(), ctr("i1", RUN)))
    assert running.is_noop()  # wait for i1
    nxt = compute_pod_actions(p, status(sandbox(), ctr("i1", EXIT, 0)))
    assert nxt.next_init_container == "i2" and not nxt.containers_to_start
    done = compute_pod_actions(p, status(sandbox(), ctr("i1", EXIT, 0), ctr("i2", EXIT, 0)))
    assert done.next_init_container is None and done.containers_to_start == ["a", "b"]


def test_failed_init_container_is_retried_or_fails_the_pod() -> None:
    st = status(sandbox(), ctr("i1", EXIT, 0), ctr("i2", EXIT, 3))
    retry = compute_pod_actions(pod("Always", inits=("i1", "i2")), st)
    assert retry.next_init_container == "i2" and not retry.kill_pod
    fail = compute_pod_actions(pod("Never", inits=("i1", "i2")), st)
    assert fail.kill_pod and fail.next_init_container is None


def test_running_app_container_means_init_done() -> None:
    a = compute_pod_actions(pod(inits=("i1",)), status(sandbox(), ctr("a", RUN), ctr("b", RUN)))
    assert a.is_noop()


def test_deleting_pod_starts_nothing() -> None:
    a = compute_pod_actions(pod(deleting=True), status(sandbox(), ctr("a", EXIT, 1), ctr("b", RUN)))
    assert a.containers_to_start == []


def test_latest_attempt_decides() -> None:
    st = status(sandbox(), ctr("a", EXIT, 1, attempt=0), ctr("a", RUN, attempt=1), ctr("b", RUN))
    assert compute_pod_actions(pod(), st).is_noop()


# --- containerChanged: the hash of the spec a container was created from ------------------------

def made_from(c: Container, image: str) -> Container:
    """The record as the runtime holds it: the hash of the spec it was created with."""
    return replace(c, hash=hash_container({"name": c.name, "image": image}))


def test_hash_covers_what_upstream_hashes_name_and_image() -> None:
    base = {"name": "a", "image": "img", "command": ["sleep", "1"]}
    assert hash_container(base) == hash_container({**base, "command": ["other"], "env": [{"name": "X"}]})
    assert hash_container(base) != hash_container({**base, "image": "img:2"})
    assert hash_container(base) != hash_container({**base, "name": "b"})
    assert hash_container(base) == hash_container(dict(reversed(list(base.items()))))


def test_running_containers_of_the_current_spec_are_kept() -> None:
    st = status(sandbox(), made_from(ctr("a", RUN), "img"), made_from(ctr("b", RUN), "img"))
    assert compute_pod_actions(pod(), st).is_noop()


def test_changed_image_kills_and_restarts_that_container_only() -> None:
    st = status(sandbox(), made_from(ctr("a", RUN), "old"), made_from(ctr("b", RUN), "img"))
    a = compute_pod_actions(pod(), st)
    assert a.containers_to_start == ["a"] and list(a.containers_to_kill) == ["a-0"]
    info = a.containers_to_kill["a-0"]
    assert info.message == "Container a definition changed, will be restarted"
    assert info.spec_changed and info.reason == ""
    assert not a.kill_pod and not a.create_sandbox


def test_changed_image_restarts_whatever_the_restart_policy() -> None:
    for policy in ("Never", "OnFailure"):
        st = status(sandbox(), made_from(ctr("a", RUN), "old"), made_from(ctr("b", RUN), "img"))
        a = compute_pod_actions(pod(policy), st)
        assert a.containers_to_start == ["a"] and a.containers_to_kill["a-0"].spec_changed, policy


def test_definition_change_wins_over_a_failed_probe() -> None:
    st = status(sandbox(), made_from(ctr("a", RUN), "old"), made_from(ctr("b", RUN), "img"))
    a = compute_pod_actions(pod("Never"), st, liveness_failed={"a"})
    assert a.containers_to_kill["a-0"].message == "Container a definition changed, will be restarted"
    assert a.containers_to_start == ["a"]


def test_exited_container_of_an_old_spec_follows_its_restart_policy() -> None:
    st = status(sandbox(), made_from(ctr("a", EXIT, 0), "old"), made_from(ctr("b", RUN), "img"))
    assert compute_pod_actions(pod("Never"), st).is_noop()
    assert compute_pod_actions(pod("Always"), st).containers_to_start == ["a"]


def test_a_record_without_a_hash_is_not_compared() -> None:
    assert compute_pod_actions(pod(), status(sandbox(), ctr("a", RUN), ctr("b", RUN))).is_noop()
