"""The REST verbs on resources (get, list, watch, create, update, patch, delete, deletecollection)
and their subresources, mapped onto the Registry, after the request was authenticated and
authorized (server.py). Watches are long-lived chunked responses of newline-separated JSON events,
as upstream's JSON watch encoding; each watch reads its own queue fed by the store, so a slow
watcher never blocks a writer.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING, Any

from aiohttp import web

from nodeagent.api import errors, tables, wire
from nodeagent.api.admission import Attributes
from nodeagent.api.auth.decision import Decision
from nodeagent.api.errors import ApiError
from nodeagent.api.registry import WatchEvent
from nodeagent.api.registry.options import apply_patch
from nodeagent.api.requestinfo import RequestInfo
from nodeagent.api.tokens import UserInfo
from nodeagent.machinery import kinds
from nodeagent.machinery.kinds import Kind

if TYPE_CHECKING:
    from nodeagent.api.server import ApiServer

log = logging.getLogger(__name__)


class Verbs:
    """`handler(verb)` is the coroutine for one verb: (request, info, kind, user, decision) -> response."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.cfg = server.cfg
        self.registry = server.registry
        self.metrics = server.metrics

    def handler(self, verb: str) -> Any:
        return getattr(self, f"_verb_{verb}", None)

    def respond_object(self, request: web.Request, kind: Kind, obj: dict[str, Any], status: int = 200,
                        raw: bytes | None = None) -> web.Response:
        accept = request.headers.get("Accept", "")
        if tables.wants_table(accept):
            t = tables.table(self.registry.strategy(kind).printer, [obj], str((obj.get("metadata") or {}).get("resourceVersion", "")),
                             request.query.get("includeObject", "PartialObjectMetadata"))
            return wire.json_response(t, status)
        if tables.wants_partial_metadata(accept):
            return wire.json_response({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                   "metadata": obj.get("metadata") or {}}, status)
        return wire.raw_response(raw, status) if raw is not None else wire.json_response(obj, status)

    async def _verb_get(self, request: web.Request, info: RequestInfo, kind: Kind, user: UserInfo,
                        decision: Decision) -> web.StreamResponse:
        assert info.name is not None
        if info.subresource == "scale":
            return wire.json_response(await self.registry.get_scale(kind, info.namespace, info.name))
        if info.subresource in ("log", "exec", "attach", "portforward", "proxy"):
            return await self.server.proxy_to_kubelet(request, info, kind, user)
        e = await self.registry.get(kind, info.namespace, info.name)
        return self.respond_object(request, kind, e.obj, raw=e.raw)

    async def _verb_list(self, request: web.Request, info: RequestInfo, kind: Kind, user: UserInfo,
                         decision: Decision) -> web.StreamResponse:
        opts = wire.list_options(request, kind)
        res = await self.registry.list(kind, info.namespace, opts)
        accept = request.headers.get("Accept", "")
        if tables.wants_table(accept):
            t = tables.table(self.registry.strategy(kind).printer, [e.obj for e in res.items], str(res.rev),
                             request.query.get("includeObject", "PartialObjectMetadata"), res.continue_token,
                             res.remaining)
            return wire.json_response(t)
        meta: dict[str, Any] = {"resourceVersion": str(res.rev)}
        if res.continue_token:
            meta["continue"] = res.continue_token
            meta["remainingItemCount"] = res.remaining
        partial = tables.wants_partial_metadata(accept)
        if partial:
            return wire.json_response({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                                   "metadata": meta,
                                   "items": [{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                              "metadata": e.obj.get("metadata") or {}} for e in res.items]})
        head = wire.dumps({"kind": kind.list_kind, "apiVersion": kind.api_version, "metadata": meta})
        # Pre-encoded items: no re-serialisation of 10k objects (issue 2: list of 10k pods <= 1 s).
        body = head[:-1] + b',"items":[' + b",".join(e.raw for e in res.items) + b"]}"
        return wire.raw_response(body)

    async def _verb_watch(self, request: web.Request, info: RequestInfo, kind: Kind, user: UserInfo,
                          decision: Decision) -> web.StreamResponse:
        opts = wire.list_options(request, kind)
        q = request.query
        timeout: float | None
        try:
            timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else random.uniform(1800, 3600)
        except ValueError:
            raise errors.bad_request(f"invalid timeoutSeconds {q.get('timeoutSeconds')!r}") from None
        send_initial = wire.bool_param(q.get("sendInitialEvents")) if "sendInitialEvents" in q else None
        try:
            events = await self.registry.watch(kind, info.namespace, opts, name=info.name,
                                               send_initial=send_initial,
                                               bookmarks=wire.bool_param(q.get("allowWatchBookmarks")),
                                               bookmark_interval=self.cfg.bookmark_interval, timeout=timeout)
        except ApiError as e:
            if e.code != 410:
                raise
            # Upstream answers an expired watch with 200 and one ERROR event carrying the 410 Status.
            resp = web.StreamResponse(status=200, headers={"Content-Type": wire.JSON})
            await resp.prepare(request)
            await resp.write(wire.dumps({"type": "ERROR", "object": e.status()}) + b"\n")
            await resp.write_eof()
            return resp
        accept = request.headers.get("Accept", "")
        as_table = tables.wants_table(accept)
        include = q.get("includeObject", "PartialObjectMetadata")
        resp = web.StreamResponse(status=200, headers={"Content-Type": wire.JSON, "Cache-Control": "no-cache"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        counter = self.metrics.watch_events.labels(kind.group, kind.version, kind.kind)
        gauge = self.metrics.watchers.labels(kind.group, kind.version, kind.kind)
        gauge.inc()
        transport = request.transport
        if not as_table and transport is not None:
            limit = self.cfg.watch_buffer_bytes

            def sink(batch: list[WatchEvent]) -> bool:
                # Write straight into the socket's buffer, framed as an HTTP/1.1 chunk: one call per
                # event per watcher, no task switch (issue 2: fan-out must not block the writer).
                if transport.is_closing():
                    return False
                if not batch:
                    return True
                if transport.get_write_buffer_size() > limit:
                    log.warning("msg=\"closing slow watcher\" resource=%s buffered=%d", info.resource,
                                transport.get_write_buffer_size())
                    return False
                data = b"".join(map(wire.event_line, batch))
                transport.write(b"%x\r\n" % len(data) + data + b"\r\n")
                counter.inc(len(batch))
                return True

            async def stream() -> None:
                events.attach(sink)
                await events.wait_finished()
        else:
            async def stream() -> None:
                first_table = True
                while True:
                    batch = await events.next_batch()
                    if batch is None:
                        return
                    lines = []
                    for ev in batch:
                        if as_table and ev.type != "BOOKMARK":
                            rv = str((ev.obj.get("metadata") or {}).get("resourceVersion"))
                            t = tables.table(self.registry.strategy(kind).printer, [ev.obj], rv, include, with_columns=first_table)
                            first_table = False
                            lines.append(wire.dumps({"type": ev.type, "object": t}) + b"\n")
                        else:
                            lines.append(wire.event_line(ev))
                    await resp.write(b"".join(lines))
                    counter.inc(len(batch))

        try:
            await stream()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            gauge.dec()
            events.close()
        try:
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return resp

    async def _verb_create(self, request: web.Request, info: RequestInfo, kind: Kind, user: UserInfo,
                           decision: Decision) -> web.StreamResponse:
        dry = wire.dry_run(request)
        if info.subresource in ("exec", "attach", "portforward"):
            return await self.server.proxy_to_kubelet(request, info, kind, user)
        if info.subresource == "token" and kind is kinds.SERVICEACCOUNTS:
            return await self.server.token_request(request, info, user)
        if (info.subresource or self.registry.strategy(kind).posts_as_subresource) == "binding":
            body = await wire.read_body(request, self.cfg.max_body_bytes)
            if not isinstance(body, dict):
                raise errors.bad_request("the body must be a Binding object")
            name = info.name or ((body.get("metadata") or {}).get("name") if isinstance(body.get("metadata"), dict)
                                 else None)
            if not name or not info.namespace:
                raise errors.bad_request("a Binding needs the pod's namespace and name")
            return wire.json_response(await self.registry.bind(info.namespace, name, body), 201)
        if info.subresource == "eviction":
            assert info.name is not None
            body = await wire.read_body(request, self.cfg.max_body_bytes) if request.can_read_body else {}
            await self.server.admission.validate(Attributes(
                "CREATE", kind, info.namespace or "", info.name, "eviction", body if isinstance(body, dict) else {},
                None, user, dry))
            return wire.json_response(await self.registry.evict(info.namespace, info.name, dry_run=dry), 201)
        if info.name:
            raise ApiError(405, "MethodNotAllowed", "POST is for collections: drop the name from the URL")
        body = await wire.read_object(request, kind, self.cfg.max_body_bytes)
        ns = info.namespace
        body_ns = (body.get("metadata") or {}).get("namespace")
        if kind.namespaced and ns and body_ns and body_ns != ns:
            raise errors.bad_request("the namespace of the provided object does not match the namespace sent on "
                                     "the request")
        obj = await self._malformed_is_bad_request(self.registry.create(kind, ns, body, dry_run=dry, user=user))
        return self.respond_object(request, kind, obj, 201)

    async def _malformed_is_bad_request(self, coro: Any) -> Any:
        """Run a write; malformed shapes that slipped past validation are the client's 400, not our 500."""
        try:
            return await coro
        except errors.MALFORMED as e:
            log.warning("msg=\"rejected malformed object\" error=%r", e)
            log.debug("msg=\"malformed object traceback\"", exc_info=True)
            raise errors.bad_request(f"the object is malformed: {type(e).__name__}: {e}") from None

    async def _verb_update(self, request: web.Request, info: RequestInfo, kind: Kind, user: UserInfo,
                           decision: Decision) -> web.StreamResponse:
        assert info.name is not None
        dry = wire.dry_run(request)
        if info.subresource == "scale":
            body = await wire.read_body(request, self.cfg.max_body_bytes)
            if not isinstance(body, dict):
                raise errors.bad_request("the body must be an autoscaling/v1 Scale")
            rv = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body.get("metadata"), dict) \
                else None
            return wire.json_response(await self._malformed_is_bad_request(self.registry.update_scale(
                kind, info.namespace, info.name, lambda _s: body, dry_run=dry,
                precondition_rv=str(rv) if rv else None, user=user)))
        if info.subresource not in (None, "status"):
            raise ApiError(405, "MethodNotAllowed", f"PUT is not supported on {info.resource}/{info.subresource}")
        body = await wire.read_object(request, kind, self.cfg.max_body_bytes)
        obj, created = await self._malformed_is_bad_request(self.registry.update(
            kind, info.namespace, info.name, body, subresource=info.subresource, dry_run=dry, user=user))
        return self.respond_object(request, kind, obj, 201 if created else 200)

    async def _verb_patch(self, request: web.Request, info: RequestInfo, kind: Kind, user: UserInfo,
                          decision: Decision) -> web.StreamResponse:
        assert info.name is not None
        dry = wire.dry_run(request)
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        patch_type = {"application/merge-patch+json": "merge",
                      "application/strategic-merge-patch+json": "strategic",
                      "application/json-patch+json": "json",
                      "application/apply-patch+yaml": "apply"}.get(ctype)
        if patch_type is None:
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media types include: "
                           f"application/json-patch+json, application/merge-patch+json, "
                           f"application/strategic-merge-patch+json, application/apply-patch+yaml "
                           f"(got {ctype or 'none'})")
        if patch_type == "apply":
            manager = request.query.get("fieldManager")
            if not manager:
                raise errors.bad_request("PATCH with application/apply-patch+yaml needs a fieldManager query "
                                         "parameter (server-side apply)")
            if info.subresource:
                raise ApiError(405, "MethodNotAllowed", f"server-side apply to {info.resource}/{info.subresource} "
                                                        "is not supported")
            body = await wire.read_object(request, kind, self.cfg.max_body_bytes)
            obj, created = await self._malformed_is_bad_request(self.registry.server_side_apply(
                kind, info.namespace, info.name, body, manager, dry_run=dry, user=user))
            return self.respond_object(request, kind, obj, 201 if created else 200)
        body = await wire.read_body(request, self.cfg.max_body_bytes)
        if patch_type != "json" and not isinstance(body, dict):
            raise errors.bad_request("a merge patch must be a JSON object")
        if info.subresource == "scale":
            return wire.json_response(await self._malformed_is_bad_request(self.registry.update_scale(
                kind, info.namespace, info.name, lambda scale: apply_patch(patch_type, scale, body), dry_run=dry,
                user=user)))
        if info.subresource not in (None, "status"):
            raise ApiError(405, "MethodNotAllowed", f"PATCH is not supported on {info.resource}/{info.subresource}")
        obj = await self._malformed_is_bad_request(self.registry.patch(
            kind, info.namespace, info.name, patch_type, body, subresource=info.subresource, dry_run=dry, user=user))
        return self.respond_object(request, kind, obj)

    async def _verb_delete(self, request: web.Request, info: RequestInfo, kind: Kind, user: UserInfo,
                           decision: Decision) -> web.StreamResponse:
        assert info.name is not None
        if info.subresource:
            raise ApiError(405, "MethodNotAllowed", f"DELETE is not supported on {info.resource}/{info.subresource}")
        opts = await wire.delete_options(request)
        obj, _gone = await self.registry.delete(kind, info.namespace, info.name, opts, user=user)
        return self.respond_object(request, kind, obj)

    async def _verb_deletecollection(self, request: web.Request, info: RequestInfo, kind: Kind, user: UserInfo,
                                     decision: Decision) -> web.StreamResponse:
        opts = await wire.delete_options(request)
        objs = await self.registry.delete_collection(kind, info.namespace, wire.list_options(request, kind), opts,
                                                     user=user)
        return wire.json_response({"kind": kind.list_kind, "apiVersion": kind.api_version,
                                   "metadata": {"resourceVersion": str(self.registry.store.revision)},
                                   "items": objs})
