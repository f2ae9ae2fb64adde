"""The REST client every component uses: typed paths from nodeagent.machinery.kinds, JSON bodies,
errors as ApiError subclasses, and watch streams as async iterators."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from nodeagent.client.config import ClientConfig
from nodeagent.client.errors import ApiError, Expired, error_from_status
from nodeagent.machinery.kinds import Kind

log = logging.getLogger(__name__)

PATCH_CONTENT_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",
}

# Connection-level failures worth retrying for idempotent calls; an HTTP answer is never retried.
_RETRYABLE = (aiohttp.ClientConnectionError, TimeoutError)


@dataclass
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: dict[str, Any]


def _ns_of(kind: Kind, obj: dict[str, Any] | None, namespace: str | None) -> str | None:
    if not kind.namespaced:
        return None
    ns = namespace or ((obj or {}).get("metadata") or {}).get("namespace")
    return ns or "default"


def _selector(value: str | dict[str, str] | None) -> str | None:
    """Selectors may be given as the string form or as a {key: value} dict of equalities."""
    if value is None or isinstance(value, str):
        return value
    return ",".join(f"{k}={v}" for k, v in value.items())


class Client:
    def __init__(self, config: ClientConfig, *, user_agent: str = "nodeagent", timeout: float = 30.0,
                 retries: int = 4) -> None:
        self.config = config
        self.user_agent = user_agent
        self.timeout = timeout
        self.retries = retries
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"User-Agent": self.user_agent, "Accept": "application/json"}
            connector = aiohttp.TCPConnector(ssl=self.config.ssl_context(), limit=64)
            self._session = aiohttp.ClientSession(
                base_url=None, headers=headers, connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout),
            )
        return self._session

    # -- plumbing -----------------------------------------------------------------------------

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                      body: Any = None, content_type: str = "application/json",
                      idempotent: bool | None = None) -> dict[str, Any]:
        """One API call; the decoded JSON answer, or an ApiError with the server's Status."""
        url = self.config.server + path
        query = {k: (str(v).lower() if isinstance(v, bool) else str(v))
                 for k, v in (params or {}).items() if v is not None}
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        headers.update(self.config.auth_headers())
        if idempotent is None:
            idempotent = method in ("GET", "PUT", "DELETE")
        attempt = 0
        while True:
            try:
                async with self._get_session().request(
                    method, url, params=query, data=data, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                ) as resp:
                    text = await resp.text()
                    payload: Any
                    try:
                        payload = json.loads(text) if text else {}
                    except ValueError:
                        payload = {"message": text[:500]}
                    if resp.status >= 400:
                        raise error_from_status(resp.status, payload if isinstance(payload, dict) else None,
                                                what=f"{method} {path}")
                    return payload if isinstance(payload, dict) else {"items": payload}
            except _RETRYABLE as e:
                attempt += 1
                # A request that never reached the server is safe to send again whatever its verb:
                # a refused connect, or the first failure on a pooled keep-alive connection that the
                # server (restarted) had already closed. Otherwise only idempotent verbs retry.
                unsent = isinstance(e, aiohttp.ClientConnectorError) or (
                    attempt == 1 and isinstance(e, aiohttp.ServerDisconnectedError))
                if not (idempotent or unsent) or attempt > self.retries:
                    raise ApiError(0, {"reason": "ServiceUnavailable",
                                       "message": f"{type(e).__name__}: {e}"},
                                   what=f"{method} {path}") from e
                delay = min(0.2 * 2 ** (attempt - 1), 3.0)
                log.debug("retry method=%s path=%s attempt=%d error=%r", method, path, attempt, e)
                await asyncio.sleep(delay)

    # -- verbs --------------------------------------------------------------------------------

    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> dict[str, Any]:
        return await self.request("GET", kind.path(name, _ns_of(kind, None, namespace)))

    async def list(self, kind: Kind, namespace: str | None = None,
                   label_selector: str | dict[str, str] | None = None, field_selector: str | None = None,
                   limit: int | None = None, continue_: str | None = None,
                   resource_version: str | None = None,
                   resource_version_match: str | None = None) -> dict[str, Any]:
        params = {"labelSelector": _selector(label_selector), "fieldSelector": field_selector,
                  "limit": limit, "continue": continue_, "resourceVersion": resource_version,
                  "resourceVersionMatch": resource_version_match}
        return await self.request("GET", kind.base_path(namespace if kind.namespaced else None), params=params)

    async def create(self, kind: Kind, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        body = {"apiVersion": kind.api_version, "kind": kind.kind, **obj}
        return await self.request("POST", kind.base_path(_ns_of(kind, obj, namespace)), body=body)

    async def update(self, kind: Kind, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        body = {"apiVersion": kind.api_version, "kind": kind.kind, **obj}
        name = obj["metadata"]["name"]
        return await self.request("PUT", kind.path(name, _ns_of(kind, obj, namespace)), body=body)

    async def update_status(self, kind: Kind, obj: dict[str, Any],
                            namespace: str | None = None) -> dict[str, Any]:
        body = {"apiVersion": kind.api_version, "kind": kind.kind, **obj}
        name = obj["metadata"]["name"]
        return await self.request("PUT", kind.path(name, _ns_of(kind, obj, namespace), "status"), body=body)

    async def patch(self, kind: Kind, name: str, patch: Any, namespace: str | None = None,
                    patch_type: str = "merge", subresource: str | None = None) -> dict[str, Any]:
        return await self.request(
            "PATCH", kind.path(name, _ns_of(kind, None, namespace), subresource), body=patch,
            content_type=PATCH_CONTENT_TYPES[patch_type], idempotent=patch_type != "json",
        )

    async def delete(self, kind: Kind, name: str, namespace: str | None = None,
                     grace_period_seconds: int | None = None, propagation_policy: str | None = None,
                     preconditions: dict[str, str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        if propagation_policy:
            body["propagationPolicy"] = propagation_policy
        if preconditions:
            body["preconditions"] = preconditions
        return await self.request("DELETE", kind.path(name, _ns_of(kind, None, namespace)), body=body)

    async def create_subresource(self, kind: Kind, name: str, subresource: str, body: dict[str, Any],
                                 namespace: str | None = None) -> dict[str, Any]:
        return await self.request("POST", kind.path(name, _ns_of(kind, None, namespace), subresource),
                                  body=body)

    async def watch(self, kind: Kind, namespace: str | None = None, resource_version: str | None = None,
                    label_selector: str | dict[str, str] | None = None, field_selector: str | None = None,
                    timeout_seconds: int | None = None,
                    allow_bookmarks: bool = True) -> AsyncIterator[WatchEvent]:
        """One watch request. Ends when the server closes the stream (timeoutSeconds); raises Expired
        for a 410 (as an HTTP answer or as an ERROR event) and ApiError for other errors."""
        params = {"watch": "true", "resourceVersion": resource_version,
                  "labelSelector": _selector(label_selector), "fieldSelector": field_selector,
                  "timeoutSeconds": timeout_seconds, "allowWatchBookmarks": allow_bookmarks or None}
        query = {k: str(v) for k, v in params.items() if v is not None}
        path = kind.base_path(namespace if kind.namespaced else None)
        try:
            async for ev in self._watch_stream(path, query):
                yield ev
        except (TimeoutError, aiohttp.ClientError) as e:
            # The stream broke (server gone, connection reset): callers see one error type for
            # "the apiserver is unavailable" and resume from their last resourceVersion.
            raise ApiError(0, {"reason": "ServiceUnavailable", "message": f"{type(e).__name__}: {e}"},
                           what=f"WATCH {path}") from e

    async def _watch_stream(self, path: str, query: dict[str, str]) -> AsyncIterator[WatchEvent]:
        async with self._get_session().get(self.config.server + path, params=query,
                                           headers=self.config.auth_headers(),
                                           timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout)
                                           ) as resp:
            if resp.status >= 400:
                try:
                    payload = await resp.json(content_type=None)
                except ValueError:
                    payload = None
                raise error_from_status(resp.status, payload, what=f"WATCH {path}")
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield self._decode_event(line, path)
            if buf.strip():
                yield self._decode_event(buf, path)

    @staticmethod
    def _decode_event(line: bytes, path: str) -> WatchEvent:
        ev = json.loads(line)
        etype, obj = ev.get("type", ""), ev.get("object") or {}
        if etype == "ERROR":
            code = int(obj.get("code") or 500)
            if code == 410:
                raise Expired(410, obj, what=f"WATCH {path}")
            raise error_from_status(code, obj, what=f"WATCH {path}")
        return WatchEvent(etype, obj)
