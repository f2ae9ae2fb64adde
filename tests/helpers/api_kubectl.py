"""kubectl and HTTP helpers for tests against a real `nodeagent apiserver`."""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers.apiserver import ApiServerProcess


def kubectl(server: ApiServerProcess, *args: str, kubeconfig: Path | None = None, check: bool = True,
            stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run kubectl with a per-server discovery cache (ports are reused across test runs)."""
    cache = server.data_dir / "kubectl-cache"
    out = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig or server.kubeconfig), "--cache-dir", str(cache),
                          *args], capture_output=True, text=True, timeout=timeout, input=stdin)
    if check:
        assert out.returncode == 0, f"kubectl {' '.join(args)} failed ({out.returncode}): {out.stderr}"
    return out


def admin_token(server: ApiServerProcess) -> str:
    for line in (server.data_dir / "tokens.csv").read_text().splitlines():
        parts = line.split(",")
        if len(parts) > 1 and parts[1] == "admin":
            return parts[0]
    raise AssertionError("no admin token in tokens.csv")


def request(server: ApiServerProcess, method: str, path: str, body: bytes | None = None,
            content_type: str = "application/json", token: str | None = "admin",
            headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, Any]:
    """One HTTPS request; returns (status, parsed JSON body or raw text)."""
    ctx = ssl.create_default_context(cafile=str(server.data_dir / "pki" / "ca.crt"))
    req = urllib.request.Request(server.url + path, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", content_type)
    if token == "admin":
        token = admin_token(server)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")
