"""Certificate files for HAProxy: the default certificate (served for an SNI no Secret covers, as
ingress-nginx's "Kubernetes Ingress Controller Fake Certificate") and the Secrets' PEMs, written
under content-addressed names so that a config that fails its check never changes the files the
running one uses; files no config names any more are removed after a good reload."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from nodeagent.ingress.model import ProxyConfig
from nodeagent.ingress.render import cert_path, crt_list_path, crt_list_text

FAKE_CN = "Kubernetes Ingress Controller Fake Certificate"


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def self_signed_pem(common_name: str = FAKE_CN, dns_names: tuple[str, ...] = ("ingress.local",)) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Co"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM)
            + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))


def ensure_default(run_dir: Path) -> Path:
    path = run_dir / "certs" / "default.pem"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(path, self_signed_pem())
    return path


def write_for(cfg: ProxyConfig, run_dir: Path) -> set[Path]:
    """Write the certificates and the crt-list a config names; returns every file it uses."""
    used = {ensure_default(run_dir)}
    for c in cfg.certificates:
        p = cert_path(run_dir, c.name, c.digest)
        if not p.exists():
            _write_private(p, c.pem)
        used.add(p)
    if cfg.certificates:
        p = crt_list_path(cfg, run_dir)
        if not p.exists():
            p.write_text(crt_list_text(cfg, run_dir))
        used.add(p)
    return used


def remove_unused(run_dir: Path, keep: set[Path]) -> None:
    for p in [*(run_dir / "certs").glob("*.pem"), *run_dir.glob("crt-list-*.txt")]:
        if p not in keep:
            p.unlink(missing_ok=True)
