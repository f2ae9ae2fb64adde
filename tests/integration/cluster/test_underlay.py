"""The cluster's namespaces, switch, loopback forwarder and `down`, with stand-in processes (root).

No component is needed: a TCP server stands in for the apiserver in the cp namespace, `sleep`s for
containerd in a node, and a `sleep` in its own network namespace (child of one in the node) for a
pod container, with a tmpfs mounted under the cluster dir like containerd's shm mounts.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeagent.cluster import lifecycle, procs, underlay
from nodeagent.cluster.forwarder import free_loopback_port
from nodeagent.cluster.topology import ClusterPlan
from nodeagent.netns import nsenter_argv
from tests.helpers.cluster_host import host_traces

pytestmark = pytest.mark.root

ECHO = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("192.168.56.2", 6443)); s.listen()
while True:
    c, addr = s.accept()
    c.sendall(("hello from " + addr[0] + " " + c.recv(100).decode()).encode()); c.close()
"""


@pytest.fixture
def plan() -> Iterator[ClusterPlan]:
    base = Path(tempfile.mkdtemp(prefix="na-cl-"))  # short: containerd's socket paths must fit
    p = ClusterPlan(f"t{secrets.token_hex(3)}", 2, base)
    try:
        yield p
    finally:
        lifecycle.down(p.name, p.base_dir, out=open("/dev/null", "w"))  # noqa: SIM115
        underlay.destroy(p.netns_names)
        shutil.rmtree(base, ignore_errors=True)


def _running(pid: int) -> bool:
    """exists and is not a zombie (pid 1 here may reap late)"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _ns_run(netns: str, *argv: str) -> str:
    return subprocess.run(["nsenter", f"--net=/var/run/netns/{netns}", *argv], capture_output=True,
                          text=True, timeout=20).stdout


def _host_routes() -> set[str]:
    return set(subprocess.run(["ip", "route"], capture_output=True, text=True).stdout.splitlines())


def test_cluster_underlay_forwarder_and_down_leave_nothing(plan: ClusterPlan) -> None:
    before = host_traces(plan.name, plan.dir, all_mounts_in_run_netns=False)
    # The host may route 192.168.56.0/24 itself (Vagrant's private network on the same addresses):
    # what matters is that the cluster adds nothing to the host's table.
    routes_before = _host_routes()
    lifecycle.ClusterState(plan.name, plan.nodes, free_loopback_port(), str(plan.base_dir), time.time()).save()
    state = lifecycle.ClusterState.load(plan.name, plan.base_dir)
    assert state is not None
    underlay.create(plan)
    # a second create of the same cluster is refused, nothing touched
    with pytest.raises(underlay.UnderlayError, match="already exist"):
        underlay.create(plan)

    # nodes and cp reach each other over the switch; the host gains no route to them
    assert " 0% packet loss" in _ns_run(plan.node(1).netns, "ping", "-c1", "-W2", "192.168.56.12")
    assert " 0% packet loss" in _ns_run(plan.control_plane.netns, "ping", "-c1", "-W2", "192.168.56.11")
    assert not {r for r in _host_routes() - routes_before if "192.168.56" in r}

    # the apiserver stand-in in the cp namespace, reached from the host through the forwarder
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    procs.spawn([*nsenter_argv(plan.control_plane.netns), sys.executable, "-c", ECHO],
                plan.log_dir / "cp-apiserver.log", plan.run_dir / "cp-apiserver.pid")
    _, fwd = lifecycle.forwarder_component(plan, state.api_port)
    procs.spawn(fwd, plan.log_dir / "host-forwarder.log", plan.run_dir / "host-forwarder.pid")
    reply = b""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not reply:
        try:
            with socket.create_connection(("127.0.0.1", state.api_port), timeout=2) as s:
                s.sendall(b"ping")
                reply = s.recv(100)
        except OSError:
            time.sleep(0.2)
    # the connection arrives in the cp namespace from the cp's own address space, not the host
    assert reply == b"hello from 192.168.56.2 ping"

    # containerd and a pod container stand-ins, and a shm-like mount under the cluster dir
    n1 = plan.node(1)
    subprocess.Popen(["nsenter", f"--net={n1.netns_path}", "sh", "-c",
                      f"sleep 300 & unshare -n sleep 301 & echo {plan.dir} >/dev/null; wait"],
                     start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shm = n1.data_dir / "containerd" / "state" / "x" / "shm"
    shm.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(shm)], check=True)
    time.sleep(0.3)
    pod_like = [p for p in procs.process_tree(procs.pids_in_netns({procs.netns_inode(n1.netns_path) or 0}))
                if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sleep\x00301")]
    assert pod_like, "the pod stand-in did not start"

    assert lifecycle.down(plan.name, plan.base_dir, out=open("/dev/null", "w")) is True  # noqa: SIM115
    after = host_traces(plan.name, plan.dir, all_mounts_in_run_netns=False)
    assert after.netns == before.netns == frozenset()
    assert after.mounts == frozenset()
    assert after.processes == frozenset()
    assert not [p for p in pod_like if _running(p)]
    assert not plan.dir.exists()
    assert after.root_chains == before.root_chains
    # `down` of a cluster that is gone is harmless
    assert lifecycle.down(plan.name, plan.base_dir, out=open("/dev/null", "w")) is True  # noqa: SIM115


def test_down_without_a_state_file_finds_the_namespaces(plan: ClusterPlan) -> None:
    """After a crash before cluster.json was written (or after it was lost), `down` and
    `down --all` still find the cluster by its namespaces."""
    underlay.create(plan)
    assert plan.name in lifecycle.list_clusters(plan.base_dir)
    assert lifecycle.down(plan.name, plan.base_dir, out=open("/dev/null", "w")) is True  # noqa: SIM115
    assert not [n for n in plan.netns_names if underlay.netns_exists(n)]
    assert plan.name not in lifecycle.list_clusters(plan.base_dir)
