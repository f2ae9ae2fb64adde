"""kubectl port-forward through the apiserver's pods/portforward and the kubelet's /portForward to
containerd's streaming server (CRI PortForward), as upstream: the real kubectl, apiserver, kubelet
and containerd, the node in its own network namespace."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import socket
import urllib.request
from typing import Any

import pytest

from nodeagent.client import Client, NotFound
from nodeagent.machinery.kinds import PODS
from tests.helpers.api_kubectl import request
from tests.helpers.kubelet_node import KubeletNode, delete_pod_now, node_token, wait_until

pytestmark = pytest.mark.root  # containerd, network namespaces

TOOLBOX = "nodeagent.local/toolbox:1"
DEAD_PORT = 9  # nothing in the pod listens there


def _web_pod(kn: KubeletNode) -> dict[str, Any]:
    return {"metadata": {"name": f"pf-{secrets.token_hex(3)}", "namespace": "default"},
            "spec": {"nodeName": kn.name, "terminationGracePeriodSeconds": 2,
                     "containers": [{"name": "web", "image": TOOLBOX, "command": ["web", "8080"],
                                     "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}}


async def _ready(client: Client, name: str) -> bool:
    p = await client.get(PODS, name, namespace="default")
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions") or [])


def _http_get(port: int) -> str:
    """One GET on a new connection (urllib closes it after the answer)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=20) as r:
        return str(r.read().decode())


def _raw_exchange(port: int) -> bytes:
    """Send a request on a new connection and read until the forward closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        return data


class _Kubectl:
    """A running `kubectl port-forward`, its stdout parsed for the local ports, its stderr kept."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out = ""
        self.err = ""
        self._readers = [asyncio.create_task(self._read(proc.stdout, "out")),
                         asyncio.create_task(self._read(proc.stderr, "err"))]

    async def _read(self, stream: asyncio.StreamReader | None, which: str) -> None:
        assert stream is not None
        while line := await stream.readline():
            setattr(self, which, getattr(self, which) + line.decode(errors="replace"))

    def ports(self) -> dict[int, int]:
        """remote -> local, from kubectl's "Forwarding from 127.0.0.1:LOCAL -> REMOTE" lines."""
        return {int(r): int(loc) for loc, r in re.findall(r"Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)", self.out)}

    def running(self) -> bool:
        return self.proc.returncode is None

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for t in self._readers:
            t.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


async def _port_forward(kn: KubeletNode, name: str, *remote: int) -> _Kubectl:
    """Start `kubectl port-forward pod/NAME :R ...` (":R" lets kubectl pick the local port) in the root
    namespace, where it reaches the apiserver as the exec test's kubectl does; wait for its ports."""
    proc = await asyncio.create_subprocess_exec(
        "kubectl", "--kubeconfig", str(kn.api.kubeconfig), "port-forward", f"pod/{name}", *(f":{r}" for r in remote),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    k = _Kubectl(proc)
    try:
        await wait_until(lambda: len(k.ports()) == len(remote) or not k.running(), timeout=30,
                         what="kubectl forwarding", kn=kn)
        assert k.running(), f"kubectl port-forward exited {proc.returncode}: {k.out}{k.err}"
    except BaseException:
        await k.stop()
        raise
    return k


async def test_kubectl_port_forward_reaches_the_pod(kn: KubeletNode, client: Client) -> None:
    p = await client.create(PODS, _web_pod(kn))
    name = p["metadata"]["name"]
    started: list[_Kubectl] = []
    try:
        await wait_until(lambda: _ready(client, name), what="web pod Ready", kn=kn)
        k = await _port_forward(kn, name, 8080, DEAD_PORT)
        started.append(k)
        web, dead = k.ports()[8080], k.ports()[DEAD_PORT]

        # Two connections in a row, each its own pair of streams to the pod's web server.
        for _ in range(2):
            body = await asyncio.to_thread(_http_get, web)
            assert body.strip() == name
        assert k.out.count(f"Handling connection for {web}") == 2
        assert k.running() and "error" not in k.err.lower(), k.err

        # Nothing listens on the other port: the runtime reports it on that connection's error
        # stream, the connection closes without an answer and kubectl logs the error.
        got = await asyncio.to_thread(_raw_exchange, dead)
        assert got == b""
        await wait_until(lambda: f"an error occurred forwarding {dead} -> {DEAD_PORT}" in k.err, timeout=20,
                         what="kubectl's error for the dead port", kn=kn)
        assert "connection refused" in k.err, k.err
        # kubectl 1.32's client-go then closes the whole SPDY connection on any error-stream message
        # and exits ("lost connection to pod"): the client's choice, upstream's servers behave alike.
        await asyncio.wait_for(k.proc.wait(), 20)
        assert k.proc.returncode == 1 and "lost connection to pod" in k.err, (k.proc.returncode, k.err)

        # The apiserver and kubelet serve the next forward: a fresh kubectl reaches the pod again.
        k2 = await _port_forward(kn, name, 8080)
        started.append(k2)
        assert (await asyncio.to_thread(_http_get, k2.ports()[8080])).strip() == name
        assert k2.running()

        # The kubelet answered each session through CRI PortForward on the pod's sandbox.
        assert kn.log.read_text(errors="replace").count(f"port forward pod=default/{name}") == 2
    finally:
        for k in started:
            await k.stop()
        with contextlib.suppress(NotFound):
            await client.delete(PODS, name, namespace="default")
    assert all(k.proc.returncode is not None for k in started)


def test_portforward_subresource_discovery_authz_and_refusals(kn: KubeletNode) -> None:
    api = kn.api
    # listed in discovery with upstream's verbs and kind
    code, body = request(api, "GET", "/api/v1")
    assert code == 200
    pf = [r for r in body["resources"] if r["name"] == "pods/portforward"]
    assert pf == [{**pf[0], "verbs": ["create", "get"], "kind": "PodPortForwardOptions"}], pf

    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"pfr-{secrets.token_hex(3)}"},
           "spec": {"nodeName": kn.name, "containers": [{"name": "c", "image": TOOLBOX, "command": ["sleep", "3600"]}]}}
    code, _ = request(api, "POST", "/api/v1/namespaces/default/pods", json.dumps(pod).encode())
    assert code == 201
    path = f"/api/v1/namespaces/default/pods/{pod['metadata']['name']}/portforward"
    try:
        # not an upgrade: refused before reaching the kubelet
        code, body = request(api, "POST", path)
        assert code == 400 and "upgraded connection" in body["message"], body
        # kubectl's WebSocket tunnelling of SPDY: refused, so that kubectl falls back to SPDY
        ws = {"Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
              "Sec-WebSocket-Protocol": "SPDY/3.1+portforward.k8s.io"}
        code, body = request(api, "GET", path, headers=ws)
        assert code == 400 and "SPDY" in body["message"], body
        # a node identity may not forward ports (create on pods/portforward is for admins)
        code, body = request(api, "POST", path, token=node_token(kn), headers={"Upgrade": "SPDY/3.1"})
        assert code == 403 and body["reason"] == "Forbidden", body
    finally:
        delete_pod_now(kn, pod["metadata"]["name"])
