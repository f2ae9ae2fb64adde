"""FakeClient: the client interface (nodeagent.client.ClientProtocol) over the apiserver's own
registry and strategies on an in-memory store, for unit tests of the components.

There is one copy of the object rules (ARCHITECTURE.md practice 16): what a component sees here is
what the apiserver does (defaults, validation, generation, status subresources, graceful deletion,
finalizers and propagation policies, pods/binding, patches, selectors, resourceVersions, watch
replay and 410s), because it is the same code, nodeagent.api.registry over nodeagent.api.
memory_store.MemoryStore. Only the HTTP layer is left out; its request checks that matter to a
client (kind and namespace of the body, patch and delete options) are repeated in front.

It lives in tests/helpers because it wires the apiserver to the client's interface: nodeagent.client
may not import nodeagent.api (.importlinter), and no component may use a fake. Namespaces are
created on first use (upstream's NamespaceAutoProvision admission plugin), so set-up need not
create them.

Test conveniences: every call is appended to `actions`; `fail_next(verb, plural, error)` makes the
next such call fail; `seed(kind, obj)` stores an object with its status as given (defaults, no
validation); `objects(kind)`, `compact()` and `close_watches()`.
"""

from __future__ import annotations

import builtins
import json
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from nodeagent.api import errors as api_errors
from nodeagent.api.admission import NamespaceAutoProvision
from nodeagent.api.defaultingressclass import default_ingress_class
from nodeagent.api.memory_store import MemoryStore
from nodeagent.api.registry import DeleteOptions, ListOptions, Registry, WatchSession, resource_key
from nodeagent.api.registry.options import apply_patch, random_suffix
from nodeagent.api.store import KeyExists
from nodeagent.api.wire import check_kind
from nodeagent.client.errors import AlreadyExists, ApiError, BadRequest, error_from_status, status_body
from nodeagent.client.events import now_rfc3339
from nodeagent.client.rest import WatchEvent
from nodeagent.machinery.kinds import Kind
from nodeagent.machinery.selectors import SelectorError, parse_field_selector, parse_label_selector

Obj = dict[str, Any]
T = TypeVar("T")


@dataclass
class Action:
    verb: str
    kind: str  # plural
    namespace: str | None
    name: str | None
    body: Any = None
    subresource: str | None = None


def run_now(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the registry over a MemoryStore) to its end, from
    synchronous code such as seed() or objects()."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("the coroutine suspended: run it with await")


