"""The HTTP side of the apiserver: TLS, the request path, health, discovery and the reviews.

One asyncio process (aiohttp). Every resource request goes the same way, as upstream's handler
chain: authenticate (tokens.py) -> authorize (authz.py) -> the verb (verbs.py), whose writes pass
admission (admission.py, `ApiServer.admission`) inside the registry before storage.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from nodeagent.api import authz, discovery, errors, wire
from nodeagent.api.admission import Chain
from nodeagent.api.errors import ApiError
from nodeagent.api.metrics import Metrics
from nodeagent.api.pki import ensure_pki
from nodeagent.api.registry import Registry
from nodeagent.api.requestinfo import RequestInfo, parse
from nodeagent.api.sqlite_store import SqliteStore
from nodeagent.api.tokens import APISERVER_USER, TokenAuthenticator, UserInfo, ensure_admin_tokens
from nodeagent.api.verbs import Verbs
from nodeagent.machinery import kinds
from nodeagent.machinery.kinds import Kind

log = logging.getLogger(__name__)

VERSION_INFO = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.0-nodeagent", "gitCommit": "", "gitTreeState": "clean",
    "buildDate": "2026-11-01T00:00:00Z", "goVersion": "go1.23", "compiler": "gc", "platform": "linux/amd64",
}
_PUBLIC_PATHS = {"/healthz", "/livez", "/readyz", "/version", "/version/"}


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
        # Admission plugins, in order, run by the registry on every write (admission.py).
        self.admission: Chain = self.registry.admission
        self.verbs = Verbs(self)
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
        info = parse(request.method, request.path, wire.bool_param(request.query.get("watch")))
        code = 500
        try:
            resp = await self._handle(request, info)
            code = resp.status
            return resp
        except ApiError as e:
            code = e.code
            return wire.error_response(e)
        except web.HTTPException:
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            code = 499
            raise
        except Exception as e:
            log.exception("msg=\"internal error\" method=%s path=%s", request.method, request.path)
            code = 500
            return wire.error_response(ApiError(500, "InternalError", f"an internal error occurred: {type(e).__name__}"))
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
        if kind is None or info.version != kind.version or not self.registry.serves(kind):
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
        handler = self.verbs.handler(info.verb)
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
            return wire.json_response(VERSION_INFO)
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
            return wire.json_response(openapi.index())
        if path.startswith("/openapi/v3/"):
            doc = openapi.document(path[len("/openapi/v3/"):])
            if doc is not None:
                return wire.json_response(doc)
        raise ApiError(404, "NotFound", f'the server could not find the requested resource ("{path}"); only '
                                        "OpenAPI v3 documents listing operations are served")

    def _discovery(self, request: web.Request, path: str) -> web.Response:
        accept = request.headers.get("Accept", "")
        p = path.rstrip("/")
        addr = f"{self.cfg.advertise_address or self.cfg.bind_address}:{self.cfg.port}"
        if p in ("/api", "/apis") and discovery.wants_aggregated(accept):
            return wire.json_response(discovery.aggregated(p == "/api"), content_type=discovery.AGGREGATED_CT)
        if p == "/api":
            return wire.json_response(discovery.api_versions(addr))
        if p == "/apis":
            return wire.json_response(discovery.api_group_list())
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
        return wire.json_response(doc)

    # --- authentication.k8s.io -------------------------------------------------------------
    async def _token_review(self, request: web.Request, user: UserInfo, info: RequestInfo) -> web.Response:
        """TokenReview: kubelets ask who presented a token (the apiserver's own calls to them)."""
        decision = authz.authorize(user, info.verb, info.qualified_resource, None, None, None)
        if not decision.allowed or info.verb != "create":
            raise errors.forbidden(user.name, info.verb, "tokenreviews", "authentication.k8s.io", None, None)
        body = await wire.read_body(request, self.cfg.max_body_bytes)
        if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
            raise errors.bad_request("a TokenReview needs spec.token")
        assert self.auth is not None
        who = self.auth.authenticate(str(body["spec"].get("token") or ""))
        status: dict[str, Any] = {"authenticated": who is not None}
        if who is not None:
            status["user"] = who.to_json()
        else:
            status["error"] = "invalid bearer token"
        return wire.json_response({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                               "metadata": {"creationTimestamp": None}, "spec": body["spec"], "status": status},
                              201)

    async def _self_review(self, request: web.Request, user: UserInfo, info: RequestInfo) -> web.Response:
        """`kubectl auth whoami` (SelfSubjectReview) and `kubectl auth can-i` (SelfSubjectAccessReview)."""
        if info.verb != "create":
            raise ApiError(405, "MethodNotAllowed", f"only POST is supported on {info.resource}")
        body = await wire.read_body(request, self.cfg.max_body_bytes)
        if not isinstance(body, dict):
            raise errors.bad_request(f"the body must be a {info.resource} object")
        if info.resource == "selfsubjectreviews":
            return wire.json_response({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
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
        return wire.json_response({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                               "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}, 201)

    # --- kubelet proxy (pods/log, pods/exec, pods/attach, pods/portforward) -------------
    async def proxy_to_kubelet(self, request: web.Request, info: RequestInfo, kind: Kind,
                               user: UserInfo) -> web.StreamResponse:
        from nodeagent.api.kubelet_proxy import proxy_to_kubelet

        assert self.auth is not None
        token = self.auth.token_of(APISERVER_USER) or ""
        return await proxy_to_kubelet(self, request, info, kind, token)
