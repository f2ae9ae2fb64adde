"""EventRecorder: core/v1 Events about objects, fire-and-forget, aggregated like client-go's
EventCorrelator (the same reason and message on the same object bumps count and lastTimestamp
instead of creating a new Event)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from datetime import UTC, datetime
from typing import Any, Protocol

from nodeagent.client.errors import ApiError, NotFound
from nodeagent.machinery.kinds import EVENTS, Kind

log = logging.getLogger(__name__)


class EventClient(Protocol):
    async def create(self, kind: Kind, obj: dict[str, Any], namespace: str | None = ...) -> dict[str, Any]: ...

    async def patch(self, kind: Kind, name: str, patch: Any, namespace: str | None = ...,
                    patch_type: str = ..., subresource: str | None = ...) -> dict[str, Any]: ...


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def object_reference(obj: dict[str, Any], field_path: str | None = None) -> dict[str, Any]:
    md = obj.get("metadata") or {}
    ref = {"kind": obj.get("kind", ""), "apiVersion": obj.get("apiVersion", ""), "name": md.get("name", ""),
           "uid": md.get("uid", ""), "resourceVersion": md.get("resourceVersion", "")}
    if md.get("namespace"):
        ref["namespace"] = md["namespace"]
    if field_path:
        ref["fieldPath"] = field_path
    return ref


class EventRecorder:
    def __init__(self, client: EventClient, component: str, host: str | None = None,
                 max_pending: int = 1000) -> None:
        self.client = client
        self.component = component
        self.host = host
        self.max_pending = max_pending
        self._seen: dict[str, tuple[str, str, int]] = {}  # aggregation key -> (event ns, name, count)
        self._tasks: set[asyncio.Task[None]] = set()
        # One lock per aggregation key, so a burst of the same event counts up one Event
        # instead of racing to create several.
        self._locks: dict[str, asyncio.Lock] = {}

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str,
              field_path: str | None = None) -> None:
        """Record an Event (type_ is "Normal" or "Warning"); never raises, never blocks."""
        if len(self._tasks) >= self.max_pending:
            log.warning("dropping event reason=%s: %d events pending", reason, len(self._tasks))
            return
        try:
            task = asyncio.get_running_loop().create_task(
                self._record(obj, type_, reason, message, field_path))
        except RuntimeError:
            log.warning("no event loop: dropping event reason=%s", reason)
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        """Wait for pending events (for tests and clean shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _record(self, obj: dict[str, Any], type_: str, reason: str, message: str,
                      field_path: str | None) -> None:
        ref = object_reference(obj, field_path)
        ns = ref.get("namespace") or "default"
        agg = hashlib.sha256(
            f"{ref['kind']}/{ns}/{ref['name']}/{ref['uid']}/{field_path}/{type_}/{reason}/{message}".encode()
        ).hexdigest()
        lock = self._locks.setdefault(agg, asyncio.Lock())
        async with lock:
            await self._create_or_count(agg, ref, ns, type_, reason, message)

    async def _create_or_count(self, agg: str, ref: dict[str, Any], ns: str, type_: str, reason: str,
                               message: str) -> None:
        now = now_rfc3339()
        try:
            seen = self._seen.get(agg)
            if seen is not None:
                ev_ns, ev_name, count = seen
                try:
                    await self.client.patch(EVENTS, ev_name, {"count": count + 1, "lastTimestamp": now},
                                            namespace=ev_ns, patch_type="merge")
                    self._seen[agg] = (ev_ns, ev_name, count + 1)
                    return
                except NotFound:
                    pass
            name = f"{ref['name']}.{int(time.time() * 1e9):x}"
            body = {
                "metadata": {"name": name, "namespace": ns},
                "involvedObject": ref, "reason": reason, "message": message, "type": type_,
                "source": {"component": self.component, **({"host": self.host} if self.host else {})},
                "firstTimestamp": now, "lastTimestamp": now, "count": 1,
                "eventTime": None, "reportingComponent": self.component,
                "reportingInstance": self.host or "",
            }
            await self.client.create(EVENTS, body, namespace=ns)
            if len(self._seen) > 4096:  # bound memory; holders keep their lock objects
                self._seen.clear()
                self._locks.clear()
            self._seen[agg] = (ns, name, 1)
        except ApiError as e:
            log.warning("event not recorded reason=%s object=%s/%s error=%s", reason, ns, ref["name"], e)
        except Exception:
            log.exception("event not recorded reason=%s", reason)
