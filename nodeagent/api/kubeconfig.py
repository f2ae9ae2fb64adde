"""Write kubeconfig files for the apiserver's users (`nodeagent kubeconfig`)."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import yaml

from nodeagent.api.pki import PkiPaths
from nodeagent.api.tokens import ADMIN_USER, MASTERS_GROUP, NODES_GROUP, ensure_token, node_user


def build_kubeconfig(server: str, ca_pem: bytes, user: str, token: str, cluster: str = "nodeagent") -> dict[str, Any]:
    ctx = f"{user}@{cluster}"
    return {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": cluster, "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": ctx, "context": {"cluster": cluster, "user": user, "namespace": "default"}}],
        "current-context": ctx,
    }


def write_kubeconfig(data_dir: Path, server: str, out: Path, node: str | None = None) -> Path:
    """Write a kubeconfig for admin (node None) or system:node:NODE; mints the node token if missing."""
    ca = PkiPaths(data_dir / "pki").ca_crt
    if not ca.exists():
        raise FileNotFoundError(f"{ca} does not exist: start `nodeagent apiserver --data-dir {data_dir}` once "
                                "to create the cluster CA")
    if node is None:
        user, token = ADMIN_USER, ensure_token(data_dir, ADMIN_USER, (MASTERS_GROUP,))
    else:
        user = node_user(node)
        token = ensure_token(data_dir, user, (NODES_GROUP,))
    doc = build_kubeconfig(server, ca.read_bytes(), user, token)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f, default_flow_style=False, sort_keys=False)
    os.replace(tmp, out)
    return out
