"""ServiceAccount tokens: RS256 JWTs signed with the key in DIR/pki/sa.key (kubeadm's name), as
upstream's pkg/serviceaccount/{jwt.go,claims.go} issue and check them.

A token names its service account and, when bound, the pod, secret or node it lives with
(`kubernetes.io` claims); it carries the issuer, audiences, expiry, not-before and a unique id.
Checking one verifies the signature (RS256 only, the key id when given), the issuer, that one of
its audiences is the apiserver's, the time window (60 s leeway, upstream's), and that the service
account and every bound object still exist with the uid the token recorded: deleting the pod
revokes the token. Keys live in files, so every apiserver that shares the data dir (or the key
files) issues and accepts the same tokens."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from nodeagent.api.auth.user import UserInfo, serviceaccount_groups, serviceaccount_user

Obj = dict[str, Any]
Getter = Callable[[str, str, str], Awaitable[Obj | None]]  # (resource, namespace, name) -> object

DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"
LEEWAY = 60.0  # upstream jwt.DefaultLeeway
KUBE_CLAIMS = "kubernetes.io"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def ensure_signing_key(pki_dir: Path) -> Path:
    """DIR/pki/sa.key (RSA 2048, 0600) and sa.pub, made once."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key_path, pub_path = pki_dir / "sa.key", pki_dir / "sa.pub"
    if key_path.exists():
        return key_path
    pki_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tmp = key_path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.replace(tmp, key_path)
    pub_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_path


class InvalidToken(Exception):
    pass


class ServiceAccountTokens:
    def __init__(self, key_file: Path, issuer: str = DEFAULT_ISSUER, audiences: tuple[str, ...] = ()) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = serialization.load_pem_private_key(key_file.read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        self._key = key
        self._public = key.public_key()
        der = self._public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = b64url(hashlib.sha256(der).digest())  # upstream keyIDFromPublicKey
        self.issuer = issuer
        self.audiences = audiences or (issuer,)

    # --- issuing -----------------------------------------------------------------------------
    def _sign(self, claims: Obj) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        header = {"alg": "RS256", "kid": self.kid}
        signing_input = f"{b64url(json.dumps(header, separators=(',', ':')).encode())}." \
                        f"{b64url(json.dumps(claims, separators=(',', ':')).encode())}"
        sig = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(sig)}"

    def issue(self, sa: Obj, audiences: list[str], expiration_seconds: int, bound: dict[str, Obj] | None = None,
              now: float | None = None) -> tuple[str, int]:
        """A token for service account `sa`; bound maps "pod"/"secret"/"node" to the objects. Returns
        (token, expiry as a unix time)."""
        now = int(now if now is not None else time.time())
        meta = sa.get("metadata") or {}
        ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        kube: Obj = {"namespace": ns, "serviceaccount": {"name": name, "uid": meta.get("uid", "")}}
        for what, obj in (bound or {}).items():
            m = obj.get("metadata") or {}
            kube[what] = {"name": m.get("name", ""), "uid": m.get("uid", "")}
        exp = now + int(expiration_seconds)
        claims = {"aud": list(audiences), "exp": exp, "iat": now, "iss": self.issuer, "jti": str(uuid.uuid4()),
                  KUBE_CLAIMS: kube, "nbf": now, "sub": serviceaccount_user(ns, name)}
        return self._sign(claims), exp

    # --- checking ------------------------------------------------------------------------------
    def _claims(self, token: str, now: float) -> Obj:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidToken("not a JWT")
        try:
            header = json.loads(unb64url(parts[0]))
            claims = json.loads(unb64url(parts[1]))
            sig = unb64url(parts[2])
        except (ValueError, binascii.Error, UnicodeDecodeError) as e:
            raise InvalidToken(f"malformed JWT: {e}") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise InvalidToken("malformed JWT")
        if header.get("alg") != "RS256":  # never "none", never an HMAC keyed with our public key
            raise InvalidToken(f"unexpected signing algorithm {header.get('alg')!r}")
        if header.get("kid") not in (None, self.kid):
            raise InvalidToken("unknown key id")
        try:
            self._public.verify(sig, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise InvalidToken("invalid signature") from None
        if claims.get("iss") != self.issuer:
            raise InvalidToken("token issuer is not this apiserver's")
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not set(auds) & set(self.audiences):
            raise InvalidToken("token audiences are not this apiserver's")
        for key, late in (("exp", False), ("nbf", True), ("iat", True)):
            v = claims.get(key)
            if v is None and key == "exp":
                raise InvalidToken("token has no expiry")
            if v is None:
                continue
            if not isinstance(v, (int, float)):
                raise InvalidToken(f"invalid {key} claim")
            if late and v > now + LEEWAY:
                raise InvalidToken("token not valid yet")
            if not late and v < now - LEEWAY:
                raise InvalidToken("token has expired")
        return claims

    async def authenticate(self, token: str, get: Getter, now: float | None = None) -> UserInfo | None:
        """The token's user, or None when it is not a valid service account token of ours."""
        try:
            claims = self._claims(token, now if now is not None else time.time())
        except InvalidToken:
            return None
        kube = claims.get(KUBE_CLAIMS)
        if not isinstance(kube, dict) or not isinstance(kube.get("serviceaccount"), dict):
            return None
        ns = str(kube.get("namespace") or "")
        sa_ref = kube["serviceaccount"]
        sa = await get("serviceaccounts", ns, str(sa_ref.get("name") or ""))
        if sa is None or (sa_ref.get("uid") and (sa.get("metadata") or {}).get("uid") != sa_ref["uid"]):
            return None  # deleted, or deleted and made again
        extra: list[tuple[str, tuple[str, ...]]] = [("authentication.kubernetes.io/credential-id",
                                                     (f"JTI={claims.get('jti', '')}",))]
        for what, resource, namespaced in (("pod", "pods", True), ("secret", "secrets", True),
                                           ("node", "nodes", False)):
            ref = kube.get(what)
            if not isinstance(ref, dict):
                continue
            obj = await get(resource, ns if namespaced else "", str(ref.get("name") or ""))
            if obj is None or (obj.get("metadata") or {}).get("uid") != ref.get("uid"):
                return None  # the object the token was bound to is gone: so is the token
            if what in ("pod", "node"):
                extra += [(f"authentication.kubernetes.io/{what}-name", (str(ref.get("name")),)),
                          (f"authentication.kubernetes.io/{what}-uid", (str(ref.get("uid")),))]
        meta = sa.get("metadata") or {}
        return UserInfo(name=serviceaccount_user(ns, str(meta.get("name"))), uid=str(meta.get("uid") or ""),
                        groups=serviceaccount_groups(ns), extra=tuple(sorted(extra)))

    # --- discovery -------------------------------------------------------------------------------
    def jwks(self) -> Obj:
        nums = self._public.public_numbers()
        n = nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")
        e = nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big")
        return {"keys": [{"use": "sig", "kty": "RSA", "kid": self.kid, "alg": "RS256", "n": b64url(n),
                          "e": b64url(e)}]}

    def openid_configuration(self, jwks_uri: str | None = None) -> Obj:
        return {"issuer": self.issuer, "jwks_uri": jwks_uri or f"{self.issuer.rstrip('/')}/openid/v1/jwks",
                "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"]}
