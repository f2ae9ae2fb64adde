"""Write kubeconfig files for the apiserver's users (`nodeagent kubeconfig`)."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import yaml

from nodeagent.api.pki import PkiPaths
from nodeagent.api.tokens import ADMIN_USER, MASTERS_GROUP, NODES_GROUP, ensure_token, node_user


def build_kubeconfig(server: str, ca_pem: bytes, user: str, token: str | None, cluster: str = "nodeagent",
                     cert: tuple[bytes, bytes] | None = None) -> dict[str, Any]:
    ctx = f"{user}@{cluster}"
    creds: dict[str, Any] = {"token": token} if token else {}
    if cert is not None:
        creds = {"client-certificate-data": base64.b64encode(cert[0]).decode(),
                 "client-key-data": base64.b64encode(cert[1]).decode()}
    return {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": cluster, "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": user, "user": creds}],
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
    return _write(out, build_kubeconfig(server, ca.read_bytes(), user, token))


def write_cert_kubeconfig(data_dir: Path, server: str, out: Path, user: str, groups: tuple[str, ...],
                          days: int = 365) -> Path:
    """A kubeconfig whose user is an X.509 client certificate from the cluster CA (CN = user,
    O = groups): upstream's x509 authenticator, what kubeadm writes for its components."""
    from nodeagent.api.pki import new_key_pem, sign_certificate

    paths = PkiPaths(data_dir / "pki")
    if not paths.ca_key.exists():
        raise FileNotFoundError(f"{paths.ca_key} does not exist: start `nodeagent apiserver --data-dir {data_dir}` "
                                "once to create the cluster CA")
    key, key_pem = new_key_pem()
    crt = sign_certificate(paths, key.public_key(), user, groups, client=True, days=days)
    return _write(out, build_kubeconfig(server, paths.ca_crt.read_bytes(), user, None, cert=(crt, key_pem)))


def _write(out: Path, doc: dict[str, Any]) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f, default_flow_style=False, sort_keys=False)
    os.replace(tmp, out)
    return out
