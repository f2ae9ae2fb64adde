"""The apiserver -> kubelet path (issue 14's first hole): a node rewrites its status.addresses and
kubelet port to point at a listener it controls; when an admin then reads a pod's logs, the
apiserver must send nothing usable there and must refuse any certificate but the node's own."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from nodeagent.api.pki import PkiPaths, ensure_pki, issue_key_pair
from tests.helpers.api_inproc import InProcApi, inproc_api

MERGE = "application/merge-patch+json"


@dataclass
class Listener:
    """A kubelet-shaped HTTPS endpoint that records what callers send it."""
    crt: Path
    key: Path
    ca: Path
    authorization: list[str] = field(default_factory=list)
    client_cns: list[str] = field(default_factory=list)
    port: int = 0
    runner: web.AppRunner | None = None

    async def logs(self, request: web.Request) -> web.Response:
        self.authorization.append(request.headers.get("Authorization", ""))
        cert = request.transport.get_extra_info("peercert") if request.transport else None
        self.client_cns += [v for rdn in (cert or {}).get("subject", ()) for k, v in rdn if k == "commonName"]
        return web.Response(text="hello from the kubelet\n")

    async def start(self) -> None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.crt, self.key)
        ctx.load_verify_locations(cafile=str(self.ca))
        ctx.verify_mode = ssl.CERT_OPTIONAL
        app = web.Application()
        app.router.add_get("/containerLogs/{ns}/{pod}/{c}", self.logs)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[InProcApi]:
    async with inproc_api(tmp_path / "api") as a:
        admin, n1 = a.session(), a.node("n1")
        assert (await n1.call("POST", "/api/v1/nodes", {"metadata": {"name": "n1"}}))[0] == 201
        code, body = await admin.call("POST", "/api/v1/namespaces/default/pods", {
            "metadata": {"name": "p1"}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}})
        assert code == 201, body
        yield a


async def _listen(api: InProcApi, tmp_path: Path, cn: str | None) -> Listener:
    d = tmp_path / f"listener-{cn or 'self-signed'}".replace(":", "_")
    if cn is None:  # a certificate of the node's own making
        pki = ensure_pki(d, [])
        lst = Listener(pki.server_crt, pki.server_key, api.pki.ca_crt)
    else:
        crt, key = issue_key_pair(api.pki, d / "k.crt", d / "k.key", cn, ("system:nodes",), server=True,
                                  ips=("127.0.0.1",))
        lst = Listener(crt, key, api.pki.ca_crt)
    await lst.start()
    return lst


async def _point_node_at(api: InProcApi, port: int) -> None:
    code, body = await api.node("n1").call("PATCH", "/api/v1/nodes/n1/status", {"status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}}, MERGE)
    assert code == 200, body


@pytest.mark.parametrize("cn", [None, "system:node:n2"], ids=["self-signed", "another-nodes-cert"])
async def test_a_rewritten_address_gets_no_credential(api: InProcApi, tmp_path: Path, cn: str | None) -> None:
    lst = await _listen(api, tmp_path, cn)
    try:
        await _point_node_at(api, lst.port)
        code, body = await api.session().call("GET", "/api/v1/namespaces/default/pods/p1/log")
        assert code == 502, body
        assert body["kind"] == "Status"
        # the listener never got a request, let alone a bearer token to replay
        assert lst.authorization == []
    finally:
        await lst.stop()


async def test_the_nodes_own_kubelet_is_reached_with_a_client_certificate(api: InProcApi, tmp_path: Path) -> None:
    lst = await _listen(api, tmp_path, "system:node:n1")
    try:
        await _point_node_at(api, lst.port)
        code, body = await api.session().call("GET", "/api/v1/namespaces/default/pods/p1/log")
        assert code == 200 and body == "hello from the kubelet\n"
        assert lst.authorization == [""]  # no bearer token: nothing the kubelet could replay
        assert lst.client_cns == ["kube-apiserver-kubelet-client"]
    finally:
        await lst.stop()


async def test_the_kubelet_client_identity_holds_only_the_kubelet_api(api: InProcApi) -> None:
    pki = PkiPaths(api.data_dir / "pki")
    s = api.cert_session("kube-apiserver-kubelet-client")
    assert pki.dir.exists()
    code, _ = await s.call("GET", "/api/v1/namespaces/kube-system/secrets")
    assert code == 403
    code, out = await s.call("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {
        "spec": {"resourceAttributes": {"verb": "get", "resource": "nodes", "subresource": "proxy", "name": "n1"}}})
    assert code == 201 and out["status"]["allowed"] is True
