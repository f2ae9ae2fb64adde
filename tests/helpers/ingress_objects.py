"""Objects for ingress tests: Services, EndpointSlices, Ingresses and kubernetes.io/tls Secrets."""

from __future__ import annotations

import base64
import datetime
from typing import Any

Obj = dict[str, Any]


def service(name: str, port: int = 80, port_name: str = "", target: int = 8080, ns: str = "default") -> Obj:
    p: Obj = {"port": port, "targetPort": target, "protocol": "TCP"}
    if port_name:
        p["name"] = port_name
    return {"metadata": {"name": name, "namespace": ns}, "spec": {"selector": {"app": name}, "ports": [p]}}


def endpoint_slice(svc: str, name: str, addresses: list[str], port: int, port_name: str = "http",
                   ready: bool = True, ns: str = "default") -> Obj:
    return {"metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [a], "conditions": {"ready": ready}} for a in addresses],
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]}


def path(p: str, svc: str, ptype: str = "Prefix", port: int | str = "http") -> Obj:
    ref = {"name": port} if isinstance(port, str) else {"number": port}
    return {"path": p, "pathType": ptype, "backend": {"service": {"name": svc, "port": ref}}}


def ingress(name: str, rules: list[Obj] | None = None, tls: list[Obj] | None = None, default: str | None = None,
            annotations: dict[str, str] | None = None, ns: str = "default", cls: str | None = None,
            created: str | None = None) -> Obj:
    spec: Obj = {"rules": rules or []}
    if tls:
        spec["tls"] = tls
    if default:
        spec["defaultBackend"] = {"service": {"name": default, "port": {"name": "http"}}}
    if cls:
        spec["ingressClassName"] = cls
    md: Obj = {"name": name, "namespace": ns}
    if annotations:
        md["annotations"] = annotations
    if created:
        md["creationTimestamp"] = created
    return {"metadata": md, "spec": spec}


def self_signed(host: str) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def tls_secret(name: str, host: str, ns: str = "default") -> Obj:
    crt, key = self_signed(host)
    return {"metadata": {"name": name, "namespace": ns}, "type": "kubernetes.io/tls",
            "data": {"tls.crt": base64.b64encode(crt).decode(), "tls.key": base64.b64encode(key).decode()}}
