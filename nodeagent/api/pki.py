"""The apiserver's certificate authority and serving certificate (DIR/pki), made on first start.

Layout as docs/components.md: pki/ca.crt, ca.key, apiserver.crt, apiserver.key. The serving cert
carries the SANs kubectl and in-cluster clients dial: 127.0.0.1, localhost, the first address of
the service range (10.96.0.1, the `kubernetes` Service), `kubernetes.default.svc...` names, the
advertise address and every --tls-san. A restart with new SANs reissues the serving cert from
the same CA, so kubeconfigs already handed out stay valid.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_DNS_SANS = (
    "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class PkiPaths:
    dir: Path

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def server_crt(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def server_key(self) -> Path:
        return self.dir / "apiserver.key"


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _split_sans(sans: list[str]) -> tuple[set[str], set[str]]:
    ips: set[str] = set()
    names: set[str] = set()
    for s in sans:
        if not s:
            continue
        try:
            ips.add(str(ipaddress.ip_address(s)))
        except ValueError:
            names.add(s)
    return ips, names


def _cert_sans(crt_pem: bytes) -> tuple[set[str], set[str]]:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(crt_pem)
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    ips = {str(i) for i in ext.get_values_for_type(x509.IPAddress)}
    names = set(ext.get_values_for_type(x509.DNSName))
    return ips, names


def ensure_pki(data_dir: Path, extra_sans: list[str]) -> PkiPaths:
    """Create the CA (once) and a serving cert covering the default SANs plus extra_sans."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    paths = PkiPaths(data_dir / "pki")
    paths.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = datetime.datetime.now(datetime.UTC)

    if paths.ca_crt.exists() and paths.ca_key.exists():
        ca_key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate(paths.ca_crt.read_bytes())
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nodeagent-ca")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                              content_commitment=False, key_encipherment=False, data_encipherment=False,
                              key_agreement=False, encipher_only=False, decipher_only=False),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(paths.ca_key, ca_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        paths.ca_crt.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        log.info("msg=\"created cluster CA\" path=%s", paths.ca_crt)

    want_ips, want_names = _split_sans(["127.0.0.1", *DEFAULT_DNS_SANS, *extra_sans])
    if paths.server_crt.exists() and paths.server_key.exists():
        have_ips, have_names = _cert_sans(paths.server_crt.read_bytes())
        if want_ips <= have_ips and want_names <= have_names:
            return paths
        want_ips |= have_ips
        want_names |= have_names

    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName(
        [x509.DNSName(n) for n in sorted(want_names)]
        + [x509.IPAddress(ipaddress.ip_address(i)) for i in sorted(want_ips)]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(san, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(paths.server_key, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    paths.server_crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.info("msg=\"issued serving certificate\" ips=%s names=%s", sorted(want_ips), sorted(want_names))
    return paths


# --- certificates signed by the cluster CA ---------------------------------------------------
APISERVER_KUBELET_CLIENT = "apiserver-kubelet-client"  # kubeadm's name for the file pair


def load_ca(paths: PkiPaths) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), None)
    return x509.load_pem_x509_certificate(paths.ca_crt.read_bytes()), key


def sign_certificate(paths: PkiPaths, public_key: Any, cn: str, orgs: tuple[str, ...] = (), *,
                     client: bool = False, server: bool = False, dns: tuple[str, ...] = (),
                     ips: tuple[str, ...] = (), days: int = 365) -> bytes:
    """A certificate for public_key, issued by the cluster CA: CN = user, O = groups (as upstream's
    x509 authenticator reads them), with client and/or server auth usages and SANs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert, ca_key = load_ca(paths)
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([*(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    usages = ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else []) + ([ExtendedKeyUsageOID.SERVER_AUTH] if server
                                                                        else [])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(ca_cert.subject).public_key(public_key)
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                      crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def new_key_pem() -> tuple[Any, bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())


def issue_key_pair(paths: PkiPaths, out_crt: Path, out_key: Path, cn: str, orgs: tuple[str, ...] = (), *,
                   client: bool = False, server: bool = False, dns: tuple[str, ...] = (),
                   ips: tuple[str, ...] = (), days: int = 365) -> tuple[Path, Path]:
    """A new key (mode 0600) and its CA-signed certificate, written side by side."""
    key, key_pem = new_key_pem()
    crt = sign_certificate(paths, key.public_key(), cn, orgs, client=client, server=server, dns=dns, ips=ips,
                           days=days)
    out_key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_private(out_key, key_pem)
    out_crt.write_bytes(crt)
    return out_crt, out_key


def ensure_kubelet_client_cert(paths: PkiPaths) -> tuple[Path, Path]:
    """The apiserver's client certificate towards kubelets (kubeadm apiserver-kubelet-client):
    user kube-apiserver-kubelet-client, no group, so it holds nothing but what RBAC binds to it
    (system:kubelet-api-admin)."""
    crt, key = paths.dir / f"{APISERVER_KUBELET_CLIENT}.crt", paths.dir / f"{APISERVER_KUBELET_CLIENT}.key"
    if crt.exists() and key.exists():
        return crt, key
    return issue_key_pair(paths, crt, key, "kube-apiserver-kubelet-client", client=True, days=3650)
