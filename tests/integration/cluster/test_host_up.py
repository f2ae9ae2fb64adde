"""`nodeagent up` in both roles and `nodeagent down`, each "host" a test network namespace (root).

`up` acts on the namespace it runs in, so the test makes two hosts joined by a veth pair, like two
Vagrant VMs on 192.168.56.0/24: a server (`up --join agent1`) and an agent joining it with
the join kubeconfig the server wrote (the node's token plus kube-proxy's and the CNI daemon's own
client certificates). A pod on the agent must run; then `down` must leave both namespaces and the
disk clean.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from nodeagent.cluster import httpget, procs
from nodeagent.netns import nsenter_argv
from tests.helpers.cluster_e2e import wait_for

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

SERVER_IP, AGENT_IP = "192.168.56.10", "192.168.56.11"
POD = """{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1"},
 "spec": {"nodeName": "agent1", "terminationGracePeriodSeconds": 1,
          "containers": [{"name": "c", "image": "nodeagent.local/toolbox:1", "command": ["web", "8080"]}]}}"""


def _commands_present() -> bool:
    from nodeagent.cli import build_parser
    choices = build_parser()._subparsers._group_actions[0].choices or {}  # type: ignore[union-attr]
    return all(c in choices for c in ("apiserver", "kubelet", "controllers", "proxy", "cni-daemon"))


def _up(ns: str, data: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        return subprocess.Popen([*nsenter_argv(ns), sys.executable, "-m", "nodeagent", "up", "--data-dir", str(data),
                                 *args], stdout=f, stderr=subprocess.STDOUT)


def _down(ns: str, data: Path, up: subprocess.Popen[bytes]) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([*nsenter_argv(ns), sys.executable, "-m", "nodeagent", "down", "--data-dir", str(data)],
                       capture_output=True, text=True, timeout=120)
    try:
        up.wait(timeout=30)
    except subprocess.TimeoutExpired:
        up.kill()
        up.wait()
    return p


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """containerd's sockets (DIR/containerd/containerd.sock.ttrpc, ...) must fit in sun_path's
    108 bytes, which pytest's tmp_path can overflow."""
    d = Path(tempfile.mkdtemp(prefix="na-up-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def hosts(netns_factory: Callable[[str], str]) -> Iterator[tuple[str, str]]:
    server, agent = netns_factory("ups"), netns_factory("upa")
    subprocess.run(["ip", "-n", server, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
                    "netns", agent], check=True)
    for ns, ip in ((server, SERVER_IP), (agent, AGENT_IP)):
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "up"], check=True)
    yield server, agent


@pytest.mark.skipif(not _commands_present(), reason="needs every component's command")
def test_up_server_and_agent_run_a_pod_and_down_cleans_up(hosts: tuple[str, str], short_tmp: Path) -> None:
    server_ns, agent_ns = hosts
    tmp_path = short_tmp
    sdata, adata = tmp_path / "server", tmp_path / "agent"
    kubectl = [*nsenter_argv(server_ns), "kubectl", "--kubeconfig", str(sdata / "admin.kubeconfig")]

    def get(*args: str) -> dict[str, Any] | None:
        p = subprocess.run([*kubectl, "get", *args, "-o", "json"], capture_output=True, text=True, timeout=20)
        return json.loads(p.stdout) if p.returncode == 0 else None

    def ready_nodes() -> set[str]:
        nodes = (get("nodes") or {}).get("items") or []
        return {n["metadata"]["name"] for n in nodes
                if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))}

    downs: dict[str, subprocess.CompletedProcess[str]] = {}
    with ExitStack() as stack:
        server = _up(server_ns, sdata, tmp_path / "server.log", "--node-name", "server", "--node-ip", SERVER_IP,
                     "--join", "agent1")
        stack.callback(lambda: downs.setdefault("server", _down(server_ns, sdata, server)))
        join = sdata / "join" / "agent1.kubeconfig"
        wait_for("the agent's join kubeconfig", join.exists, 90)
        kc = yaml.safe_load(join.read_text())
        assert {c["name"] for c in kc["contexts"]} >= {"kube-proxy", "cni-daemon"}
        agent_kc = tmp_path / "agent1.kubeconfig"
        shutil.copy(join, agent_kc)
        agent = _up(agent_ns, adata, tmp_path / "agent.log", "--node-name", "agent1", "--node-ip", AGENT_IP,
                    "--kubeconfig", str(agent_kc))
        stack.callback(lambda: downs.setdefault("agent", _down(agent_ns, adata, agent)))

        wait_for("nodes server and agent1 Ready", lambda: ready_nodes() == {"server", "agent1"}, 150)
        subprocess.run([*kubectl, "create", "-f", "-"], input=POD, text=True, check=True, capture_output=True)
        pod = wait_for("pod p1 Running on agent1", lambda: (p := get("pod", "p1")) and p["status"].get("phase") == "Running"
                       and p["status"].get("podIP") and p, 120)
        # the server reaches the agent's pod over the host-gw route the CNI daemon keeps (the web
        # server may still be starting when the pod turns Running: no readiness probe here)
        def fetch() -> str:
            return httpget.get_many_in_netns(server_ns, pod["status"]["podIP"], 8080, 1)[0].body
        assert wait_for("the pod's answer from the server host", fetch, 30) == "p1"

    for name, ns, data in (("agent", agent_ns, adata), ("server", server_ns, sdata)):
        assert downs[name].returncode == 0, downs[name].stderr
        time.sleep(0.2)
        assert procs.pids_in_netns({procs.netns_inode(f"/var/run/netns/{ns}") or 0}) == set()
        links = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True).stdout
        assert "cni0" not in links and "veth" not in links
        routes = subprocess.run(["ip", "-n", ns, "route"], capture_output=True, text=True).stdout
        assert "10.244." not in routes
        save = subprocess.run([*nsenter_argv(ns), "iptables-legacy-save"], capture_output=True, text=True).stdout
        assert ":KUBE-" not in save
        assert not data.exists()
        assert str(data) not in Path("/proc/self/mountinfo").read_text()
