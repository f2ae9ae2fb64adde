"""pods/log and pods/exec are proxied to the pod's kubelet with the apiserver's kubelet client certificate."""

from __future__ import annotations

import asyncio
import json

from tests.helpers.api_fake_kubelet import FakeKubelet
from tests.helpers.api_kubectl import request
from tests.helpers.apiserver import ApiServerProcess


def _node_token(server: ApiServerProcess, node: str) -> str:
    server.kubeconfig_for_node(node)
    for line in (server.data_dir / "tokens.csv").read_text().splitlines():
        parts = line.split(",")
        if parts[1] == f"system:node:{node}":
            return parts[0]
    raise AssertionError("node token missing")


async def _kubectl(server: ApiServerProcess, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "kubectl", "--kubeconfig", str(server.kubeconfig), "--cache-dir", str(server.data_dir / "kubectl-cache"),
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_logs_and_exec_go_through_the_kubelet(apiserver: ApiServerProcess) -> None:
    kubelet = FakeKubelet(apiserver.url, apiserver.data_dir / "pki" / "ca.crt", _node_token(apiserver, "px"))
    await kubelet.start(apiserver.data_dir)
    try:
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "px"},
                "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                           "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet.port}}}}
        code, _ = await asyncio.to_thread(request, apiserver, "POST", "/api/v1/nodes", json.dumps(node).encode())
        assert code == 201
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lp"},
               "spec": {"nodeName": "px", "containers": [{"name": "app", "image": "nodeagent.local/toolbox:1"}]}}
        code, _ = await asyncio.to_thread(request, apiserver, "POST", "/api/v1/namespaces/default/pods",
                                          json.dumps(pod).encode())
        assert code == 201

        rc, out, err = await _kubectl(apiserver, "logs", "lp", "--tail=2")
        assert rc == 0, err
        assert out == "line 0 from app\nline 1 from app\n"
        assert kubelet.seen_paths[-1].startswith("/containerLogs/default/lp/app?") and "tailLines=2" in \
            kubelet.seen_paths[-1]

        rc, out, err = await _kubectl(apiserver, "exec", "lp", "--", "echo", "hi")
        assert rc == 0, err
        assert out == "ran: echo hi\n"
        assert kubelet.seen_paths[-1].startswith("/exec/default/lp/app?")
        assert set(kubelet.seen_users) == {"kube-apiserver-kubelet-client"}

        # A node identity may not read logs through the apiserver.
        token = _node_token(apiserver, "px")
        code, body = await asyncio.to_thread(request, apiserver, "GET", "/api/v1/namespaces/default/pods/lp/log",
                                             None, "application/json", token)
        assert code == 403 and body["reason"] == "Forbidden"
    finally:
        await kubelet.stop()


async def test_unbound_pod_has_no_logs(apiserver: ApiServerProcess) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nohost"},
           "spec": {"containers": [{"name": "app", "image": "nodeagent.local/toolbox:1"}]}}
    await asyncio.to_thread(request, apiserver, "POST", "/api/v1/namespaces/default/pods", json.dumps(pod).encode())
    code, body = await asyncio.to_thread(request, apiserver, "GET", "/api/v1/namespaces/default/pods/nohost/log")
    assert code == 400 and "does not have a host assigned" in body["message"]