def _copy(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _selector(value: str | dict[str, str] | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return ",".join(f"{k}={v}" for k, v in value.items())


class FakeClient:
    def __init__(self, *, service_cidr: str = "10.96.0.0/12", node_port_range: str = "30000-32767") -> None:
        self.store = MemoryStore()
        self.registry = Registry(self.store, service_cidr=service_cidr, node_port_range=node_port_range)
        self.registry.admission.plugins.append(NamespaceAutoProvision(self.registry.ensure_namespace))
        self.registry.admission.plugins.append(default_ingress_class(self.registry))  # on in the apiserver too
        self.actions: list[Action] = []
        self._failures: builtins.list[tuple[str, str, ApiError]] = []
        self._sessions: set[WatchSession] = set()

    async def __aenter__(self) -> FakeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self.close_watches()

    # -- test helpers -------------------------------------------------------------------------

    def fail_next(self, verb: str, plural: str, error: ApiError | None = None) -> None:
        self._failures.append((verb, plural, error or ApiError(500, status_body(500, "InternalError", "injected"))))

    def objects(self, kind: Kind) -> builtins.list[Obj]:
        entries, _ = self.store.list_now(resource_key(kind), None)
        return [json.loads(e.raw) for e in entries]

    def compact(self) -> None:
        """Forget history: later watches from an older resourceVersion get 410 Expired."""
        run_now(self.store.compact(self.store.revision))

    def close_watches(self) -> None:
        """End every open watch stream, as a server restart or timeout would."""
        for s in list(self._sessions):
            s.close()

    def seed(self, kind: Kind, obj: Obj) -> Obj:
        """Store an object as if another client had written it long ago: metadata filled in (name
        from generateName, uid, creationTimestamp, resourceVersion) and the kind's defaults, but
        its status kept and nothing validated."""
        obj = _copy(obj)
        md = obj.setdefault("metadata", {})
        if not md.get("name"):
            if not md.get("generateName"):
                raise ApiError(422, status_body(422, "Invalid", "name or generateName is required"))
            md["name"] = md["generateName"] + random_suffix()
        ns = self._ns(kind, obj, None) or ""
        if ns:
            md["namespace"] = ns  # not created: a component may have to create it
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        md.setdefault("uid", str(uuid.uuid4()))
        md.setdefault("creationTimestamp", now_rfc3339())
        strategy = self.registry.strategy(kind)
        strategy.default(obj)  # the apiserver defaults whatever it stores
        if strategy.generation:
            md.setdefault("generation", 1)
        try:
            e = run_now(self.store.create(resource_key(kind), ns, md["name"], obj))
        except KeyExists:
            raise AlreadyExists(409, status_body(409, "AlreadyExists", f'{kind.plural} "{md["name"]}" already exists',
                                                 {"name": md["name"], "kind": kind.plural})) from None
        run_now(strategy.restore([e.obj]))  # e.g. a Service's ClusterIP is held from now on
        return _copy(e.obj)

    # -- plumbing -----------------------------------------------------------------------------

    def _record(self, verb: str, kind: Kind, ns: str | None, name: str | None, body: Any = None,
                sub: str | None = None) -> None:
        self.actions.append(Action(verb, kind.plural, ns, name, _copy(body), sub))
        for i, (v, p, err) in enumerate(self._failures):
            if v == verb and p == kind.plural:
                del self._failures[i]
                raise err

    @staticmethod
    def _ns(kind: Kind, obj: Obj | None, namespace: str | None) -> str | None:
        if not kind.namespaced:
            return None
        return namespace or ((obj or {}).get("metadata") or {}).get("namespace") or "default"

    @staticmethod
    async def _call(coro: Coroutine[Any, Any, T], what: str) -> T:
        """The registry's answer, its errors as the client's (what the HTTP layer does)."""
        try:
            return await coro
        except api_errors.ApiError as e:
            raise error_from_status(e.code, e.status(), what=what) from None
        except api_errors.MALFORMED as e:
            raise BadRequest(400, status_body(400, "BadRequest", f"the object is malformed: {type(e).__name__}: "
                                                                 f"{e}"), what=what) from None

    @staticmethod
    def _bad_request(message: str) -> BadRequest:
        return BadRequest(400, status_body(400, "BadRequest", message))

    def _body(self, kind: Kind, obj: Obj, ns: str | None) -> Obj:
        """What the REST client sends and the server's request checks (wire.read_object, verbs)."""
        body = {"apiVersion": kind.api_version, "kind": kind.kind, **_copy(obj)}
        try:
            check_kind(body, kind)
        except api_errors.ApiError as e:
            raise error_from_status(e.code, e.status()) from None
        body_ns = (body.get("metadata") or {}).get("namespace") if isinstance(body.get("metadata"), dict) else None
        if kind.namespaced and ns and body_ns and body_ns != ns:
            raise self._bad_request("the namespace of the provided object does not match the namespace sent on the "
                                    "request")
        return body

    def _list_options(self, kind: Kind, label_selector: Any, field_selector: str | None) -> ListOptions:
        try:
            return ListOptions(label_selector=parse_label_selector(_selector(label_selector)),
                               field_selector=parse_field_selector(field_selector, resource_key(kind)))
        except SelectorError as e:
            raise self._bad_request(str(e)) from None

    # -- the client interface -----------------------------------------------------------------

    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> Obj:
        ns = self._ns(kind, None, namespace)
        self._record("get", kind, ns, name)
        e = await self._call(self.registry.get(kind, ns, name), f"GET {kind.path(name, ns)}")
        return json.loads(e.raw)  # type: ignore[no-any-return]

    async def list(self, kind: Kind, namespace: str | None = None, label_selector: Any = None,
                   field_selector: str | None = None, limit: int | None = None, continue_: str | None = None,
                   resource_version: str | None = None, resource_version_match: str | None = None) -> Obj:
        self._record("list", kind, namespace, None)
        opts = self._list_options(kind, label_selector, field_selector)
        opts.limit, opts.continue_token = limit or 0, continue_
        opts.resource_version, opts.resource_version_match = resource_version, resource_version_match
        ns = namespace if kind.namespaced else None
        res = await self._call(self.registry.list(kind, ns, opts), f"GET {kind.base_path(ns)}")
        meta: Obj = {"resourceVersion": str(res.rev)}
        if res.continue_token:
            meta["continue"] = res.continue_token
            meta["remainingItemCount"] = res.remaining
        return {"apiVersion": kind.api_version, "kind": kind.list_kind, "metadata": meta,
                "items": [json.loads(e.raw) for e in res.items]}

    async def create(self, kind: Kind, obj: Obj, namespace: str | None = None) -> Obj:
        ns = self._ns(kind, obj, namespace)
        self._record("create", kind, ns, (obj.get("metadata") or {}).get("name"), obj)
        body = self._body(kind, obj, ns)
        return _copy(await self._call(self.registry.create(kind, ns, body), f"POST {kind.base_path(ns)}"))  # type: ignore[no-any-return]

    async def update(self, kind: Kind, obj: Obj, namespace: str | None = None) -> Obj:
        return await self._update(kind, obj, namespace, None)

    async def update_status(self, kind: Kind, obj: Obj, namespace: str | None = None) -> Obj:
        return await self._update(kind, obj, namespace, "status")

    async def _update(self, kind: Kind, obj: Obj, namespace: str | None, sub: str | None) -> Obj:
        ns = self._ns(kind, obj, namespace)
        name = obj["metadata"]["name"]
        self._record("update", kind, ns, name, obj, sub)
        body = self._body(kind, obj, ns)
        out, _ = await self._call(self.registry.update(kind, ns, name, body, subresource=sub),
                                  f"PUT {kind.path(name, ns, sub)}")
        return _copy(out)  # type: ignore[no-any-return]

    async def patch(self, kind: Kind, name: str, patch: Any, namespace: str | None = None,
                    patch_type: str = "merge", subresource: str | None = None) -> Obj:
        ns = self._ns(kind, None, namespace)
        self._record("patch", kind, ns, name, patch, subresource)
        if patch_type == "apply":
            raise self._bad_request("PATCH with application/apply-patch+yaml needs a fieldManager query parameter "
                                    "(server-side apply)")
        if patch_type != "json" and not isinstance(patch, dict):
            raise self._bad_request("a merge patch must be a JSON object")
        what = f"PATCH {kind.path(name, ns, subresource)}"
        if subresource == "scale":
            return await self._call(self.registry.update_scale(
                kind, ns, name, lambda scale: apply_patch(patch_type, scale, _copy(patch))), what)
        return _copy(await self._call(self.registry.patch(kind, ns, name, patch_type, _copy(patch),  # type: ignore[no-any-return]
                                                          subresource=subresource), what))

    async def delete(self, kind: Kind, name: str, namespace: str | None = None,
                     grace_period_seconds: int | None = None, propagation_policy: str | None = None,
                     preconditions: dict[str, str] | None = None) -> Obj:
        ns = self._ns(kind, None, namespace)
        self._record("delete", kind, ns, name, {"gracePeriodSeconds": grace_period_seconds,
                                                 "propagationPolicy": propagation_policy})
        if propagation_policy not in (None, "Orphan", "Background", "Foreground"):
            raise self._bad_request(f"invalid propagationPolicy {propagation_policy!r}: want Orphan, Background or "
                                    "Foreground")
        pre = preconditions or {}
        opts = DeleteOptions(grace_period_seconds, propagation_policy, pre.get("uid"), pre.get("resourceVersion"))
        obj, _ = await self._call(self.registry.delete(kind, ns, name, opts), f"DELETE {kind.path(name, ns)}")
        return _copy(obj)  # type: ignore[no-any-return]

    async def create_subresource(self, kind: Kind, name: str, subresource: str, body: Obj,
                                 namespace: str | None = None) -> Obj:
        ns = self._ns(kind, None, namespace) or ""
        self._record("create", kind, ns, name, body, subresource)
        what = f"POST {kind.path(name, ns, subresource)}"
        if subresource not in kind.subresources:
            raise error_from_status(404, status_body(404, "NotFound", "the server could not find the requested "
                                                                      f"resource ({kind.plural}/{subresource})"), what)
        if subresource == "binding":
            return await self._call(self.registry.bind(ns, name, _copy(body)), what)
        if subresource == "eviction":
            return await self._call(self.registry.evict(ns, name), what)
        raise ApiError(405, status_body(405, "MethodNotAllowed", f"POST {kind.plural}/{subresource} needs a kubelet"),
                       what=what)

    async def watch(self, kind: Kind, namespace: str | None = None, resource_version: str | None = None,
                    label_selector: Any = None, field_selector: str | None = None,
                    timeout_seconds: int | None = None, allow_bookmarks: bool = True) -> AsyncIterator[WatchEvent]:
        self._record("watch", kind, namespace, None)
        opts = self._list_options(kind, label_selector, field_selector)
        opts.resource_version = resource_version
        ns = namespace if kind.namespaced else None
        session = await self._call(self.registry.watch(kind, ns, opts, bookmarks=allow_bookmarks,
                                                       timeout=timeout_seconds), f"WATCH {kind.base_path(ns)}")
        self._sessions.add(session)
        try:
            while True:
                batch = await session.next_batch()
                if batch is None:
                    return
                for ev in batch:
                    yield WatchEvent(ev.type, json.loads(ev.raw) if ev.raw is not None else _copy(ev.obj))
        finally:
            session.close()
            self._sessions.discard(session)


__all__ = ["Action", "FakeClient", "run_now"]
