"""The managed containerd's life cycle: restart keeping pods, crash clean-up, errors, images."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import psutil
import pytest

from nodeagent.runtime import images
from nodeagent.runtime.containerd import ContainerdError, ManagedContainerd, mounts_under
from nodeagent.runtime.cri import CRIError, RuntimeClient, pb
from tests.helpers.runtime_node import (
    REFERENCE_CNI_BIN,
    TOOLBOX,
    Node,
    container_pid,
    make_pod,
    run_pod,
    sandbox_pid,
    write_bridge_conflist,
)

pytestmark = pytest.mark.root


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def processes_mentioning(text: str) -> list[int]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        if any(text in arg for arg in p.info.get("cmdline") or []) and p.pid != os.getpid():
            out.append(p.pid)
    return out


async def wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    left = pids
    for _ in range(int(timeout / 0.1)):
        left = [p for p in left if alive(p)]
        if not left:
            break
        await asyncio.sleep(0.1)
    return left


@pytest.fixture
def short_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mc")


async def test_restart_keeps_pods_and_crash_cleanup_leaves_nothing(
        netns_factory: Callable[[str], str], short_dir: Path) -> None:
    ns = netns_factory("rt")
    write_bridge_conflist(short_dir / "cni" / "net.d", short_dir / "ipam", subnet="10.198.0.0/24")
    c = ManagedContainerd(short_dir, netns=ns, cni_bin_dir=REFERENCE_CNI_BIN)
    pids: list[int] = []
    try:
        await c.start()
        node = Node(data_dir=short_dir, netns=ns, endpoint=c.endpoint, log_root=short_dir / "logs")
        pod = make_pod("keep", [{"name": "a", "image": TOOLBOX, "command": ["sleep", "3600"]}])
        rt = RuntimeClient(c.endpoint)
        try:
            running = await run_pod(rt, node, pod)
            pids = [await sandbox_pid(rt, running.sandbox_id),
                    await container_pid(rt, running.containers["a"])]
            assert mounts_under(short_dir)  # rootfs overlays, the sandbox's shm, the pod netns

            # 1. stop without clean-up: containerd goes, the pod stays and is found again after
            # start, by the same client (its channel reconnects; UNAVAILABLE meanwhile is retried)
            await c.stop(cleanup=False)
            assert all(alive(p) for p in pids)
            await c.start()
            st = await rt.container_status(running.containers["a"])
            assert st.status.state == pb.CONTAINER_RUNNING
            assert [s.id for s in await rt.list_pod_sandbox()] == [running.sandbox_id]
        finally:
            await rt.close()

        # 2. containerd crashes; stop() still kills the shims and containers and unmounts
        assert c.proc is not None
        os.kill(c.proc.pid, signal.SIGKILL)
        await c.proc.wait()
        await c.stop()
        assert await wait_gone(pids) == []
        assert processes_mentioning(str(c.socket)) == []
        assert mounts_under(short_dir) == []
    finally:
        await c.stop()
    assert await wait_gone(pids) == []


async def test_clean_stop_removes_pods_through_the_cri(netns_factory: Callable[[str], str],
                                                       short_dir: Path, node: Node) -> None:
    ns = netns_factory("rt")
    ipam = short_dir / "ipam"
    write_bridge_conflist(short_dir / "cni" / "net.d", ipam, subnet="10.197.0.0/24")
    c = ManagedContainerd(short_dir, netns=ns, cni_bin_dir=REFERENCE_CNI_BIN)
    try:
        await c.start()
        here = Node(data_dir=short_dir, netns=ns, endpoint=c.endpoint, log_root=short_dir / "logs")
        pod = make_pod("clean", [{"name": "a", "image": TOOLBOX, "command": ["sleep", "3600"]}])
        async with RuntimeClient(c.endpoint) as rt:
            running = await run_pod(rt, here, pod)
            ip = (await rt.pod_sandbox_status(running.sandbox_id)).status.network.ip
            pid = await container_pid(rt, running.containers["a"])
            mine = {s.id for s in await rt.list_pod_sandbox()}
        assert (ipam / "runtime-test" / ip).exists()
        # two managed containerds side by side see only their own pods
        async with RuntimeClient(node.endpoint) as other:
            assert not mine & {s.id for s in await other.list_pod_sandbox()}
        assert mine == {running.sandbox_id}
    finally:
        await c.stop()
    assert not (ipam / "runtime-test" / ip).exists()  # CNI DEL ran: the address was released
    assert await wait_gone([pid]) == []
    assert mounts_under(short_dir) == []
    assert not c.running
    # ...and a client now gets a clear error instead of hanging
    async with RuntimeClient(c.endpoint, retries=1, backoff=0.01, timeout=2) as rt:
        with pytest.raises(CRIError) as ei:
            await rt.version()
    assert ei.value.code == grpc.StatusCode.UNAVAILABLE
    assert "is containerd running" in str(ei.value)


async def test_start_failure_is_clear_and_leaves_nothing(short_dir: Path) -> None:
    c = ManagedContainerd(short_dir, netns="na-rt-does-not-exist")
    with pytest.raises(ContainerdError) as ei:
        await c.start(timeout=20)
    assert "containerd exited" in str(ei.value)
    assert "na-rt-does-not-exist" in str(ei.value)  # nsenter's complaint, from the log tail
    assert not c.running
    assert processes_mentioning(str(c.socket)) == []


async def test_images_are_imported_once_with_their_ids(node: Node) -> None:
    built = images.built_images()
    assert built is not None
    async with RuntimeClient(node.endpoint) as rt:
        for name, img in built.items():
            st = await rt.image_status(name)
            assert st is not None and name in st.repo_tags
            assert st.id == img.config_digest  # the CRI's image id is the config's digest
    # importing again does nothing
    assert await images.import_images(node.socket) == []
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nodeagent", "images", "build", "--import", node.endpoint,
        stdout=asyncio.subprocess.PIPE)
    out = (await proc.communicate())[0].decode()
    assert proc.returncode == 0
    assert f"{images.PAUSE_IMAGE} already present" in out
    assert f"{images.TOOLBOX_IMAGE} already present" in out
    listed = await images.containerd_images(node.socket)
    assert sorted(n for n in listed if n.startswith("nodeagent.local/")) == sorted(images.ALL_IMAGES)


async def test_second_containerd_on_the_same_data_dir_is_refused(node: Node) -> None:
    other = ManagedContainerd(node.data_dir, import_images=False)
    with pytest.raises(ContainerdError, match="already runs"):
        await other.start()
    async with RuntimeClient(node.endpoint) as rt:  # the first one is untouched
        assert (await rt.version()).runtime_name == "containerd"


async def test_image_calls_list_remove_and_failed_pull(node: Node, tmp_path: Path) -> None:
    name = f"nodeagent.local/rt-scratch-{os.urandom(3).hex()}:1"
    spec = images.ImageSpec(name=name, entries=[images.Entry("hello", "file", 0o644, b"hi\n")])
    built = await asyncio.to_thread(images.write_layout, spec, tmp_path)
    proc = await asyncio.create_subprocess_exec(
        "ctr", "--address", node.socket, "--namespace", "k8s.io", "images", "import", str(built.archive))
    assert await proc.wait() == 0
    async with RuntimeClient(node.endpoint) as rt:
        st = await rt.image_status(name)
        assert st is not None and st.id == built.config_digest and st.size > 0
        assert [i.id for i in await rt.list_images(name)] == [built.config_digest]
        assert name in {t for i in await rt.list_images() for t in i.repo_tags}
        await rt.remove_image(name)
        assert await rt.image_status(name) is None
        # no registry is reachable from the node: a pull fails at once, saying what and why
        with pytest.raises(CRIError) as ei:
            await rt.pull_image(name)
        assert ei.value.call == "PullImage" and ei.value.target == name
        assert name in str(ei.value)
