"""A node for runtime integration tests: a network namespace with a managed containerd in it,
the reference CNI bridge plugin configured under the test's tmp dir, and pod helpers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeagent.runtime import podconfig
from nodeagent.runtime.cri import RuntimeClient, pb
from tests.helpers.netns import delete_netns, make_netns

REFERENCE_CNI_BIN = "/usr/lib/cni"
TOOLBOX = "nodeagent.local/toolbox:1"


def write_bridge_conflist(conf_dir: Path, ipam_dir: Path, subnet: str = "10.199.0.0/24",
                          bridge: str = "rtbr0") -> Path:
    """bridge + host-local (its store under the test's dir), loopback added by containerd itself."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    conf = {
        "cniVersion": "1.0.0",
        "name": "runtime-test",
        "plugins": [{
            "type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": str(ipam_dir)},
        }],
    }
    path = conf_dir / "10-runtime-test.conflist"
    path.write_text(json.dumps(conf))
    return path


@dataclass
class Node:
    """`nodeagent containerd` running in its own netns, as a subprocess (so one module shares it)."""

    data_dir: Path
    netns: str
    proc: subprocess.Popen[str] | None = None
    endpoint: str = ""
    log_root: Path = field(default_factory=Path)
    metrics_address: str = ""  # containerd's Prometheus endpoint inside the netns ("": off)

    @property
    def socket(self) -> str:
        return self.endpoint[len("unix://"):]

    def start(self, timeout: float = 90.0) -> None:
        conf_dir = self.data_dir / "cni" / "net.d"
        write_bridge_conflist(conf_dir, self.data_dir / "ipam")
        self.log_root = self.data_dir / "logs" / "pods"
        self.log_root.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "nodeagent-containerd.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nodeagent", "containerd", "--data-dir", str(self.data_dir),
             "--netns", self.netns, "--cni-bin-dir", REFERENCE_CNI_BIN,
             *(["--metrics-address", self.metrics_address] if self.metrics_address else [])],
            stdout=subprocess.PIPE, stderr=log, text=True)
        log.close()
        assert self.proc.stdout is not None
        # The command prints its endpoint once containerd serves the CRI and has the images.
        line = self.proc.stdout.readline().strip()
        if not line.startswith("unix://"):
            self.stop()
            raise RuntimeError(f"nodeagent containerd did not start: {self.log_tail()}")
        self.endpoint = line

    def log_tail(self) -> str:
        out = []
        for name in ("nodeagent-containerd.log", "containerd/containerd.log"):
            with contextlib.suppress(OSError):
                out.append((self.data_dir / name).read_text()[-3000:])
        return "\n".join(out)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_node(base: Path, metrics_address: str = "") -> Node:
    name = f"na-rt-{secrets.token_hex(3)}"
    make_netns(name)
    node = Node(data_dir=base, netns=name, metrics_address=metrics_address)
    try:
        node.start()
    except BaseException:
        node.stop()
        delete_netns(name)
        raise
    return node


def stop_node(node: Node) -> None:
    try:
        node.stop()
    finally:
        delete_netns(node.netns)


def tag_image(node: Node, source: str, target: str) -> None:
    """Give an image the node's containerd holds a second fully-qualified name (there is no
    registry to pull another from): the CRI then has two images of the same id."""
    from nodeagent.runtime.images import CRI_NAMESPACE

    subprocess.run(["ctr", "--address", node.socket, "--namespace", CRI_NAMESPACE, "images", "tag", "--force",
                    source, target], check=True, capture_output=True, text=True, timeout=30)


def make_pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    uid = f"uid-{secrets.token_hex(6)}"
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-{secrets.token_hex(2)}", "namespace": "rt-test", "uid": uid,
                         "labels": {"test": name}},
            "spec": {"containers": containers, **spec}}


@dataclass
class RunningPod:
    pod: dict[str, Any]
    sandbox_id: str
    sandbox_config: pb.PodSandboxConfig
    containers: dict[str, str]  # name -> container id
    log_dir: str


async def run_pod(rt: RuntimeClient, node: Node, pod: dict[str, Any], start: bool = True,
                  runtime_handler: str = "") -> RunningPod:
    log_dir = podconfig.pod_log_directory(str(node.log_root), pod)
    os.makedirs(log_dir, exist_ok=True)
    sc = podconfig.sandbox_config(pod, log_directory=log_dir)
    sid = await rt.run_pod_sandbox(sc, runtime_handler=runtime_handler)
    running = RunningPod(pod, sid, sc, {}, log_dir)
    try:
        for c in pod["spec"]["containers"]:
            cid = await rt.create_container(sid, podconfig.container_config(pod, c), sc)
            running.containers[c["name"]] = cid
            if start:
                await rt.start_container(cid)
    except BaseException:
        await remove_pod(rt, running)
        raise
    return running


async def remove_pod(rt: RuntimeClient, running: RunningPod) -> None:
    await rt.stop_pod_sandbox(running.sandbox_id)
    await rt.remove_pod_sandbox(running.sandbox_id)


@contextlib.asynccontextmanager
async def pod_running(rt: RuntimeClient, node: Node, pod: dict[str, Any]) -> AsyncIterator[RunningPod]:
    running = await run_pod(rt, node, pod)
    try:
        yield running
    finally:
        await remove_pod(rt, running)


async def sandbox_pid(rt: RuntimeClient, sandbox_id: str) -> int:
    resp = await rt.pod_sandbox_status(sandbox_id, verbose=True)
    return int(json.loads(resp.info["info"])["pid"])


async def container_pid(rt: RuntimeClient, container_id: str) -> int:
    resp = await rt.container_status(container_id, verbose=True)
    return int(json.loads(resp.info["info"])["pid"])


def ns_inode(pid: int, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


async def wait_exited(rt: RuntimeClient, container_id: str, timeout: float = 30.0) -> pb.ContainerStatus:
    """The container's status once it exited (or as it is when the timeout passed)."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.1) + 1):
        st = (await rt.container_status(container_id)).status
        if st.state == pb.CONTAINER_EXITED or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    return st


def read_text(path: str | Path) -> str:
    """Blocking read for tests (small files: logs, /proc, cgroup knobs)."""
    return Path(path).read_text()


def read_bytes(path: str | Path) -> bytes:
    return Path(path).read_bytes()


async def wait_for_log(path: Path, text: str, timeout: float = 30.0) -> None:
    """Wait until the container's CRI log file holds `text`."""
    for _ in range(int(timeout / 0.05)):
        with contextlib.suppress(FileNotFoundError):
            if text in read_text(path):
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} not in {path} after {timeout:.0f}s")
