"""The HTTP side of the apiserver: TLS, authentication, authorization, content negotiation, and the
REST verbs mapped onto the Registry.

One asyncio process (aiohttp). Watches are long-lived chunked responses of newline-separated JSON
events, as upstream's JSON watch encoding; each watch reads its own queue fed by the store, so a
slow watcher never blocks a writer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from nodeagent.api import authz, discovery, errors, tables
from nodeagent.api.errors import ApiError
from nodeagent.api.metrics import Metrics
from nodeagent.api.pki import ensure_pki
from nodeagent.api.registry import DeleteOptions, ListOptions, Registry, WatchEvent, resource_key
from nodeagent.api.requestinfo import RequestInfo, parse
from nodeagent.api.sqlite_store import SqliteStore
from nodeagent.api.tokens import APISERVER_USER, TokenAuthenticator, UserInfo, ensure_admin_tokens
from nodeagent.machinery import kinds
from nodeagent.machinery.kinds import Kind
from nodeagent.machinery.selectors import SelectorError, parse_field_selector, parse_label_selector

log = logging.getLogger(__name__)

VERSION_INFO = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.0-nodeagent", "gitCommit": "", "gitTreeState": "clean",
    "buildDate": "2026-11-01T00:00:00Z", "goVersion": "go1.23", "compiler": "gc", "platform": "linux/amd64",
}
_PUBLIC_PATHS = {"/healthz", "/livez", "/readyz", "/version", "/version/"}
_JSON = "application/json"


@dataclass
class ServerConfig:
    data_dir: Path
    bind_address: str = "127.0.0.1"
    port: int = 6443
    insecure_port: int = 0
    advertise_address: str | None = None
    tls_sans: list[str] = field(default_factory=list)
    service_cluster_ip_range: str = "10.96.0.0/12"
    service_node_port_range: str = "30000-32767"
    storage: str = "sqlite"
    storage_sync: str = "normal"
    compaction_window: int = 10000
    compaction_interval: float = 60.0
    bookmark_interval: float = 10.0
    max_body_bytes: int = 3 * 1024 * 1024  # upstream's 3 MiB request body limit
    watch_buffer_bytes: int = 64 * 1024 * 1024  # a watcher this far behind is cut off and re-watches
    event_ttl: float = 3600.0
    # DefaultTolerationSeconds admission (upstream --default-*-toleration-seconds), by taint key.
    default_toleration_seconds: dict[str, int] = field(default_factory=dict)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _event_line(ev: WatchEvent) -> bytes:
    """One JSON watch line: the line encoded once for all watchers when there is one, else the
    stored bytes of the object spliced in, else the object encoded here."""
    if ev.line is not None:
        return ev.line
    if ev.raw is not None:
        return b'{"type":"' + ev.type.encode() + b'","object":' + ev.raw + b"}\n"
    return _dumps({"type": ev.type, "object": ev.obj}) + b"\n"


def _json_response(obj: Any, status: int = 200, content_type: str = _JSON) -> web.Response:
    return web.Response(body=_dumps(obj), status=status, headers={"Content-Type": content_type})


def _raw_response(raw: bytes, status: int = 200) -> web.Response:
    return web.Response(body=raw, status=status, headers={"Content-Type": _JSON})


def _error_response(err: ApiError) -> web.Response:
    resp = _json_response(err.status(), err.code)
    if err.details.get("retryAfterSeconds"):
        resp.headers["Retry-After"] = str(err.details["retryAfterSeconds"])
    return resp


def _bool_param(v: str | None) -> bool:
    return v is not None and v.lower() in ("1", "true", "yes", "")


class ApiServer:
    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.store = SqliteStore(cfg.data_dir / "state.db", compaction_window=cfg.compaction_window,
                                 compact_interval=cfg.compaction_interval, sync=cfg.storage_sync,
                                 observe=self.metrics.observe_storage)
        self.registry = Registry(self.store, service_cidr=cfg.service_cluster_ip_range,
                                 node_port_range=cfg.service_node_port_range)
        self.registry.event_ttl = cfg.event_ttl
        self.registry.default_toleration_seconds.update(cfg.default_toleration_seconds)
        self.auth: TokenAuthenticator | None = None
        self._runners: list[web.AppRunner] = []
        self.ready = False
        self._kubelet_ssl: ssl.SSLContext | None = None

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        sans = [*cfg.tls_sans, self.registry.cluster_ips.first]
        if cfg.advertise_address:
            sans.append(cfg.advertise_address)
        if cfg.bind_address not in ("0.0.0.0", "::", ""):
            sans.append(cfg.bind_address)
        pki = await asyncio.to_thread(ensure_pki, cfg.data_dir, sans)
        await asyncio.to_thread(ensure_admin_tokens, cfg.data_dir)
        self.auth = TokenAuthenticator(cfg.data_dir)
        if cfg.storage != "sqlite":
            raise ValueError(f"unsupported --storage {cfg.storage!r}: only sqlite is built in")
        await self.store.start()
        advertise = (cfg.advertise_address, cfg.port) if cfg.advertise_address else None
        await self.registry.start(advertise=advertise, secure_port=cfg.port)

        app = web.Application(client_max_size=cfg.max_body_bytes, handler_args={"max_field_size": 65536})
        app.router.add_route("*", "/{tail:.*}", self.handle)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(pki.server_crt, pki.server_key)
        ctx.set_alpn_protocols(["http/1.1"])
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        self._runners.append(runner)
        await web.TCPSite(runner, cfg.bind_address, cfg.port, ssl_context=ctx, backlog=1024,
                          reuse_address=True).start()
        if cfg.insecure_port:
            # Plain HTTP only on loopback (issue 2: "only when asked for and only on loopback").
            await web.TCPSite(runner, "127.0.0.1", cfg.insecure_port, reuse_address=True).start()
        self.ready = True
        log.info("msg=\"apiserver serving\" address=%s port=%d insecure_port=%d revision=%d",
                 cfg.bind_address, cfg.port, cfg.insecure_port, self.store.revision)

    async def stop(self) -> None:
        self.ready = False
        await self.registry.close()
        await self.store.close()  # ends every watch stream first, so the runner can drain
        for r in self._runners:
            await r.cleanup()
        self._runners.clear()

    # --- entry point -----------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        t0 = time.perf_counter()
        info = parse(request.method, request.path, _bool_param(request.query.get("watch")))
        code = 500
        try:
            resp = await self._handle(request, info)
            code = resp.status
            return resp
        except ApiError as e:
            code = e.code
            return _error_response(e)
        except web.HTTPException:
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            code = 499
            raise
        except Exception as e:
            log.exception("msg=\"internal error\" method=%s path=%s", request.method, request.path)
            code = 500
            return _error_response(ApiError(500, "InternalError", f"an internal error occurred: {type(e).__name__}"))
        finally:
            if info.is_resource:
                scope = "resource" if info.name else ("namespace" if info.namespace else "cluster")
                labels = (info.verb.upper() if info.verb != "watch" else "WATCH", info.group, info.version,
                          info.resource, info.subresource or "", scope, "apiserver")
                self.metrics.requests.labels(*labels, str(code)).inc()
                if info.verb != "watch":
                    self.metrics.latency.labels(*labels).observe(time.perf_counter() - t0)

    async def _handle(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        path = request.path
        if path in _PUBLIC_PATHS or path.startswith(("/healthz/", "/livez/", "/readyz/")):
            return self._health(path)
        user = self._authenticate(request)
        if path == "/metrics":
            if not user.is_admin:
                raise ApiError(403, "Forbidden", f'forbidden: User "{user.name}" cannot get path "/metrics"')
            return web.Response(body=self.metrics.render(self._refresh_gauges),
                                headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
        if path.startswith("/openapi/"):
            return self._openapi(path)
        if not info.is_resource:
            return self._discovery(request, path)
        if info.qualified_resource == "tokenreviews.authentication.k8s.io":
            return await self._token_review(request, user, info)
        if info.qualified_resource in ("selfsubjectreviews.authentication.k8s.io",
                                       "selfsubjectaccessreviews.authorization.k8s.io"):
            return await self._self_review(request, user, info)
        kind = kinds.lookup(info.group, info.resource)
        if kind is None or info.version != kind.version:
            raise ApiError(404, "NotFound", "the server could not find the requested resource",
                           group=info.group, kind=info.resource)
        if info.subresource and info.subresource not in kind.subresources:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource "
                                            f"({info.resource}/{info.subresource})")
        if kind.namespaced is False and info.namespace:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        decision = authz.authorize(user, info.verb, info.qualified_resource, info.subresource, info.namespace,
                                   info.name)
        if not decision.allowed:
            raise errors.forbidden(user.name, info.verb, info.resource, info.group, info.name, info.namespace,
                                   decision.reason)
        if info.verb in ("update", "patch") and not info.name:
            raise ApiError(405, "MethodNotAllowed", f"{request.method} needs an object name in the URL: "
                                                    f"{info.path.rstrip('/')}/NAME")
        handler = getattr(self, f"_verb_{info.verb}", None)
        if handler is None:
            raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested "
                                                    f"resource ({request.method} {info.resource})")
        resp: web.StreamResponse = await handler(request, info, kind, user, decision)
        return resp

    def _authenticate(self, request: web.Request) -> UserInfo:
        assert self.auth is not None
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            user = self.auth.authenticate(token.strip())
            if user is not None:
                return user
        raise ApiError(401, "Unauthorized", "Unauthorized")

    def _health(self, path: str) -> web.Response:
        if path.startswith("/version"):
            return _json_response(VERSION_INFO)
        if path.startswith("/readyz") and not (self.ready and self.store.failed is None):
            return web.Response(status=500, text="[-]storage failed\nreadyz check failed")
        return web.Response(text="ok", headers={"Content-Type": "text/plain; charset=utf-8"})

    def _refresh_gauges(self) -> None:
        for r in self.store.resources():
            self.metrics.storage_objects.labels(r).set(self.store.count(r))
        self.metrics.storage_revision.set(self.store.revision)
        self.metrics.storage_compacted.set(self.store.compacted_revision)

    # --- discovery -------------------------------------------------------------------------
    def _openapi(self, path: str) -> web.Response:
        from nodeagent.api import openapi

        if path.rstrip("/") == "/openapi/v3":
            return _json_response(openapi.index())
        if path.startswith("/openapi/v3/"):
            doc = openapi.document(path[len("/openapi/v3/"):])
            if doc is not None:
                return _json_response(doc)
        raise ApiError(404, "NotFound", f'the server could not find the requested resource ("{path}"); only '
                                        "OpenAPI v3 documents listing operations are served")

    def _discovery(self, request: web.Request, path: str) -> web.Response:
        accept = request.headers.get("Accept", "")
        p = path.rstrip("/")
        addr = f"{self.cfg.advertise_address or self.cfg.bind_address}:{self.cfg.port}"
        if p in ("/api", "/apis") and discovery.wants_aggregated(accept):
            return _json_response(discovery.aggregated(p == "/api"), content_type=discovery.AGGREGATED_CT)
        if p == "/api":
            return _json_response(discovery.api_versions(addr))
        if p == "/apis":
            return _json_response(discovery.api_group_list())
        parts = [x for x in p.split("/") if x]
        doc: dict[str, Any] | None = None
        if len(parts) == 2 and parts[0] == "api":
            doc = discovery.resource_list("", parts[1])
        elif len(parts) == 2 and parts[0] == "apis":
            doc = discovery.api_group(parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            doc = discovery.resource_list(parts[1], parts[2])
        if doc is None:
            raise ApiError(404, "NotFound", f'the server could not find the requested resource ("{path}")')
        return _json_response(doc)

    # --- request bodies --------------------------------------------------------------------
    async def _read_body(self, request: web.Request) -> Any:
        limit = self.cfg.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {limit}")
        data = bytearray()
        async for chunk in request.content.iter_chunked(65536):
            data += chunk
            if len(data) > limit:
                raise ApiError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {limit}")
        ctype = request.headers.get("Content-Type", _JSON).split(";")[0].strip().lower()
        if not data:
            raise errors.bad_request("the request body is empty: send a JSON or YAML object")
        if ctype == "application/vnd.kubernetes.protobuf":
            from nodeagent.api.protobuf import ProtobufError, decode

            try:
                return decode(bytes(data))
            except (ProtobufError, UnicodeDecodeError) as e:
                raise ApiError(415, "UnsupportedMediaType", f"cannot decode the protobuf body: {e}; send it as "
                                                            "application/json or application/yaml instead "
                                                            "(e.g. kubectl create -f FILE)") from None
        if "protobuf" in ctype:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                        f"accepted media types include: application/json, "
                                                        f"application/yaml (got {ctype})")
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise errors.bad_request("the request body is not UTF-8 text") from None
        if ctype.endswith("yaml"):
            try:
                return yaml.safe_load(text)
            except (yaml.YAMLError, RecursionError) as e:
                raise errors.bad_request(f"error converting YAML to JSON: {str(e).splitlines()[0]}") from None
        try:
            return json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            raise errors.bad_request(f"couldn't get version/kind; json parse error: {e}") from None

    async def _read_object(self, request: web.Request, kind: Kind) -> dict[str, Any]:
        body = await self._read_body(request)
        if not isinstance(body, dict):
            raise errors.bad_request(f"the body must be a JSON object describing a {kind.kind}, not "
                                     f"{type(body).__name__}")
        _check_kind(body, kind)
        for fld in ("metadata", "spec", "status"):
            if fld in body and body[fld] is not None and not isinstance(body[fld], dict):
                raise errors.bad_request(f"{kind.kind}.{fld}: expected an object, got {type(body[fld]).__name__}")
        return body

    # --- list options ----------------------------------------------------------------------
    def _list_options(self, request: web.Request, kind: Kind) -> ListOptions:
        q = request.query
        try:
            label_sel = parse_label_selector(q.get("labelSelector"))
            field_sel = parse_field_selector(q.get("fieldSelector"), resource_key(kind))
        except SelectorError as e:
            raise errors.bad_request(str(e)) from None
        try:
            limit = int(q.get("limit") or 0)
        except ValueError:
            raise errors.bad_request(f"invalid limit {q.get('limit')!r}: must be an integer") from None
        return ListOptions(label_selector=label_sel, field_selector=field_sel, limit=limit,
                           continue_token=q.get("continue") or None, resource_version=q.get("resourceVersion"),
                           resource_version_match=q.get("resourceVersionMatch") or None)

    def _dry_run(self, request: web.Request) -> bool:
        v = request.query.getall("dryRun", [])
        if any(x not in ("All",) for x in v):
            raise errors.bad_request(f"unsupported dryRun value {v}: only 'All' is supported")
        return bool(v)

    # --- verbs -----------------------------------------------------------------------------
    def _respond_object(self, request: web.Request, kind: Kind, obj: dict[str, Any], status: int = 200,
                        raw: bytes | None = None) -> web.Response:
        accept = request.headers.get("Accept", "")
        if tables.wants_table(accept):
            t = tables.table(kind, [obj], str((obj.get("metadata") or {}).get("resourceVersion", "")),
                             request.query.get("includeObject", "PartialObjectMetadata"))
            return _json_response(t, status)
        if tables.wants_partial_metadata(accept):
            return _json_response({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                   "metadata": obj.get("metadata") or {}}, status)
        return _raw_response(raw, status) if raw is not None else _json_response(obj, status)

    async def _verb_get(self, request: web.Request, info: RequestInfo, kind: Kind, user: UserInfo,
                        decision: authz.Decision) -> web.StreamResponse:
        assert info.name is not None
        if info.subresource == "scale":
            return _json_response(await self.registry.get_scale(kind, info.namespace, info.name))
        if info.subresource in ("log", "exec", "attach", "portforward", "proxy"):
            return await self._proxy_to_kubelet(request, info, kind, user)
        e = await self.registry.get(kind, info.namespace, info.name)
        if decision.object_rule and not authz.object_allowed(decision.object_rule, user, e.obj):
            raise errors.forbidden(user.name, info.verb, info.resource, info.group, info.name, info.namespace)
        return self._respond_object(request, kind, e.obj, raw=e.raw)

    async def _verb_list(self, request: web.Request, info: RequestInfo, kind: Kind, user: UserInfo,
                         decision: authz.Decision) -> web.StreamResponse:
        opts = self._list_options(request, kind)
        res = await self.registry.list(kind, info.namespace, opts)
        accept = request.headers.get("Accept", "")
        if tables.wants_table(accept):
            t = tables.table(kind, [e.obj for e in res.items], str(res.rev),
                             request.query.get("includeObject", "PartialObjectMetadata"), res.continue_token,
                             res.remaining)
            return _json_response(t)
        meta: dict[str, Any] = {"resourceVersion": str(res.rev)}
        if res.continue_token:
            meta["continue"] = res.continue_token
            meta["remainingItemCount"] = res.remaining
        partial = tables.wants_partial_metadata(accept)
        if partial:
            return _json_response({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                                   "metadata": meta,
                                   "items": [{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                              "metadata": e.obj.get("metadata") or {}} for e in res.items]})
        head = _dumps({"kind": kind.list_kind, "apiVersion": kind.api_version, "metadata": meta})
        # Pre-encoded items: no re-serialisation of 10k objects (issue 2: list of 10k pods <= 1 s).
        body = head[:-1] + b',"items":[' + b",".join(e.raw for e in res.items) + b"]}"
        return _raw_response(body)

    async def _verb_watch(self, request: web.Request, info: RequestInfo, kind: Kind, user: UserInfo,
                          decision: authz.Decision) -> web.StreamResponse:
        opts = self._list_options(request, kind)
        q = request.query
        timeout: float | None
        try:
            timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else random.uniform(1800, 3600)
        except ValueError:
            raise errors.bad_request(f"invalid timeoutSeconds {q.get('timeoutSeconds')!r}") from None
        send_initial = _bool_param(q.get("sendInitialEvents")) if "sendInitialEvents" in q else None
        try:
            events = await self.registry.watch(kind, info.namespace, opts, name=info.name,
                                               send_initial=send_initial,
                                               bookmarks=_bool_param(q.get("allowWatchBookmarks")),
                                               bookmark_interval=self.cfg.bookmark_interval, timeout=timeout)
        except ApiError as e:
            if e.code != 410:
                raise
            # Upstream answers an expired watch with 200 and one ERROR event carrying the 410 Status.
            resp = web.StreamResponse(status=200, headers={"Content-Type": _JSON})
            await resp.prepare(request)
            await resp.write(_dumps({"type": "ERROR", "object": e.status()}) + b"\n")
            await resp.write_eof()
            return resp
        accept = request.headers.get("Accept", "")
        as_table = tables.wants_table(accept)
        include = q.get("includeObject", "PartialObjectMetadata")
        resp = web.StreamResponse(status=200, headers={"Content-Type": _JSON, "Cache-Control": "no-cache"})
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
                data = b"".join(map(_event_line, batch))
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
                            t = tables.table(kind, [ev.obj], rv, include, with_columns=first_table)
                            first_table = False
                            lines.append(_dumps({"type": ev.type, "object": t}) + b"\n")
                        else:
                            lines.append(_event_line(ev))
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
                           decision: authz.Decision) -> web.StreamResponse:
        dry = self._dry_run(request)
        if info.subresource in ("exec", "attach", "portforward"):
            return await self._proxy_to_kubelet(request, info, kind, user)
        if info.subresource == "binding" or kind is kinds.BINDINGS:
            body = await self._read_body(request)
            if not isinstance(body, dict):
                raise errors.bad_request("the body must be a Binding object")
            name = info.name or ((body.get("metadata") or {}).get("name") if isinstance(body.get("metadata"), dict)
                                 else None)
            if not name or not info.namespace:
                raise errors.bad_request("a Binding needs the pod's namespace and name")
            if decision.object_rule:
                raise errors.forbidden(user.name, "create", "pods/binding", "", name, info.namespace)
            return _json_response(await self.registry.bind(info.namespace, name, body), 201)
        if info.subresource == "eviction":
            assert info.name is not None
            e = await self.registry.get(kind, info.namespace, info.name)
            if decision.object_rule and not authz.object_allowed(decision.object_rule, user, e.obj):
                raise errors.forbidden(user.name, "create", "pods/eviction", "", info.name, info.namespace)
            await self.registry.delete(kind, info.namespace, info.name, DeleteOptions(dry_run=dry))
            return _json_response(errors.status_body(201, "", ""), 201)
        if info.name:
            raise ApiError(405, "MethodNotAllowed", "POST is for collections: drop the name from the URL")
        body = await self._read_object(request, kind)
        if decision.object_rule and not authz.object_allowed(decision.object_rule, user, body):
            raise errors.forbidden(user.name, "create", info.resource, info.group,
                                   (body.get("metadata") or {}).get("name"), info.namespace)
        ns = info.namespace
        body_ns = (body.get("metadata") or {}).get("namespace")
        if kind.namespaced and ns and body_ns and body_ns != ns:
            raise errors.bad_request("the namespace of the provided object does not match the namespace sent on "
                                     "the request")
        obj = await self._admit(self.registry.create(kind, ns, body, dry_run=dry))
        return self._respond_object(request, kind, obj, 201)

    async def _admit(self, coro: Any) -> Any:
        """Run a write; malformed shapes that slipped past validation are the client's 400, not our 500."""
        try:
            return await coro
        except (TypeError, AttributeError, KeyError, ValueError, IndexError, ArithmeticError, RecursionError) as e:
            log.warning("msg=\"rejected malformed object\" error=%r", e)
            log.debug("msg=\"malformed object traceback\"", exc_info=True)
            raise errors.bad_request(f"the object is malformed: {type(e).__name__}: {e}") from None

    async def _check_object_rule(self, info: RequestInfo, kind: Kind, user: UserInfo,
                                 decision: authz.Decision) -> None:
        if decision.object_rule and info.name:
            e = await self.registry.get(kind, info.namespace, info.name)
            if not authz.object_allowed(decision.object_rule, user, e.obj):
                raise errors.forbidden(user.name, info.verb, info.resource, info.group, info.name, info.namespace,
                                       f"the object is not bound to node {user.node_name!r}")

    async def _verb_update(self, request: web.Request, info: RequestInfo, kind: Kind, user: UserInfo,
                           decision: authz.Decision) -> web.StreamResponse:
        assert info.name is not None
        dry = self._dry_run(request)
        await self._check_object_rule(info, kind, user, decision)
        if info.subresource == "scale":
            body = await self._read_body(request)
            if not isinstance(body, dict):
                raise errors.bad_request("the body must be an autoscaling/v1 Scale")
            rv = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body.get("metadata"), dict) \
                else None
            return _json_response(await self._admit(self.registry.update_scale(
                kind, info.namespace, info.name, lambda _s: body, dry_run=dry,
                precondition_rv=str(rv) if rv else None)))
        if info.subresource not in (None, "status"):
            raise ApiError(405, "MethodNotAllowed", f"PUT is not supported on {info.resource}/{info.subresource}")
        body = await self._read_object(request, kind)
        obj, created = await self._admit(self.registry.update(kind, info.namespace, info.name, body,
                                                              subresource=info.subresource, dry_run=dry))
        return self._respond_object(request, kind, obj, 201 if created else 200)

    async def _verb_patch(self, request: web.Request, info: RequestInfo, kind: Kind, user: UserInfo,
                          decision: authz.Decision) -> web.StreamResponse:
        assert info.name is not None
        dry = self._dry_run(request)
        await self._check_object_rule(info, kind, user, decision)
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
            body = await self._read_object(request, kind)
            obj, created = await self._admit(self.registry.server_side_apply(
                kind, info.namespace, info.name, body, manager, dry_run=dry))
            return self._respond_object(request, kind, obj, 201 if created else 200)
        body = await self._read_body(request)
        if patch_type != "json" and not isinstance(body, dict):
            raise errors.bad_request("a merge patch must be a JSON object")
        if info.subresource == "scale":
            from nodeagent.machinery.patch import PatchError, json_patch, merge_patch, strategic_merge

            def change(scale: dict[str, Any]) -> dict[str, Any]:
                try:
                    if patch_type == "json":
                        out: Any = json_patch(scale, body)
                    elif patch_type == "strategic":
                        out = strategic_merge(scale, body)
                    else:
                        out = merge_patch(scale, body)
                except PatchError as e:
                    raise errors.bad_request(str(e)) from None
                return out if isinstance(out, dict) else {}

            return _json_response(await self._admit(self.registry.update_scale(kind, info.namespace, info.name,
                                                                               change, dry_run=dry)))
        if info.subresource not in (None, "status"):
            raise ApiError(405, "MethodNotAllowed", f"PATCH is not supported on {info.resource}/{info.subresource}")
        obj = await self._admit(self.registry.patch(kind, info.namespace, info.name, patch_type, body,
                                                    subresource=info.subresource, dry_run=dry))
        return self._respond_object(request, kind, obj)

    async def _delete_options(self, request: web.Request) -> DeleteOptions:
        q = request.query
        opts = DeleteOptions(dry_run=self._dry_run(request))
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            if raw.strip():
                try:
                    body = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise errors.bad_request(f"invalid DeleteOptions: {e}") from None
        if isinstance(body, dict):
            if body.get("gracePeriodSeconds") is not None:
                opts.grace_period_seconds = body["gracePeriodSeconds"]
            opts.propagation_policy = body.get("propagationPolicy")
            if body.get("orphanDependents") is True and not opts.propagation_policy:
                opts.propagation_policy = "Orphan"
            pre = body.get("preconditions") or {}
            if isinstance(pre, dict):
                opts.uid, opts.resource_version = pre.get("uid"), pre.get("resourceVersion")
            if body.get("dryRun"):
                opts.dry_run = True
        try:
            if q.get("gracePeriodSeconds") is not None:
                opts.grace_period_seconds = int(q["gracePeriodSeconds"])
        except ValueError:
            raise errors.bad_request("invalid gracePeriodSeconds: must be an integer") from None
        if opts.grace_period_seconds is not None and not isinstance(opts.grace_period_seconds, int):
            raise errors.bad_request("invalid gracePeriodSeconds: must be an integer")
        if q.get("propagationPolicy"):
            opts.propagation_policy = q["propagationPolicy"]
        if opts.propagation_policy not in (None, "Orphan", "Background", "Foreground"):
            raise errors.bad_request(f"invalid propagationPolicy {opts.propagation_policy!r}: want Orphan, "
                                     "Background or Foreground")
        return opts

    async def _verb_delete(self, request: web.Request, info: RequestInfo, kind: Kind, user: UserInfo,
                           decision: authz.Decision) -> web.StreamResponse:
        assert info.name is not None
        if info.subresource:
            raise ApiError(405, "MethodNotAllowed", f"DELETE is not supported on {info.resource}/{info.subresource}")
        await self._check_object_rule(info, kind, user, decision)
        opts = await self._delete_options(request)
        obj, _gone = await self.registry.delete(kind, info.namespace, info.name, opts)
        return self._respond_object(request, kind, obj)

    async def _verb_deletecollection(self, request: web.Request, info: RequestInfo, kind: Kind, user: UserInfo,
                                     decision: authz.Decision) -> web.StreamResponse:
        if decision.object_rule:
            raise errors.forbidden(user.name, "deletecollection", info.resource, info.group, None, info.namespace)
        opts = await self._delete_options(request)
        objs = await self.registry.delete_collection(kind, info.namespace, self._list_options(request, kind), opts)
        return _json_response({"kind": kind.list_kind, "apiVersion": kind.api_version,
                               "metadata": {"resourceVersion": str(self.store.revision)}, "items": objs})

    # --- authentication.k8s.io -------------------------------------------------------------
    async def _token_review(self, request: web.Request, user: UserInfo, info: RequestInfo) -> web.Response:
        """TokenReview: kubelets ask who presented a token (the apiserver's own calls to them)."""
        decision = authz.authorize(user, info.verb, info.qualified_resource, None, None, None)
        if not decision.allowed or info.verb != "create":
            raise errors.forbidden(user.name, info.verb, "tokenreviews", "authentication.k8s.io", None, None)
        body = await self._read_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
            raise errors.bad_request("a TokenReview needs spec.token")
        assert self.auth is not None
        who = self.auth.authenticate(str(body["spec"].get("token") or ""))
        status: dict[str, Any] = {"authenticated": who is not None}
        if who is not None:
            status["user"] = who.to_json()
        else:
            status["error"] = "invalid bearer token"
        return _json_response({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                               "metadata": {"creationTimestamp": None}, "spec": body["spec"], "status": status},
                              201)

    async def _self_review(self, request: web.Request, user: UserInfo, info: RequestInfo) -> web.Response:
        """`kubectl auth whoami` (SelfSubjectReview) and `kubectl auth can-i` (SelfSubjectAccessReview)."""
        if info.verb != "create":
            raise ApiError(405, "MethodNotAllowed", f"only POST is supported on {info.resource}")
        body = await self._read_body(request)
        if not isinstance(body, dict):
            raise errors.bad_request(f"the body must be a {info.resource} object")
        if info.resource == "selfsubjectreviews":
            return _json_response({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                                   "metadata": {"creationTimestamp": None},
                                   "status": {"userInfo": user.to_json()}}, 201)
        raw_spec = body.get("spec")
        spec: dict[str, Any] = raw_spec if isinstance(raw_spec, dict) else {}
        raw_attrs = spec.get("resourceAttributes")
        attrs: dict[str, Any] | None = raw_attrs if isinstance(raw_attrs, dict) else None
        status: dict[str, Any]
        if attrs is None:
            # Non-resource URLs (/healthz, /version ...): public; the rest is admin only.
            nra = spec.get("nonResourceAttributes")
            path = str(nra.get("path", "")) if isinstance(nra, dict) else ""
            allowed = user.is_admin or path in _PUBLIC_PATHS
            status = {"allowed": allowed}
        else:
            group = str(attrs.get("group") or "")
            resource = str(attrs.get("resource") or "")
            qualified = f"{resource}.{group}" if group else resource
            d = authz.authorize(user, str(attrs.get("verb") or ""), qualified, attrs.get("subresource") or None,
                                attrs.get("namespace") or None, attrs.get("name") or None)
            status = {"allowed": d.allowed}
            if d.object_rule:
                status["reason"] = "allowed only for objects bound to this node"
            elif not d.allowed and d.reason:
                status["reason"] = d.reason
        return _json_response({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                               "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}, 201)

    # --- kubelet proxy (pods/log, pods/exec, pods/attach, pods/portforward) -------------
    async def _proxy_to_kubelet(self, request: web.Request, info: RequestInfo, kind: Kind,
                                user: UserInfo) -> web.StreamResponse:
        from nodeagent.api.kubelet_proxy import proxy_to_kubelet

        assert self.auth is not None
        token = self.auth.token_of(APISERVER_USER) or ""
        return await proxy_to_kubelet(self, request, info, kind, token)


def _check_kind(body: dict[str, Any], kind: Kind) -> None:
    api_version, k = body.get("apiVersion"), body.get("kind")
    if api_version is not None and api_version != kind.api_version:
        raise errors.bad_request(f"the API version in the data ({api_version}) does not match the expected API "
                                 f"version ({kind.api_version})")
    if k is not None and k != kind.kind:
        raise errors.bad_request(f"the kind in the data ({k}) does not match the expected kind ({kind.kind}) "
                                 f"for {kind.plural}")
