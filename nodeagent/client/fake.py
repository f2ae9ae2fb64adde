"""FakeClient: the Client interface over an in-memory store, for unit tests of the components.

It behaves like the apiserver where components depend on it: one global resourceVersion per
write, 409 Conflict on a stale resourceVersion and AlreadyExists on a taken name, generateName,
uid and creationTimestamp, generation bumped on spec changes, label and field selectors, watch
replay from a resourceVersion (objects leaving a watch's selector arrive as DELETED), graceful
deletion of pods bound to a node, finalizers, pods/binding, and status subresources.
Every call is appended to `actions` so tests can assert what a component did;
`fail_next(verb, plural, error)` injects one failure."""

from __future__ import annotations

import asyncio
import builtins
import copy
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from nodeagent.client.errors import (
    AlreadyExists,
    ApiError,
    BadRequest,
    Conflict,
    Expired,
    NotFound,
    status_body,
)
from nodeagent.client.events import now_rfc3339
from nodeagent.client.rest import WatchEvent
from nodeagent.client.selectors import field_matcher, labels_match, parse_label_selector
from nodeagent.machinery.kinds import KINDS, NAMESPACES, PODS, Kind
from nodeagent.machinery.patch import PatchError, json_patch, merge_patch, strategic_merge

Obj = dict[str, Any]


@dataclass
class Action:
    verb: str
    kind: str  # plural
    namespace: str | None
    name: str | None
    body: Any = None
    subresource: str | None = None


@dataclass
class _Watcher:
    kind: Kind
    namespace: str | None
    label_reqs: list[Any]
    field_match: Any
    queue: asyncio.Queue[WatchEvent | None] = field(default_factory=asyncio.Queue)


