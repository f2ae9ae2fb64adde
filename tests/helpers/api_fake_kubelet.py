"""A fake kubelet endpoint for apiserver proxy tests: /containerLogs and /exec (WebSocket
v5.channel.k8s.io). Like the real kubelet it serves a certificate from the cluster CA for its node
and knows its callers by their client certificate, or by a bearer token a TokenReview accepts."""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from nodeagent.api.pki import PkiPaths, issue_key_pair


@dataclass
class FakeKubelet:
    apiserver_url: str
    ca_file: Path
    reviewer_token: str  # a token allowed to create TokenReviews (the node's own)
    seen_users: list[str] = field(default_factory=list)
    seen_paths: list[str] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    node: str = "px"

    async def _user(self, request: web.Request) -> str | None:
        cert = request.transport.get_extra_info("peercert") if request.transport else None
        for rdn in (cert or {}).get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    return str(value)
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": auth[7:]}}
        async with aiohttp.ClientSession() as s, s.post(
                f"{self.apiserver_url}/apis/authentication.k8s.io/v1/tokenreviews", json=body, ssl=ctx,
                headers={"Authorization": f"Bearer {self.reviewer_token}"}) as r:
            review: dict[str, Any] = await r.json()
        st = review.get("status") or {}
        return str(st["user"]["username"]) if st.get("authenticated") else None

    async def logs(self, request: web.Request) -> web.StreamResponse:
        user = await self._user(request)
        if user is None:
            return web.Response(status=401, text="Unauthorized")
        self.seen_users.append(user)
        self.seen_paths.append(request.path_qs)
        tail = int(request.query.get("tailLines", "3"))
        lines = [f"line {i} from {request.match_info['container']}\n" for i in range(tail)]
        return web.Response(text="".join(lines), content_type="text/plain")

    async def exec(self, request: web.Request) -> web.StreamResponse:
        user = await self._user(request)
        if user is None:
            return web.Response(status=401, text="Unauthorized")
        self.seen_users.append(user)
        self.seen_paths.append(request.path_qs)
        ws = web.WebSocketResponse(protocols=("v5.channel.k8s.io", "v4.channel.k8s.io"))
        await ws.prepare(request)
        cmd = " ".join(request.query.getall("command", []))
        await ws.send_bytes(b"\x01" + f"ran: {cmd}\n".encode())
        status = {"metadata": {}, "status": "Success"}
        await ws.send_bytes(b"\x03" + json.dumps(status).encode())
        await ws.close()
        return ws

    async def start(self, data_dir: Path) -> None:
        d = data_dir / "fake-kubelet"
        crt, key = issue_key_pair(PkiPaths(data_dir / "pki"), d / "kubelet.crt", d / "kubelet.key",
                                  f"system:node:{self.node}", ("system:nodes",), server=True, ips=("127.0.0.1",))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(crt, key)
        ctx.load_verify_locations(cafile=str(self.ca_file))
        ctx.verify_mode = ssl.CERT_OPTIONAL
        app = web.Application()
        app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self.logs)
        app.router.add_route("*", "/exec/{ns}/{pod}/{container}", self.exec)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
