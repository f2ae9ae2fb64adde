"""Authenticators (upstream k8s.io/apiserver/pkg/authentication): X.509 client certificates
signed by the cluster CA (CN = user, O = groups; request/x509), then bearer tokens (the static
token file, tokens.py). Each returns a user, or None when the request does not carry its kind of
credential; a bearer token nobody knows is a 401 (there is no anonymous fallback)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from nodeagent.api import errors
from nodeagent.api.auth.user import UserInfo

TokenLookup = Callable[[str], "UserInfo | None | Awaitable[UserInfo | None]"]


async def lookup_token(lookups: list[TokenLookup], token: str) -> UserInfo | None:
    """The first lookup that knows the token (static tokens, then service account JWTs)."""
    for lookup in lookups:
        user = lookup(token)
        if inspect.isawaitable(user):
            user = await user
        if user is not None:
            return user
    return None


def peer_certificate_user(request: Any) -> UserInfo | None:
    """The user of a verified client certificate (the TLS layer checked it against the CA)."""
    transport = getattr(request, "transport", None)
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return None
    cn, orgs = "", []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationName":
                orgs.append(value)
    if not cn:
        return None
    return UserInfo(name=cn, groups=tuple(orgs))


def bearer_token(request: Any) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def token_authenticator(lookups: list[TokenLookup]) -> Callable[[Any], Awaitable[UserInfo | None]]:
    async def authenticate(request: Any) -> UserInfo | None:
        token = bearer_token(request)
        if token is None:
            return None
        user = await lookup_token(lookups, token)
        if user is None:
            raise errors.ApiError(401, "Unauthorized", "Unauthorized")
        return user

    return authenticate
