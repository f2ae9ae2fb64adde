"""Service account tokens for pods' projected volumes (upstream pkg/kubelet/token/token_manager.go):
the kubelet asks the apiserver for a token bound to the pod (TokenRequest with boundObjectRef, as
NodeRestriction requires), caches it, and gets a new one once 80% of its life has passed or it is
24 hours old; a loop rewrites the projected files of running pods whose tokens are due, so a
client that re-reads its token file (client-go, the Python client) never holds an expired one."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nodeagent.machinery.kinds import SERVICEACCOUNTS

log = logging.getLogger(__name__)

Obj = dict[str, Any]
MAX_AGE = 24 * 3600.0
REFRESH_FRACTION = 0.8
DEFAULT_EXPIRATION = 3600


def token_sources(pod: Obj) -> list[Obj]:
    out = []
    for v in (pod.get("spec") or {}).get("volumes") or []:
        for src in ((v.get("projected") or {}).get("sources") or []) if isinstance(v, dict) else []:
            if isinstance(src, dict) and isinstance(src.get("serviceAccountToken"), dict):
                out.append(src["serviceAccountToken"])
    return out


class TokenManager:
    def __init__(self, client: Any, now: Callable[[], float] = time.time) -> None:
        self.client = client
        self.now = now
        # (pod uid, audience, expiration) -> (token, issued at, lifetime)
        self._cache: dict[tuple[str, str, int], tuple[str, float, float]] = {}

    def _due(self, entry: tuple[str, float, float]) -> bool:
        _, issued, life = entry
        age = self.now() - issued
        return age > life * REFRESH_FRACTION or age > MAX_AGE

    async def token(self, pod: Obj, source: Obj) -> bytes:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        uid = str(meta.get("uid") or "")
        audience = str(source.get("audience") or "")
        seconds = int(source.get("expirationSeconds") or DEFAULT_EXPIRATION)
        key = (uid, audience, seconds)
        hit = self._cache.get(key)
        if hit is not None and not self._due(hit):
            return hit[0].encode()
        sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        body: Obj = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {
            "expirationSeconds": seconds,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": meta.get("name"), "uid": uid}}}
        if audience:
            body["spec"]["audiences"] = [audience]
        issued = self.now()
        out = await self.client.request("POST", SERVICEACCOUNTS.path(str(sa), str(meta.get("namespace")), "token"),
                                        body=body)
        token = str(out["status"]["token"])
        life = float((out.get("spec") or {}).get("expirationSeconds") or seconds)
        self._cache[key] = (token, issued, life)
        log.info("service account token pod=%s/%s serviceaccount=%s expires_in=%ds", meta.get("namespace"),
                 meta.get("name"), sa, int(life))
        return token.encode()

    def refresh_due(self, pod: Obj) -> bool:
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        for src in token_sources(pod):
            key = (uid, str(src.get("audience") or ""), int(src.get("expirationSeconds") or DEFAULT_EXPIRATION))
            hit = self._cache.get(key)
            if hit is None or self._due(hit):
                return True
        return False

    def forget(self, uid: str) -> None:
        for key in [k for k in self._cache if k[0] == uid]:
            del self._cache[key]


async def refresh_loop(pods: Callable[[], list[Obj]], tokens: TokenManager,
                       rewrite: Callable[[Obj], Awaitable[Any]], period: float = 5.0) -> None:
    """Rewrite the projected volumes of running pods whose tokens are due (upstream remounts them
    on its periodic volume sync)."""
    while True:
        await asyncio.sleep(period)
        for pod in pods():
            if token_sources(pod) and tokens.refresh_due(pod):
                try:
                    await rewrite(pod)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.warning("refreshing a projected token failed pod=%s/%s err=%s",
                                (pod.get("metadata") or {}).get("namespace"), (pod.get("metadata") or {}).get("name"),
                                e)
