"""An apiserver in the test's own process on a free loopback port (no root), and HTTPS sessions
as any identity: a static token (tokens.csv) or a client certificate signed by its CA."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from nodeagent.api.pki import PkiPaths, issue_key_pair
from nodeagent.api.server import ApiServer, ServerConfig
from nodeagent.api.tokens import ensure_token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Session:
    def __init__(self, server: ApiServer, token: str | None = None, cert: tuple[Path, Path] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.base = f"https://127.0.0.1:{server.cfg.port}"
        ctx = ssl.create_default_context(cafile=str(server.cfg.data_dir / "pki" / "ca.crt"))
        if cert is not None:
            ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx), headers=h)

    async def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = None if body is None else (body if isinstance(body, (str, bytes)) else json.dumps(body))
        hdrs = {"Content-Type": content_type, **(headers or {})}
        async with self.http.request(method, self.base + path, data=data, headers=hdrs) as r:
            text = await r.text()
            try:
                return r.status, json.loads(text)
            except ValueError:
                return r.status, text

    async def close(self) -> None:
        await self.http.close()


class InProcApi:
    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.data_dir = server.cfg.data_dir
        self.pki = PkiPaths(self.data_dir / "pki")
        self._sessions: list[Session] = []

    def token(self, user: str, groups: tuple[str, ...] = ()) -> str:
        return ensure_token(self.data_dir, user, groups)

    def session(self, user: str = "admin", groups: tuple[str, ...] = ("system:masters",),
                headers: dict[str, str] | None = None) -> Session:
        s = Session(self.server, token=self.token(user, groups), headers=headers)
        self._sessions.append(s)
        return s

    def node(self, name: str) -> Session:
        return self.session(f"system:node:{name}", ("system:nodes",))

    def cert_session(self, user: str, groups: tuple[str, ...] = ()) -> Session:
        d = self.data_dir / "test-certs"
        crt, key = issue_key_pair(self.pki, d / f"{user.replace(':', '_')}.crt", d / f"{user.replace(':', '_')}.key",
                                  user, groups, client=True)
        s = Session(self.server, cert=(crt, key))
        self._sessions.append(s)
        return s

    async def close(self) -> None:
        for s in self._sessions:
            await s.close()


_KEY: bytes | None = None


def _reuse_signing_key(data_dir: Path) -> None:
    """One RSA service account key per test process (making one costs up to a second)."""
    import os
    import tempfile

    from nodeagent.api.auth.serviceaccount import ensure_signing_key

    global _KEY
    if _KEY is None:
        with tempfile.TemporaryDirectory() as d:
            _KEY = ensure_signing_key(Path(d)).read_bytes()
    pki = data_dir / "pki"
    pki.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(pki / "sa.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(_KEY)


@asynccontextmanager
async def inproc_api(data_dir: Path, service_accounts: bool = False, **cfg: Any) -> AsyncIterator[InProcApi]:
    """service_accounts=False leaves out the ServiceAccount admission plugin: nothing here runs the
    controller that makes each namespace's `default` account, which upstream's plugin requires."""
    if not service_accounts:
        cfg.setdefault("disable_admission_plugins", ["ServiceAccount"])
    _reuse_signing_key(data_dir)
    server = ApiServer(ServerConfig(data_dir=data_dir, port=free_port(), compaction_interval=0, **cfg))
    await server.start()
    api = InProcApi(server)
    try:
        yield api
    finally:
        await api.close()
        await server.stop()
