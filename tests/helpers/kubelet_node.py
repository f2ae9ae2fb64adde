"""A real node for kubelet integration tests.

    root netns:  the apiserver on 127.0.0.1:P, the test, kubectl
    node netns:  containerd (reference bridge CNI, tests/helpers/runtime_node.py) and the kubelet

Nothing links the two namespaces (tests never touch the root namespace's links), so two TCP
forwarders stitch them together: 127.0.0.1:P inside the node reaches the apiserver, and
127.0.0.1:K in the root namespace reaches the kubelet's port K inside the node (the Node reports
InternalIP 127.0.0.1, so the apiserver's pods/log and pods/exec proxy lands there too). A socket
belongs to the namespace it was created in, so each forwarder creates its sockets in the right one
through nodeagent.netns and copies bytes on a background event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeagent import netns as netns_mod
from nodeagent.cluster.forwarder import Forwarder
from tests.helpers.apiserver import ApiServerProcess, free_port, start_apiserver
from tests.helpers.netns import delete_netns, make_netns
from tests.helpers.runtime_node import REFERENCE_CNI_BIN, Node, start_node, stop_node, write_bridge_conflist


def _listen_socket(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    s.setblocking(False)
    return s


class Forwarders:
    """TCP forwarders between namespaces on one background event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kubelet-test-forwarders", daemon=True)
        self.thread.start()
        self.servers: list[asyncio.Server] = []

    def add(self, listen_ns: str | None, port: int, target_ns: str | None, target_port: int) -> None:
        lsock = netns_mod.run_in_netns(listen_ns, _listen_socket, port) if listen_ns else _listen_socket(port)

        handle = Forwarder(target_ns, "127.0.0.1", target_port).handle

        async def serve() -> asyncio.Server:
            return await asyncio.start_server(handle, sock=lsock)

        self.servers.append(asyncio.run_coroutine_threadsafe(serve(), self.loop).result(10))

    def stop(self) -> None:
        async def close() -> None:
            for s in self.servers:
                s.close()
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class KubeletNode:
    base: Path
    api: ApiServerProcess
    node: Node | None  # the external containerd; None when the kubelet manages its own
    name: str
    port: int
    forwarders: Forwarders
    data_dir: Path
    kubeconfig: Path
    proc: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)
    managed_netns: str = ""

    @property
    def netns(self) -> str:
        return self.node.netns if self.node else self.managed_netns

    @property
    def endpoint(self) -> str:
        """The CRI socket: the external containerd's, or the one the kubelet manages under its dir."""
        if self.node:
            return self.node.endpoint
        return f"unix://{self.data_dir.resolve()}/containerd/containerd.sock"

    @property
    def log(self) -> Path:
        return self.base / "kubelet.log"

    def serving_cert(self) -> list[str]:
        """A serving certificate from the cluster CA for this node (what a CSR would get it): the
        apiserver refuses to proxy to a kubelet without one."""
        from nodeagent.api.pki import PkiPaths, issue_key_pair

        crt, key = self.data_dir / "serving.crt", self.data_dir / "serving.key"
        if not crt.exists():
            issue_key_pair(PkiPaths(self.api.data_dir / "pki"), crt, key, f"system:node:{self.name}",
                           ("system:nodes",), server=True, dns=(self.name,), ips=("127.0.0.1",))
        return ["--tls-cert-file", str(crt), "--tls-private-key-file", str(key)]

    def start_kubelet(self) -> None:
        runtime = ["--container-runtime-endpoint", self.node.endpoint] if self.node else \
            ["--cni-bin-dir", REFERENCE_CNI_BIN, "--cni-conf-dir", str(self.base / "net.d")]
        argv = [*netns_mod.nsenter_argv(self.netns), sys.executable, "-m", "nodeagent", "kubelet",
                "--kubeconfig", str(self.kubeconfig), "--node-name", self.name, "--data-dir", str(self.data_dir),
                *runtime, "--node-ip", "127.0.0.1",
                "--port", str(self.port), "--pod-cidr", "10.199.0.0/24",
                "--node-status-update-frequency", "2", "--node-lease-renew-interval", "2",
                "--sync-frequency", "5", *self.serving_cert(), *self.extra_args]
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop_kubelet(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def kubectl(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", "--kubeconfig", str(self.api.kubeconfig), *args],
                              capture_output=True, text=True, timeout=timeout, check=check)

    def admin_token(self) -> str:
        import yaml

        doc: dict[str, Any] = yaml.safe_load(self.api.kubeconfig.read_text())
        return str(doc["users"][0]["user"]["token"])


def start_kubelet_node(base: Path, extra_args: list[str] | None = None,
                       containerd_metrics: str = "") -> KubeletNode:
    (base / "api").mkdir()
    api = start_apiserver(base / "api")
    node: Node | None = None
    fw = Forwarders()
    try:
        (base / "node").mkdir()
        node = start_node(base / "node", metrics_address=containerd_metrics)
        fw.add(node.netns, api.port, None, api.port)         # node -> apiserver
        port = free_port()
        fw.add(None, port, node.netns, port)                 # apiserver/test -> kubelet
        name = f"kn-{secrets.token_hex(3)}"
        kc = api.kubeconfig_for_node(name)
        data_dir = base / "kubelet"
        data_dir.mkdir()
        kn = KubeletNode(base, api, node, name, port, fw, data_dir, kc, extra_args=list(extra_args or []))
        kn.start_kubelet()
        return kn
    except BaseException:
        fw.stop()
        if node is not None:
            stop_node(node)
        api.stop()
        raise


def start_managed_kubelet_node(base: Path) -> KubeletNode:
    """As start_kubelet_node, but the kubelet runs its own managed containerd (no endpoint flag)."""
    (base / "api").mkdir()
    api = start_apiserver(base / "api")
    fw = Forwarders()
    ns = f"na-klm-{secrets.token_hex(3)}"
    try:
        make_netns(ns)
        write_bridge_conflist(base / "net.d", base / "ipam", subnet="10.198.0.0/24", bridge="klbr0")
        fw.add(ns, api.port, None, api.port)
        port = free_port()
        fw.add(None, port, ns, port)
        name = f"km-{secrets.token_hex(3)}"
        kc = api.kubeconfig_for_node(name)
        (base / "k").mkdir()  # short: containerd's socket path must stay under 100 bytes
        kn = KubeletNode(base, api, None, name, port, fw, base / "k", kc, managed_netns=ns)
        kn.start_kubelet()
        return kn
    except BaseException:
        fw.stop()
        delete_netns(ns)
        api.stop()
        raise


def stop_kubelet_node(kn: KubeletNode) -> None:
    try:
        kn.stop_kubelet()
    finally:
        try:
            if kn.node is not None:
                stop_node(kn.node)  # removes every pod through the CRI, stops containerd, deletes the netns
            else:
                _stop_managed(kn)
        finally:
            kn.forwarders.stop()
            kn.api.stop()


def _stop_managed(kn: KubeletNode) -> None:
    """The kubelet leaves its containerd's pods running when it stops (a restart adopts them):
    remove them through the CRI, then kill whatever is left in the namespace and unmount."""
    from nodeagent.runtime.containerd import ManagedContainerd

    mc = ManagedContainerd(kn.data_dir, netns=kn.netns)
    try:
        if Path(kn.endpoint[len("unix://"):]).exists():
            with contextlib.suppress(Exception):
                asyncio.run(asyncio.wait_for(mc.remove_all_pods(), 60))
    finally:
        delete_netns(kn.netns)  # containerd and its shims run in the node's namespace
        mc.force_cleanup()


async def wait_until(pred: Any, timeout: float = 60.0, what: str = "condition", kn: KubeletNode | None = None,
                     interval: float = 0.2) -> Any:
    """Poll an (async) predicate until it is truthy; on timeout fail with the kubelet's log tail."""
    deadline = time.monotonic() + timeout
    last_err: Exception | None = None
    while True:
        try:
            v = pred()
            if asyncio.iscoroutine(v):
                v = await v
            if v:
                return v
        except Exception as e:  # the object may not exist yet
            last_err = e
        if time.monotonic() > deadline:
            tail = kn.log_tail() if kn else ""
            raise AssertionError(f"timed out waiting for {what} (last error: {last_err})\n--- kubelet log ---\n{tail}")
        await asyncio.sleep(interval)


def node_token(kn: KubeletNode) -> str:
    """The bearer token of the node's own identity (system:node:NAME) in the apiserver's tokens.csv."""
    for line in (kn.api.data_dir / "tokens.csv").read_text().splitlines():
        parts = line.split(",")
        if parts[1] == f"system:node:{kn.name}":
            return parts[0]
    raise AssertionError("node token missing")


def delete_pod_now(kn: KubeletNode, name: str, namespace: str = "default", timeout: float = 30.0) -> None:
    """Delete a pod with zero grace over raw HTTPS and wait (bounded) until the apiserver has let
    it go: a test's `finally`, where the client's event loop may be gone."""
    from tests.helpers.api_kubectl import request

    path = f"/api/v1/namespaces/{namespace}/pods/{name}"
    request(kn.api, "DELETE", path + "?gracePeriodSeconds=0")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, _ = request(kn.api, "GET", path)
        if code == 404:
            return
        time.sleep(0.3)
