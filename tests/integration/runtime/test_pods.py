"""Pods on a real containerd (in a netns, reference CNI bridge): namespaces, exec, stop, logs, stats."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
from pathlib import Path

import grpc
import pytest

from nodeagent import netns
from nodeagent.runtime import podconfig
from nodeagent.runtime.cri import CRIError, RuntimeClient, pb
from tests.helpers.runtime_node import (
    TOOLBOX,
    Node,
    container_pid,
    make_pod,
    ns_inode,
    pod_running,
    read_bytes,
    read_text,
    remove_pod,
    run_pod,
    sandbox_pid,
    wait_exited,
    wait_for_log,
)

pytestmark = pytest.mark.root

SLEEPER = {"image": TOOLBOX, "command": ["sleep", "3600"]}


async def test_containers_share_net_ipc_uts_with_pause_but_not_pid(node: Node) -> None:
    pod = make_pod("ns", [{"name": "a", **SLEEPER}, {"name": "b", **SLEEPER}])
    async with RuntimeClient(node.endpoint) as rt, pod_running(rt, node, pod) as running:
        pause = await sandbox_pid(rt, running.sandbox_id)
        a = await container_pid(rt, running.containers["a"])
        b = await container_pid(rt, running.containers["b"])
        for kind in ("net", "ipc", "uts"):
            assert ns_inode(a, kind) == ns_inode(pause, kind) == ns_inode(b, kind), kind
        assert len({ns_inode(pause, "pid"), ns_inode(a, "pid"), ns_inode(b, "pid")}) == 3
        # the pod's own view: its hostname, an address from the CNI bridge's subnet
        res = await rt.exec_sync(running.containers["a"], ["hostname"])
        assert res.stdout.decode().strip() == pod["metadata"]["name"]
        status = await rt.pod_sandbox_status(running.sandbox_id)
        assert status.status.state == pb.SANDBOX_READY
        assert status.status.network.ip.startswith("10.199.0.")
        ps = await rt.exec_sync(running.containers["a"], ["ps", "-o", "pid,args"])
        assert "sleep 3600" in ps.stdout.decode() and "pause" not in ps.stdout.decode()
        # the pause program is ours
        assert read_bytes(f"/proc/{pause}/cmdline").split(b"\0")[0] == b"/pause"


async def test_share_process_namespace(node: Node) -> None:
    pod = make_pod("spn", [{"name": "a", **SLEEPER}, {"name": "b", "image": TOOLBOX,
                                                     "command": ["sleep", "3599"]}],
                   shareProcessNamespace=True)
    async with RuntimeClient(node.endpoint) as rt, pod_running(rt, node, pod) as running:
        pause = await sandbox_pid(rt, running.sandbox_id)
        a = await container_pid(rt, running.containers["a"])
        assert ns_inode(a, "pid") == ns_inode(pause, "pid")
        ps = (await rt.exec_sync(running.containers["a"], ["ps", "-o", "pid,args"])).stdout.decode()
        # container a sees b's process and the pause process as PID 1
        assert "sleep 3599" in ps
        assert re.search(r"^\s*1\s+/pause", ps, re.M), ps
        # an orphan is re-parented to pause (PID 1 of the shared namespace), which reaps it
        await rt.exec_sync(running.containers["a"], ["sh", "-c", "(sleep 0.2 &)"])

        def leftovers(ps: str) -> list[str]:
            # the orphan still running, or its zombie (state Z, shown as [sleep]) if nobody reaped it
            return [line for line in ps.splitlines()[1:]
                    if "sleep 0.2" in line or line.split()[2].startswith("Z")]

        for _ in range(100):
            ps = (await rt.exec_sync(running.containers["b"], ["ps", "-o", "pid,ppid,stat,args"])).stdout.decode()
            if not leftovers(ps):
                break
            await asyncio.sleep(0.1)
        assert leftovers(ps) == [], f"orphan not reaped by pause:\n{ps}"


async def test_host_network_pod_uses_the_node_namespace(node: Node) -> None:
    pod = make_pod("hostnet", [{"name": "a", **SLEEPER}], hostNetwork=True)
    async with RuntimeClient(node.endpoint) as rt, pod_running(rt, node, pod) as running:
        a = await container_pid(rt, running.containers["a"])
        assert ns_inode(a, "net") == os.stat(netns.netns_path(node.netns)).st_ino
        status = await rt.pod_sandbox_status(running.sandbox_id)
        assert status.status.linux.namespaces.options.network == pb.NODE


async def test_exec_sync_exit_codes_and_streams_and_exec_url(node: Node) -> None:
    pod = make_pod("exec", [{"name": "a", **SLEEPER}])
    async with RuntimeClient(node.endpoint) as rt, pod_running(rt, node, pod) as running:
        cid = running.containers["a"]
        ok = await rt.exec_sync(cid, ["sh", "-c", "echo out; echo err >&2"])
        assert (ok.exit_code, ok.stdout, ok.stderr) == (0, b"out\n", b"err\n")
        failed = await rt.exec_sync(cid, ["sh", "-c", "exit 42"])
        assert failed.exit_code == 42
        # a program that does not exist is the runtime's error, not an exit code
        with pytest.raises(CRIError) as ei:
            await rt.exec_sync(cid, ["/no/such/program"])
        assert ei.value.call == "ExecSync" and ei.value.target == cid
        assert "/no/such/program" in str(ei.value)
        url = await rt.exec(cid, ["sh"], stdin=True)
        assert re.match(r"^http://127\.0\.0\.1:\d+/exec/\S+$", url), url


async def test_stop_sends_sigterm_then_sigkill_after_the_grace(node: Node) -> None:
    graceful = {"name": "graceful", "image": TOOLBOX,
                "command": ["sh", "-c", "trap 'echo got TERM; exit 0' TERM; echo ready; "
                            "while true; do sleep 0.1; done"]}
    stubborn = {"name": "stubborn", "image": TOOLBOX,
                "command": ["sh", "-c", "trap '' TERM; echo ready; while true; do sleep 0.1; done"]}
    pod = make_pod("stop", [graceful, stubborn])
    async with RuntimeClient(node.endpoint) as rt, pod_running(rt, node, pod) as running:
        # both shells have installed their traps once they said "ready"
        for name in ("graceful", "stubborn"):
            await wait_for_log(Path(running.log_dir, name, "0.log"), "ready")
        g, s = running.containers["graceful"], running.containers["stubborn"]
        await asyncio.gather(rt.stop_container(g, timeout=10), rt.stop_container(s, timeout=1))
        gst = (await rt.container_status(g)).status
        sst = (await rt.container_status(s)).status
        assert gst.state == sst.state == pb.CONTAINER_EXITED
        assert gst.exit_code == 0  # handled SIGTERM itself
        assert sst.exit_code == 137  # 128 + SIGKILL, after the 1 s grace
        log = read_text(Path(running.log_dir, "graceful", "0.log"))
        assert "got TERM" in log


def websocket_exec(url: str) -> list[bytes]:
    """Connect to the runtime's streaming server as a kubelet would proxy `kubectl exec` to it
    (the v4 channel protocol: the first byte of each message is the stream: 1 out, 2 err, 3 status)."""
    import aiohttp

    async def go() -> list[bytes]:
        got = []
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(url, protocols=["v4.channel.k8s.io"]) as ws:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    got.append(bytes(msg.data))
        return got

    return asyncio.run(go())


async def test_exec_url_streams_output_and_exit_status(node: Node) -> None:
    pod = make_pod("wsexec", [{"name": "a", **SLEEPER}])
    async with RuntimeClient(node.endpoint) as rt, pod_running(rt, node, pod) as running:
        url = await rt.exec(running.containers["a"], ["sh", "-c", "echo hi; echo oops >&2; exit 3"])
        # the streaming server listens on the loopback of the node's namespace
        frames = await netns.arun_in_netns(node.netns, websocket_exec, url)
    stdout = b"".join(f[1:] for f in frames if f[:1] == b"\x01")
    stderr = b"".join(f[1:] for f in frames if f[:1] == b"\x02")
    status = [json.loads(f[1:]) for f in frames if f[:1] == b"\x03" and len(f) > 1]
    assert (stdout, stderr) == (b"hi\n", b"oops\n")
    assert status[-1]["reason"] == "NonZeroExitCode"
    assert status[-1]["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


CRI_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)) (stdout|stderr) ([FP]) (.*)$")


async def test_logs_in_cri_format_at_the_log_path(node: Node) -> None:
    pod = make_pod("logs", [{"name": "talker", "image": TOOLBOX,
                             "command": ["sh", "-c", "echo to-out; echo to-err >&2; exit 3"]}])
    async with RuntimeClient(node.endpoint) as rt, pod_running(rt, node, pod) as running:
        st = await wait_exited(rt, running.containers["talker"])
        assert st.state == pb.CONTAINER_EXITED and st.exit_code == 3
        expected = Path(running.log_dir) / "talker" / "0.log"
        assert st.log_path == str(expected)
        lines = read_text(expected).splitlines()
        parsed = [CRI_LOG_LINE.match(line) for line in lines]
        assert all(parsed), lines
        assert sorted((m.group(4), m.group(5), m.group(6)) for m in parsed if m) == \
            [("stderr", "F", "to-err"), ("stdout", "F", "to-out")]


async def test_stats_and_resource_limits(node: Node) -> None:
    limited = {"name": "limited", "image": TOOLBOX, "command": ["sleep", "3600"],
               "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "250m", "memory": "48Mi"}}}
    busy = {"name": "busy", "image": TOOLBOX, "command": ["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 3600"]}
    pod = make_pod("stats", [limited, busy])
    async with RuntimeClient(node.endpoint) as rt, pod_running(rt, node, pod) as running:
        pid = await container_pid(rt, running.containers["limited"])
        cgroups = dict(line.split(":", 2)[1:] for line in read_text(f"/proc/{pid}/cgroup").splitlines())
        mem = Path("/sys/fs/cgroup/memory") / cgroups["memory"].lstrip("/")
        cpu = Path("/sys/fs/cgroup/cpu") / next(v for k, v in cgroups.items() if "cpu" in k.split(",")).lstrip("/")
        if mem.exists():  # cgroup v1 (this machine); v2 has memory.max instead
            assert int(read_text(mem / "memory.limit_in_bytes")) == 48 * 2**20
            assert int(read_text(cpu / "cpu.cfs_quota_us")) == 25_000
            assert int(read_text(cpu / "cpu.cfs_period_us")) == 100_000
            assert int(read_text(cpu / "cpu.shares")) == 102
        await asyncio.sleep(0.3)
        stats = await rt.container_stats(running.containers["busy"])
        assert stats.attributes.id == running.containers["busy"]
        assert stats.attributes.metadata.name == "busy"
        assert stats.cpu.usage_core_nano_seconds.value > 0
        assert stats.memory.working_set_bytes.value > 0
        listed = await rt.list_container_stats(pod_sandbox_id=running.sandbox_id)
        assert {s.attributes.id for s in listed} == set(running.containers.values())


async def test_web_serves_the_pod_name(node: Node) -> None:
    pod = make_pod("web", [{"name": "web", "image": TOOLBOX, "command": ["/bin/web"]}])
    async with RuntimeClient(node.endpoint) as rt, pod_running(rt, node, pod) as running:
        ip = (await rt.pod_sandbox_status(running.sandbox_id)).status.network.ip

        def get() -> str:
            for _ in range(50):
                try:
                    with socket.create_connection((ip, 80), timeout=2) as s:
                        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                        data = b""
                        while chunk := s.recv(4096):
                            data += chunk
                    return data.decode()
                except OSError:
                    import time

                    time.sleep(0.1)
            raise AssertionError(f"nothing answered on {ip}:80")

        reply = await netns.arun_in_netns(node.netns, get)
        assert reply.split("\r\n", 1)[0].endswith(" 200 OK"), reply
        assert reply.split("\r\n\r\n", 1)[1].strip() == pod["metadata"]["name"]


async def test_missing_image_is_a_clear_error_and_leaves_nothing(node: Node) -> None:
    pod = make_pod("noimg", [{"name": "a", "image": "nodeagent.local/missing:1", "command": ["true"]}])
    async with RuntimeClient(node.endpoint) as rt:
        with pytest.raises(CRIError) as ei:
            await run_pod(rt, node, pod)
        assert ei.value.call == "CreateContainer"
        assert ei.value.target == f"rt-test/{pod['metadata']['name']}/a"
        assert "nodeagent.local/missing:1" in str(ei.value)
        uid = {"io.kubernetes.pod.uid": pod["metadata"]["uid"]}
        assert await rt.list_pod_sandbox(label_selector=uid) == []  # run_pod removed its sandbox
        assert await rt.list_containers(label_selector=uid) == []
        assert await rt.image_status("nodeagent.local/missing:1") is None


async def test_bad_command_fails_start_and_can_be_removed(node: Node) -> None:
    pod = make_pod("badcmd", [{"name": "a", "image": TOOLBOX, "command": ["/no/such/binary"]}])
    async with RuntimeClient(node.endpoint) as rt:
        running = await run_pod(rt, node, pod, start=False)
        try:
            cid = running.containers["a"]
            with pytest.raises(CRIError) as ei:
                await rt.start_container(cid)
            assert ei.value.call == "StartContainer" and ei.value.target == cid
            assert "/no/such/binary" in str(ei.value)
            st = (await rt.container_status(cid)).status
            assert st.state in (pb.CONTAINER_CREATED, pb.CONTAINER_EXITED)
            await rt.remove_container(cid)
            with pytest.raises(CRIError) as gone:
                await rt.container_status(cid)
            assert gone.value.code == grpc.StatusCode.NOT_FOUND
        finally:
            await remove_pod(rt, running)
        assert await rt.list_pod_sandbox(id=running.sandbox_id) == []


async def test_sandbox_filters_and_list(node: Node) -> None:
    pod = make_pod("list", [{"name": "a", **SLEEPER}])
    async with RuntimeClient(node.endpoint) as rt, pod_running(rt, node, pod) as running:
        uid = {"io.kubernetes.pod.uid": pod["metadata"]["uid"]}
        ready = await rt.list_pod_sandbox(label_selector=uid, state=pb.SANDBOX_READY)
        assert [s.id for s in ready] == [running.sandbox_id]
        assert dict(ready[0].labels)["test"] == "list"
        assert await rt.list_pod_sandbox(label_selector=uid, state=pb.SANDBOX_NOTREADY) == []
        containers = await rt.list_containers(pod_sandbox_id=running.sandbox_id, state=pb.CONTAINER_RUNNING)
        assert [c.id for c in containers] == [running.containers["a"]]
        assert dict(containers[0].labels)[podconfig.CONTAINER_NAME_LABEL] == "a"
        assert json.loads(dict(containers[0].annotations)["io.kubernetes.container.restartCount"]) == 0
        await rt.stop_pod_sandbox(running.sandbox_id)
        notready = await rt.list_pod_sandbox(label_selector=uid, state=pb.SANDBOX_NOTREADY)
        assert [s.id for s in notready] == [running.sandbox_id]
