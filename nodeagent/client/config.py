"""Where the apiserver is and who we are: read from a kubeconfig as kubectl writes and reads it."""

from __future__ import annotations

import base64
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml


@dataclass
class ClientConfig:
    server: str
    token: str | None = None
    ca_data: bytes | None = None  # PEM
    ca_file: str | None = None
    insecure_skip_tls_verify: bool = False
    client_cert_file: str | None = None
    client_key_file: str | None = None
    client_cert_data: bytes | None = None  # PEM (kubeconfig client-certificate-data)
    client_key_data: bytes | None = None
    # A token that changes (kubeconfig tokenFile, a projected service account token): re-read when
    # the file changes, as client-go's cached file token source does. token_source wins over both.
    token_file: str | None = None
    token_source: Callable[[], str | None] | None = None
    _file_token: tuple[float, str] | None = None

    @classmethod
    def from_kubeconfig(cls, path: str | os.PathLike[str], context: str | None = None) -> ClientConfig:
        with open(path) as f:
            doc: dict[str, Any] = yaml.safe_load(f) or {}
        base = os.path.dirname(os.path.abspath(path))
        ctx_name = context or doc.get("current-context")
        contexts = {c["name"]: c.get("context", {}) for c in doc.get("contexts") or []}
        if not contexts:
            raise ValueError(f"kubeconfig {path}: no contexts")
        ctx = contexts.get(ctx_name) if ctx_name else next(iter(contexts.values()))
        if ctx is None:
            raise ValueError(f"kubeconfig {path}: context {ctx_name!r} not found")
        clusters = {c["name"]: c.get("cluster", {}) for c in doc.get("clusters") or []}
        users = {u["name"]: u.get("user", {}) for u in doc.get("users") or []}
        cluster = clusters.get(ctx.get("cluster", ""))
        if cluster is None:
            raise ValueError(f"kubeconfig {path}: cluster {ctx.get('cluster')!r} not found")
        user = users.get(ctx.get("user", ""), {})

        def rel(p: str | None) -> str | None:
            return p if not p or os.path.isabs(p) else os.path.join(base, p)

        token = user.get("token")
        ca = cluster.get("certificate-authority-data")
        cert_data, key_data = user.get("client-certificate-data"), user.get("client-key-data")
        return cls(
            server=cluster["server"].rstrip("/"),
            token=token,
            ca_data=base64.b64decode(ca) if ca else None,
            ca_file=rel(cluster.get("certificate-authority")),
            insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify")),
            client_cert_file=rel(user.get("client-certificate")),
            client_key_file=rel(user.get("client-key")),
            token_file=rel(user.get("tokenFile")) if not token else None,
            client_cert_data=base64.b64decode(cert_data) if cert_data else None,
            client_key_data=base64.b64decode(key_data) if key_data else None,
        )

    def current_token(self) -> str | None:
        if self.token_source is not None:
            return self.token_source()
        if self.token_file:
            try:
                mtime = os.stat(self.token_file).st_mtime
            except OSError:
                return self._file_token[1] if self._file_token else None
            if self._file_token is None or self._file_token[0] != mtime:
                with open(self.token_file) as f:
                    self._file_token = (mtime, f.read().strip())
            return self._file_token[1]
        return self.token

    def auth_headers(self) -> dict[str, str]:
        token = self.current_token()
        return {"Authorization": f"Bearer {token}"} if token else {}

    def ssl_context(self) -> ssl.SSLContext | bool:
        """The TLS settings for aiohttp: False for plain http or skip-verify, else a context."""
        if not self.server.startswith("https://"):
            return False
        if self.insecure_skip_tls_verify:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        if self.ca_data:
            ctx = ssl.create_default_context(cadata=self.ca_data.decode())
        elif self.ca_file:
            ctx = ssl.create_default_context(cafile=self.ca_file)
        else:
            ctx = ssl.create_default_context()
        if self.client_cert_file:
            ctx.load_cert_chain(self.client_cert_file, self.client_key_file)
        elif self.client_cert_data and self.client_key_data:
            _load_cert_data(ctx, self.client_cert_data, self.client_key_data)
        return ctx


def _load_cert_data(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """ssl loads key pairs only from files: hand it a private (0600, root-only dir) copy, removed at once."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="nodeagent-cert-") as d:
        path = os.path.join(d, "client.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(cert + b"\n" + key)
        ctx.load_cert_chain(path)
