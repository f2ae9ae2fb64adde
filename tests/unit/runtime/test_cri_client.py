"""RuntimeClient against an in-process CRI server: requests on the wire, retries, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from nodeagent.runtime import podconfig
from nodeagent.runtime.cri import CRIError, RuntimeClient, normalize_endpoint, pb
from tests.helpers.runtime_fake_cri import FakeCRIServer


@pytest.fixture
async def server() -> AsyncIterator[FakeCRIServer]:
    s = FakeCRIServer()
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


def test_normalize_endpoint() -> None:
    assert normalize_endpoint("unix:///run/c.sock") == "unix:///run/c.sock"
    assert normalize_endpoint("unix:/run/c.sock") == "unix:///run/c.sock"
    assert normalize_endpoint("/run/c.sock") == "unix:///run/c.sock"
    with pytest.raises(ValueError, match="not a unix socket"):
        normalize_endpoint("tcp://1.2.3.4:1")


async def test_version_sends_api_version(server: FakeCRIServer) -> None:
    async with RuntimeClient(server.endpoint) as rt:
        v = await rt.version()
    assert (v.runtime_name, v.runtime_api_version) == ("fake", "v1")
    assert server.fake.calls("Version")[0].version == "v1"


async def test_unavailable_is_retried_then_succeeds(server: FakeCRIServer) -> None:
    server.fake.fail("Version", grpc.StatusCode.UNAVAILABLE, times=2)
    async with RuntimeClient(server.endpoint, retries=3, backoff=0.01) as rt:
        v = await rt.version()
    assert v.runtime_name == "fake"
    assert len(server.fake.calls("Version")) == 3


async def test_unavailable_retries_exhausted_raise(server: FakeCRIServer) -> None:
    server.fake.fail("Version", grpc.StatusCode.UNAVAILABLE, "busy", times=5)
    async with RuntimeClient(server.endpoint, retries=2, backoff=0.01) as rt:
        with pytest.raises(CRIError) as ei:
            await rt.version()
    assert ei.value.code == grpc.StatusCode.UNAVAILABLE
    assert len(server.fake.calls("Version")) == 3


async def test_other_errors_are_not_retried_and_name_call_and_target(server: FakeCRIServer) -> None:
    async with RuntimeClient(server.endpoint, retries=3, backoff=0.01) as rt:
        with pytest.raises(CRIError) as ei:
            await rt.remove_pod_sandbox("nope")
    err = ei.value
    assert (err.call, err.target, err.code) == ("RemovePodSandbox", "nope", grpc.StatusCode.NOT_FOUND)
    assert err.not_found
    assert "CRI RemovePodSandbox nope failed: NOT_FOUND: sandbox nope not found" in str(err)
    assert len(server.fake.calls("RemovePodSandbox")) == 1


async def test_no_runtime_listening_is_a_clear_error(tmp_path: Path) -> None:
    sock = Path("/tmp") / f"na-rt-none-{tmp_path.name[:8]}.sock"
    async with RuntimeClient(f"unix://{sock}", retries=1, backoff=0.01, timeout=2) as rt:
        with pytest.raises(CRIError) as ei:
            await rt.version()
    assert ei.value.code == grpc.StatusCode.UNAVAILABLE
    assert "is containerd running and serving" in str(ei.value)
    assert str(sock) in str(ei.value)


async def test_run_and_list_sandboxes_with_label_filter(server: FakeCRIServer) -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns", "uid": "u1"}, "spec": {"containers": []}}
    cfg = podconfig.sandbox_config(pod, log_directory="/l")
    async with RuntimeClient(server.endpoint) as rt:
        sid = await rt.run_pod_sandbox(cfg)
        other = dict(pod, metadata={"name": "q", "namespace": "ns", "uid": "u2"})
        await rt.run_pod_sandbox(podconfig.sandbox_config(other, log_directory="/l"))
        items = await rt.list_pod_sandbox(label_selector={"io.kubernetes.pod.uid": "u1"},
                                          state=pb.SANDBOX_READY)
    assert [s.id for s in items] == [sid]
    sent = server.fake.calls("RunPodSandbox")[0]
    assert sent.config.metadata.uid == "u1"
    flt = server.fake.calls("ListPodSandbox")[0].filter
    assert flt.HasField("state") and flt.state.state == pb.SANDBOX_READY
    assert dict(flt.label_selector) == {"io.kubernetes.pod.uid": "u1"}


async def test_list_containers_filter_without_state_leaves_it_unset(server: FakeCRIServer) -> None:
    async with RuntimeClient(server.endpoint) as rt:
        await rt.list_containers(pod_sandbox_id="sb1")
        await rt.list_containers(state=pb.CONTAINER_RUNNING)
    first, second = server.fake.calls("ListContainers")
    # An unset state filter must not become CONTAINER_CREATED (enum value 0).
    assert not first.filter.HasField("state") and first.filter.pod_sandbox_id == "sb1"
    assert second.filter.state.state == pb.CONTAINER_RUNNING


async def test_stop_container_passes_timeout_and_exec_sync_result(server: FakeCRIServer) -> None:
    async with RuntimeClient(server.endpoint) as rt:
        await rt.stop_container("c1", timeout=7)
        res = await rt.exec_sync("c1", ["echo", "hi"], timeout=3)
    stop = server.fake.calls("StopContainer")[0]
    assert (stop.container_id, stop.timeout) == ("c1", 7)
    assert (res.exit_code, res.stdout, res.stderr) == (7, b"echo hi", b"e")
    assert server.fake.calls("ExecSync")[0].timeout == 3


async def test_image_status_absent_is_none(server: FakeCRIServer) -> None:
    server.fake.images["nodeagent.local/pause:1"] = pb.Image(id="sha256:1", repo_tags=["nodeagent.local/pause:1"])
    async with RuntimeClient(server.endpoint) as rt:
        assert await rt.image_status("nodeagent.local/missing:1") is None
        img = await rt.image_status("nodeagent.local/pause:1")
    assert img is not None and img.id == "sha256:1"


async def test_unimplemented_call_says_so(server: FakeCRIServer) -> None:
    async with RuntimeClient(server.endpoint) as rt:
        with pytest.raises(CRIError) as ei:
            async for _ in rt.get_container_events():
                pass
    assert ei.value.code == grpc.StatusCode.UNIMPLEMENTED
    assert "does not implement" in str(ei.value)


async def test_every_call_has_a_deadline(server: FakeCRIServer) -> None:
    server.fake.delay["ListContainers"] = 5.0
    async with RuntimeClient(server.endpoint, timeout=0.2, retries=3) as rt:
        with pytest.raises(CRIError) as ei:
            await rt.list_containers()
    assert ei.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(server.fake.calls("ListContainers")) == 1  # not retried: the runtime may be working on it
