"""Pod start-up: the per-step metrics (pod_startup.py), the RuntimeClass handler passed to
RunPodSandbox (runtimeclass.py) and the --max-pods admission (admission.py), over FakeClient and
the fake CRI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import generate_latest

from nodeagent.kubelet.instrumented import InstrumentedRuntime
from nodeagent.kubelet.metrics import KubeletMetrics
from nodeagent.kubelet.model import SandboxOptions
from nodeagent.kubelet.pod_startup import PHASES, PodStartupTracker
from nodeagent.machinery.kinds import EVENTS, PODS, RUNTIME_CLASSES
from tests.helpers.kubelet_env import Harness, make_harness, make_pod, wait_for
from tests.helpers.kubelet_fake_cri import FakeRuntime


@pytest.fixture
async def h(tmp_path: object) -> AsyncIterator[Harness]:
    harness = make_harness(str(tmp_path), max_pods=2)
    await harness.client.create(RUNTIME_CLASSES, {"metadata": {"name": "fast"}, "handler": "crun"})
    await harness.kubelet.start()
    try:
        yield harness
    finally:
        await harness.kubelet.stop()


def _metrics(h: Harness) -> str:
    return generate_latest(h.kubelet.metrics.registry).decode()


def _events(h: Harness, pod: str) -> list[tuple[str, str]]:
    return [(e["reason"], e["message"]) for e in h.client.objects(EVENTS) if e["involvedObject"]["name"] == pod]


async def test_runtime_class_handler_reaches_run_pod_sandbox(h: Harness) -> None:
    await h.create(make_pod("web", runtimeClassName="fast"))
    await wait_for(lambda: h.condition("web", "Ready") == "True", what="web Ready")
    (opts,) = h.runtime.sandbox_opts.values()
    assert opts.runtime_handler == "crun"


async def test_no_runtime_class_is_the_default_handler(h: Harness) -> None:
    await h.create(make_pod("plain"))
    await wait_for(lambda: h.condition("plain", "Ready") == "True", what="plain Ready")
    (opts,) = h.runtime.sandbox_opts.values()
    assert opts.runtime_handler == ""


async def test_a_runtime_class_deleted_after_admission_fails_the_sandbox_until_it_exists(tmp_path: object) -> None:
    # The apiserver's RuntimeClass admission refuses a pod naming an unknown class; the kubelet
    # meets one only when the class is deleted after the pod was admitted.
    h = make_harness(str(tmp_path))
    await h.client.create(RUNTIME_CLASSES, {"metadata": {"name": "gone"}, "handler": "crun"})
    await h.create(make_pod("odd", runtimeClassName="gone"))
    await h.client.delete(RUNTIME_CLASSES, "gone")
    await h.kubelet.start()
    try:
        msg = 'Failed to create pod sandbox: runtimeclass.node.k8s.io "gone" not found'

        async def failed() -> bool:
            await h.kubelet.recorder.flush()
            return ("FailedCreatePodSandBox", msg) in _events(h, "odd")

        await wait_for(failed, what="FailedCreatePodSandBox event")
        assert h.runtime.calls_of("RunPodSandbox") == []
        assert h.status("odd").get("phase", "Pending") == "Pending"
        # upstream retries the sandbox: once the class is back the pod starts with its handler
        await h.client.create(RUNTIME_CLASSES, {"metadata": {"name": "gone"}, "handler": "runc"})
        await wait_for(lambda: h.condition("odd", "Ready") == "True", timeout=15, what="odd Ready")
        assert [o.runtime_handler for o in h.runtime.sandbox_opts.values()] == ["runc"]
    finally:
        await h.kubelet.stop()


async def test_start_phases_and_upstream_start_metrics(h: Harness) -> None:
    await h.create(make_pod("web"))
    await wait_for(lambda: h.condition("web", "Ready") == "True", what="web Ready")
    await wait_for(lambda: 'nodeagent_kubelet_pod_start_phase_duration_seconds_count{phase="watch"} 1.0' in _metrics(h),
                   what="the watch phase recorded")
    text = _metrics(h)
    for phase in PHASES:
        assert f'nodeagent_kubelet_pod_start_phase_duration_seconds_count{{phase="{phase}"}} 1.0' in text, phase
    assert "kubelet_pod_start_duration_seconds_count 1.0" in text
    assert 'kubelet_pod_start_sli_duration_seconds_count{first_with_network="true"} 1.0' in text
    assert 'kubelet_pod_start_total_duration_seconds_count{first_with_network="true"} 1.0' in text
    assert "kubelet_pod_status_sync_duration_seconds_count" in text
    # a restart of the container is not a second pod start
    uid = h.pod("web")["metadata"]["uid"]  # type: ignore[index]
    first = h.runtime.running(uid, "c")
    assert first is not None
    h.runtime.exit(first.id, 1)
    await wait_for(lambda: len(h.runtime.calls_of("StartContainer")) == 2, what="the restart")
    assert 'nodeagent_kubelet_pod_start_phase_duration_seconds_count{phase="start"} 1.0' in _metrics(h)


async def test_pods_beyond_max_pods_are_rejected(h: Harness) -> None:
    for name in ("a", "b"):
        await h.create(make_pod(name))
    await wait_for(lambda: h.condition("a", "Ready") == "True" and h.condition("b", "Ready") == "True",
                   what="two pods Ready")
    await h.create(make_pod("c"))
    await wait_for(lambda: h.status("c").get("phase") == "Failed", what="c rejected")
    st = h.status("c")
    text = "Node didn't have enough resource: pods, requested: 1, used: 2, capacity: 2"
    assert st["reason"] == "OutOfpods" and st["message"] == "Pod was rejected: " + text
    await h.kubelet.recorder.flush()
    assert ("OutOfpods", text) in _events(h, "c")
    uid_c = h.pod("c")["metadata"]["uid"]  # type: ignore[index]
    assert uid_c not in h.runtime.calls_of("RunPodSandbox")
    # a freed slot does not bring a rejected pod back (upstream: rejected pods stay Failed) ...
    await h.client.delete(PODS, "a", namespace="default")
    await wait_for(lambda: h.pod("a") is None, what="a gone")
    assert h.status("c")["phase"] == "Failed" and uid_c not in h.runtime.calls_of("RunPodSandbox")
    # ... but a new pod fits again, and deleting the rejected one is confirmed
    await h.create(make_pod("d"))
    await wait_for(lambda: h.condition("d", "Ready") == "True", what="d Ready")
    await h.client.delete(PODS, "c", namespace="default")
    await wait_for(lambda: h.pod("c") is None, what="c deleted")


def test_tracker_records_when_the_watch_beats_the_patch_response() -> None:
    class Clock:
        t = 1_800_000_010.0

        def now(self) -> float:
            return self.t

    mono = iter(float(i) for i in range(100))
    m = KubeletMetrics()
    tr = PodStartupTracker(m, Clock(), monotonic=lambda: next(mono))
    pod: dict[str, Any] = {"metadata": {"uid": "u1", "creationTimestamp": "2027-01-15T08:00:05Z"},
                           "spec": {"containers": [{"name": "c"}]}}
    tr.observe_on_watch(pod)
    running = {"phase": "Running", "containerStatuses": [{"name": "c", "state": {"running": {"startedAt": "x"}}}]}
    tr.observe_on_watch({**pod, "status": running})  # the watch event first ...
    assert "nodeagent_kubelet_pod_start_phase_duration_seconds_count" not in generate_latest(m.registry).decode()
    tr.status_written("u1", running, pod["spec"])  # ... then the PATCH returns
    text = generate_latest(m.registry).decode()
    assert 'nodeagent_kubelet_pod_start_phase_duration_seconds_count{phase="watch"} 1.0' in text
    assert 'nodeagent_kubelet_pod_start_phase_duration_seconds_sum{phase="watch"} 0.0' in text
    assert 'kubelet_pod_start_sli_duration_seconds_count{first_with_network="true"} 1.0' in text


def test_tracker_ignores_a_pod_running_when_first_seen() -> None:
    m = KubeletMetrics()
    tr = PodStartupTracker(m, type("C", (), {"now": lambda self: 0.0})())
    running = {"phase": "Running", "containerStatuses": [{"name": "c", "state": {"running": {"startedAt": "x"}}}]}
    pod = {"metadata": {"uid": "u2"}, "spec": {"containers": [{"name": "c"}]}, "status": running}
    tr.observe_on_watch(pod)  # a restarted kubelet adopting a running pod
    tr.status_written("u2", running, pod["spec"])
    assert not tr.tracking("u2")
    assert "kubelet_pod_start_duration_seconds_count 0.0" in generate_latest(m.registry).decode()


async def test_run_podsandbox_duration_by_runtime_handler() -> None:
    m = KubeletMetrics()
    rt = InstrumentedRuntime(FakeRuntime(), m)
    pod = {"metadata": {"uid": "u3", "name": "p", "namespace": "default"}, "spec": {}}
    await rt.run_sandbox(pod, SandboxOptions(attempt=0, runtime_handler="crun"))
    rt._inner.fail_next["RunPodSandbox"] = RuntimeError("no runtime")
    with pytest.raises(RuntimeError):
        await rt.run_sandbox(pod, opts=SandboxOptions(attempt=0))
    text = generate_latest(m.registry).decode()
    assert 'kubelet_run_podsandbox_duration_seconds_count{runtime_handler="crun"} 1.0' in text
    assert 'kubelet_run_podsandbox_duration_seconds_count{runtime_handler=""} 1.0' in text
    assert 'kubelet_run_podsandbox_errors_total{runtime_handler=""} 1.0' in text
    assert 'kubelet_runtime_operations_duration_seconds_count{operation_type="run_podsandbox"} 2.0' in text