class FakeClient:
    def __init__(self, history_limit: int = 10000) -> None:
        self._objects: dict[tuple[str, str | None, str], Obj] = {}
        self._rv = 0
        self._history: list[tuple[int, str, str, Obj, Obj | None]] = []  # rv, plural, type, obj, old
        self._history_limit = history_limit
        self._compacted = 0
        self._watchers: list[_Watcher] = []
        self.actions: list[Action] = []
        self._failures: builtins.list[tuple[str, str, ApiError]] = []

    async def __aenter__(self) -> FakeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for w in self._watchers:
            w.queue.put_nowait(None)

    # -- test helpers -------------------------------------------------------------------------

    def fail_next(self, verb: str, plural: str, error: ApiError | None = None) -> None:
        self._failures.append((verb, plural, error or ApiError(500, status_body(500, "InternalError", "injected"))))

    def objects(self, kind: Kind) -> builtins.list[Obj]:
        return [copy.deepcopy(o) for (p, _, _), o in sorted(self._objects.items(), key=lambda kv: str(kv[0]))
                if p == kind.plural]

    def compact(self) -> None:
        """Forget history: later watches from an older resourceVersion get 410 Expired."""
        self._compacted = self._rv
        self._history.clear()

    def close_watches(self) -> None:
        """End every open watch stream, as a server restart or timeout would."""
        for w in list(self._watchers):
            w.queue.put_nowait(None)

    def seed(self, kind: Kind, obj: Obj) -> Obj:
        """Store an object directly (no admission), for test set-up."""
        return self._store_new(kind, copy.deepcopy(obj), (obj.get("metadata") or {}).get("namespace"))

    # -- internals ----------------------------------------------------------------------------

    def _check_failure(self, verb: str, kind: Kind) -> None:
        for i, (v, p, err) in enumerate(self._failures):
            if v == verb and p == kind.plural:
                del self._failures[i]
                raise err

    def _record(self, verb: str, kind: Kind, ns: str | None, name: str | None, body: Any = None,
                sub: str | None = None) -> None:
        self.actions.append(Action(verb, kind.plural, ns, name, copy.deepcopy(body), sub))
        self._check_failure(verb, kind)

    @staticmethod
    def _ns(kind: Kind, obj: Obj | None, namespace: str | None) -> str | None:
        if not kind.namespaced:
            return None
        return namespace or ((obj or {}).get("metadata") or {}).get("namespace") or "default"

    def _not_found(self, kind: Kind, name: str) -> NotFound:
        return NotFound(404, status_body(404, "NotFound", f'{kind.plural} "{name}" not found',
                                         {"name": name, "kind": kind.plural}))

    def _bump(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _emit(self, kind: Kind, etype: str, obj: Obj, old: Obj | None) -> None:
        self._history.append((self._rv, kind.plural, etype, copy.deepcopy(obj), copy.deepcopy(old)))
        if len(self._history) > self._history_limit:
            drop = len(self._history) - self._history_limit
            self._compacted = self._history[drop - 1][0]
            del self._history[:drop]
        for w in self._watchers:
            if w.kind.plural == kind.plural:
                ev = self._event_for(w, etype, obj, old)
                if ev:
                    w.queue.put_nowait(ev)

    @staticmethod
    def _matches(w: _Watcher, obj: Obj | None) -> bool:
        if obj is None:
            return False
        md = obj.get("metadata") or {}
        if w.namespace and md.get("namespace") != w.namespace:
            return False
        return labels_match(w.label_reqs, md.get("labels")) and w.field_match(obj)

    def _event_for(self, w: _Watcher, etype: str, obj: Obj, old: Obj | None) -> WatchEvent | None:
        now, before = self._matches(w, obj), self._matches(w, old)
        if etype == "DELETED":
            return WatchEvent("DELETED", copy.deepcopy(obj)) if now else None
        if now and not before:
            return WatchEvent("ADDED" if etype == "ADDED" or old is not None else etype, copy.deepcopy(obj))
        if now and before:
            return WatchEvent("MODIFIED", copy.deepcopy(obj))
        if before and not now:
            return WatchEvent("DELETED", copy.deepcopy(obj))
        return None

    def _store_new(self, kind: Kind, obj: Obj, ns: str | None) -> Obj:
        md = obj.setdefault("metadata", {})
        if not md.get("name"):
            if not md.get("generateName"):
                raise ApiError(422, status_body(422, "Invalid", "name or generateName is required"))
            md["name"] = md["generateName"] + uuid.uuid4().hex[:5]
        if ns:
            md["namespace"] = ns
        key = (kind.plural, ns, md["name"])
        if key in self._objects:
            raise AlreadyExists(409, status_body(409, "AlreadyExists",
                                                 f'{kind.plural} "{md["name"]}" already exists',
                                                 {"name": md["name"], "kind": kind.plural}))
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        md.setdefault("uid", str(uuid.uuid4()))
        md.setdefault("creationTimestamp", now_rfc3339())
        if "spec" in obj:
            md["generation"] = 1
        md["resourceVersion"] = self._bump()
        self._objects[key] = obj
        self._emit(kind, "ADDED", obj, None)
        return copy.deepcopy(obj)

    def _replace(self, kind: Kind, key: tuple[str, str | None, str], new: Obj) -> Obj:
        old = self._objects[key]
        md = new["metadata"]
        if md.get("deletionTimestamp") and not md.get("finalizers") and (
                kind is not PODS or md.get("deletionGracePeriodSeconds") == 0 or not (
                new.get("spec") or {}).get("nodeName")):
            return self._remove(kind, key)
        if new.get("spec") != old.get("spec"):
            md["generation"] = (old["metadata"].get("generation") or 0) + 1
        md["resourceVersion"] = self._bump()
        self._objects[key] = new
        self._emit(kind, "MODIFIED", new, old)
        return copy.deepcopy(new)

    def _remove(self, kind: Kind, key: tuple[str, str | None, str]) -> Obj:
        old = self._objects.pop(key)
        obj = copy.deepcopy(old)
        obj["metadata"]["resourceVersion"] = self._bump()
        self._emit(kind, "DELETED", obj, old)
        return obj

    def _get_stored(self, kind: Kind, name: str, ns: str | None) -> tuple[tuple[str, str | None, str], Obj]:
        key = (kind.plural, ns, name)
        if key not in self._objects:
            raise self._not_found(kind, name)
        return key, self._objects[key]

    # -- the Client interface -------------------------------------------------------------------

    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> Obj:
        ns = self._ns(kind, None, namespace)
        self._record("get", kind, ns, name)
        return copy.deepcopy(self._get_stored(kind, name, ns)[1])

    async def list(self, kind: Kind, namespace: str | None = None, label_selector: Any = None,
                   field_selector: str | None = None, limit: int | None = None, continue_: str | None = None,
                   resource_version: str | None = None, resource_version_match: str | None = None) -> Obj:
        self._record("list", kind, namespace, None)
        if isinstance(label_selector, dict):
            label_selector = ",".join(f"{k}={v}" for k, v in label_selector.items())
        w = _Watcher(kind, namespace if kind.namespaced else None, parse_label_selector(label_selector),
                     field_matcher(kind, field_selector))
        items = [copy.deepcopy(o) for (p, _, _), o in sorted(self._objects.items(), key=lambda kv: str(kv[0]))
                 if p == kind.plural and self._matches(w, o)]
        return {"apiVersion": kind.api_version, "kind": kind.list_kind,
                "metadata": {"resourceVersion": str(self._rv)}, "items": items}

    async def create(self, kind: Kind, obj: Obj, namespace: str | None = None) -> Obj:
        ns = self._ns(kind, obj, namespace)
        self._record("create", kind, ns, (obj.get("metadata") or {}).get("name"), obj)
        if kind.namespaced and kind is not NAMESPACES and ns and not any(
                p == "namespaces" for p, _, _ in self._objects):
            pass  # namespaces are not enforced unless the test created some
        return self._store_new(kind, copy.deepcopy(obj), ns)

    async def update(self, kind: Kind, obj: Obj, namespace: str | None = None) -> Obj:
        return self._update(kind, obj, namespace, status=False)

    async def update_status(self, kind: Kind, obj: Obj, namespace: str | None = None) -> Obj:
        return self._update(kind, obj, namespace, status=True)

    def _update(self, kind: Kind, obj: Obj, namespace: str | None, status: bool) -> Obj:
        ns = self._ns(kind, obj, namespace)
        name = obj["metadata"]["name"]
        self._record("update", kind, ns, name, obj, "status" if status else None)
        key, cur = self._get_stored(kind, name, ns)
        rv = obj["metadata"].get("resourceVersion")
        if rv and rv != cur["metadata"]["resourceVersion"]:
            raise Conflict(409, status_body(
                409, "Conflict", f'Operation cannot be fulfilled on {kind.plural} "{name}": the object has been '
                                 "modified; please apply your changes to the latest version and try again"))
        new = copy.deepcopy(cur)
        if status:
            new["status"] = copy.deepcopy(obj.get("status"))
        else:
            new = copy.deepcopy(obj)
            new["apiVersion"], new["kind"] = kind.api_version, kind.kind
            if "status" in cur:
                new["status"] = copy.deepcopy(cur["status"])
            else:
                new.pop("status", None)
            for f in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                      "generation"):
                if f in cur["metadata"]:
                    new["metadata"][f] = cur["metadata"][f]
            if ns:
                new["metadata"]["namespace"] = ns
        return self._replace(kind, key, new)

    async def patch(self, kind: Kind, name: str, patch: Any, namespace: str | None = None,
                    patch_type: str = "merge", subresource: str | None = None) -> Obj:
        ns = self._ns(kind, None, namespace)
        self._record("patch", kind, ns, name, patch, subresource)
        key, cur = self._get_stored(kind, name, ns)
        try:
            if patch_type == "json":
                new = json_patch(cur, patch)
            elif patch_type == "strategic":
                new = strategic_merge(cur, patch)
            else:
                new = merge_patch(cur, patch)
        except (PatchError, KeyError, IndexError, ValueError, TypeError) as e:
            raise BadRequest(400, status_body(400, "BadRequest", f"patch failed: {e}")) from e
        rv = (patch.get("metadata") or {}).get("resourceVersion") if isinstance(patch, dict) else None
        if rv and rv != cur["metadata"]["resourceVersion"]:
            raise Conflict(409, status_body(409, "Conflict", f'{kind.plural} "{name}": stale resourceVersion'))
        if subresource == "status":
            kept = copy.deepcopy(cur)
            kept["status"] = new.get("status")
            new = kept
        elif "status" in cur:
            new["status"] = copy.deepcopy(cur["status"])
        new["metadata"]["uid"] = cur["metadata"]["uid"]
        return self._replace(kind, key, new)

    async def delete(self, kind: Kind, name: str, namespace: str | None = None,
                     grace_period_seconds: int | None = None, propagation_policy: str | None = None,
                     preconditions: dict[str, str] | None = None) -> Obj:
        ns = self._ns(kind, None, namespace)
        self._record("delete", kind, ns, name, {"gracePeriodSeconds": grace_period_seconds,
                                                 "propagationPolicy": propagation_policy})
        key, cur = self._get_stored(kind, name, ns)
        if preconditions and preconditions.get("uid") and preconditions["uid"] != cur["metadata"]["uid"]:
            raise Conflict(409, status_body(409, "Conflict", f'{kind.plural} "{name}": precondition failed: uid'))
        md = cur["metadata"]
        graceful = kind is PODS and (cur.get("spec") or {}).get("nodeName") and grace_period_seconds != 0
        if graceful or md.get("finalizers") or propagation_policy == "Foreground":
            new = copy.deepcopy(cur)
            nmd = new["metadata"]
            nmd.setdefault("deletionTimestamp", now_rfc3339())
            if propagation_policy == "Foreground" and "foregroundDeletion" not in (nmd.get("finalizers") or []):
                nmd["finalizers"] = [*(nmd.get("finalizers") or []), "foregroundDeletion"]
            if kind is PODS:
                grace = grace_period_seconds
                if grace is None:
                    grace = (cur.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
                nmd["deletionGracePeriodSeconds"] = grace if graceful else 0
            if new == cur:
                return copy.deepcopy(cur)
            return self._replace(kind, key, new)
        return self._remove(kind, key)

    async def create_subresource(self, kind: Kind, name: str, subresource: str, body: Obj,
                                 namespace: str | None = None) -> Obj:
        ns = self._ns(kind, None, namespace)
        self._record("create", kind, ns, name, body, subresource)
        key, cur = self._get_stored(kind, name, ns)
        if kind is PODS and subresource == "binding":
            if (cur.get("spec") or {}).get("nodeName"):
                raise Conflict(409, status_body(409, "Conflict", f'pod "{name}" is already assigned to a node'))
            new = copy.deepcopy(cur)
            new.setdefault("spec", {})["nodeName"] = body["target"]["name"]
            self._replace(kind, key, new)
            return {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}
        raise BadRequest(400, status_body(400, "BadRequest", f"fake: unsupported subresource {subresource}"))

    async def watch(self, kind: Kind, namespace: str | None = None, resource_version: str | None = None,
                    label_selector: Any = None, field_selector: str | None = None,
                    timeout_seconds: int | None = None, allow_bookmarks: bool = True) -> AsyncIterator[WatchEvent]:
        self._record("watch", kind, namespace, None)
        if isinstance(label_selector, dict):
            label_selector = ",".join(f"{k}={v}" for k, v in label_selector.items())
        w = _Watcher(kind, namespace if kind.namespaced else None, parse_label_selector(label_selector),
                     field_matcher(kind, field_selector))
        start = int(resource_version) if resource_version not in (None, "", "0") else None
        if start is not None and start < self._compacted:
            raise Expired(410, status_body(410, "Expired", f"too old resource version: {start} ({self._compacted})"))
        if start is None:  # like the server: synthetic ADDED for the current state
            for (p, _, _), o in list(self._objects.items()):
                if p == kind.plural and self._matches(w, o):
                    w.queue.put_nowait(WatchEvent("ADDED", copy.deepcopy(o)))
        else:
            for rv, p, etype, obj, old in self._history:
                if rv > start and p == kind.plural:
                    ev = self._event_for(w, etype, obj, old)
                    if ev:
                        w.queue.put_nowait(ev)
        self._watchers.append(w)
        try:
            while True:
                try:
                    ev = await asyncio.wait_for(w.queue.get(), timeout_seconds) if timeout_seconds else \
                        await w.queue.get()
                except TimeoutError:
                    return
                if ev is None:
                    return
                yield ev
        finally:
            self._watchers.remove(w)


__all__ = ["Action", "FakeClient", "KINDS"]
