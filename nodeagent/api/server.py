"""The HTTP side of the apiserver: TLS, the request path, health, discovery and the reviews.

One asyncio process (aiohttp). Every resource request goes the same way, as upstream's handler
chain: authenticate and impersonate (auth/authn.py, auth/impersonation.py) -> authorize (auth/:
system:masters, Node, RBAC) -> the verb (verbs.py), whose writes pass admission (admission/,
`ApiServer.admission`) inside the registry before storage; an audit event per request (auth/audit.py).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from nodeagent.api import discovery, wire
from nodeagent.api.admission import Chain
from nodeagent.api.auth.authn import peer_certificate_user, token_authenticator
from nodeagent.api.auth.decision import Decision
from nodeagent.api.auth.guard import Guard
from nodeagent.api.auth.reviews import NAMESPACED as NAMESPACED_REVIEWS
from nodeagent.api.auth.reviews import REVIEWS, review
from nodeagent.api.defaultingressclass import default_ingress_class
from nodeagent.api.errors import ApiError
from nodeagent.api.metrics import Metrics
from nodeagent.api.pki import ensure_kubelet_client_cert, ensure_pki
from nodeagent.api.registry import Registry
from nodeagent.api.requestinfo import RequestInfo, parse
from nodeagent.api.sqlite_store import SqliteStore
from nodeagent.api.tokens import TokenAuthenticator, UserInfo, ensure_admin_tokens
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
    # ServiceAccount tokens (upstream --service-account-issuer, --service-account-key-file, --api-audiences)
    service_account_issuer: str = "https://kubernetes.default.svc.cluster.local"
    service_account_key_file: str = ""  # "" = DIR/pki/sa.key, made at first start
    service_account_jwks_uri: str | None = None
    api_audiences: list[str] = field(default_factory=list)  # [] = the issuer
    # upstream refuses TokenRequests shorter than 10 minutes; tests of token rotation lower it
    min_token_expiration_seconds: int = 600
    disable_admission_plugins: list[str] = field(default_factory=list)
    audit_policy_file: str = ""  # audit.k8s.io/v1 Policy; off without it (upstream --audit-policy-file)
    audit_log_path: str = ""
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
        self.guard = Guard()
        # Admission plugins, in order, run by the registry on every write (admission/).
        self.admission: Chain = self.registry.admission
        self.admission.plugins.extend(self.guard.admission_plugins(self.registry, cfg.disable_admission_plugins))
        self.admission.plugins.append(default_ingress_class(self.registry))
        self.admission.plugins[:] = [p for p in self.admission.plugins if p.name not in cfg.disable_admission_plugins]
        self.verbs = Verbs(self)
        self._runners: list[web.AppRunner] = []
        self.ready = False
        self._kubelet_ssl: ssl.SSLContext | None = None
        self.sa_tokens: Any = None  # ServiceAccountTokens once started
        self.audit: Any = None  # AuditLog when --audit-policy-file and --audit-log-path are given

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        cfg.data_dir.chmod(0o700)  # the store, tokens and keys inside are root's alone (issue 14)
        sans = [*cfg.tls_sans, self.registry.cluster_ips.first]
        if cfg.advertise_address:
            sans.append(cfg.advertise_address)
        if cfg.bind_address not in ("0.0.0.0", "::", ""):
            sans.append(cfg.bind_address)
        pki = await asyncio.to_thread(ensure_pki, cfg.data_dir, sans)
        await asyncio.to_thread(ensure_admin_tokens, cfg.data_dir)
        self.auth = TokenAuthenticator(cfg.data_dir)
        from nodeagent.api.auth.serviceaccount import ServiceAccountTokens, ensure_signing_key

        key = Path(cfg.service_account_key_file) if cfg.service_account_key_file else \
            await asyncio.to_thread(ensure_signing_key, pki.dir)
        self.sa_tokens = ServiceAccountTokens(key, cfg.service_account_issuer, tuple(cfg.api_audiences))
        sa_tokens = self.sa_tokens
        self.guard.token_lookups = [self.auth.authenticate,
                                    lambda t: sa_tokens.authenticate(t, self._store_get)]
        self.guard.authenticators = [peer_certificate_user, token_authenticator(self.guard.token_lookups)]
        self.kubelet_client_cert = await asyncio.to_thread(ensure_kubelet_client_cert, pki)
        self.ca_file = pki.ca_crt
        if cfg.audit_policy_file and cfg.audit_log_path:
            from nodeagent.api.auth.audit import AuditLog, Policy

            self.audit = AuditLog(Policy.load(cfg.audit_policy_file), cfg.audit_log_path)
        if cfg.storage != "sqlite":
            raise ValueError(f"unsupported --storage {cfg.storage!r}: only sqlite is built in")
        _private_file(cfg.data_dir / "state.db")
        await self.store.start()
        await self.guard.start(self.store)
        advertise = (cfg.advertise_address, cfg.port) if cfg.advertise_address else None
        await self.registry.start(advertise=advertise, secure_port=cfg.port)
        from nodeagent.api.auth import bootstrap

        await bootstrap.reconcile(self.registry)

        app = web.Application(client_max_size=cfg.max_body_bytes, handler_args={"max_field_size": 65536})
        app.router.add_route("*", "/{tail:.*}", self.handle)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(pki.server_crt, pki.server_key)
        # client certificates signed by the cluster CA authenticate their holder (CN = user, O = groups)
        ctx.load_verify_locations(cafile=str(pki.ca_crt))
        ctx.verify_mode = ssl.CERT_OPTIONAL
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
        self.guard.close()
        if self.audit is not None:
            self.audit.close()
        await self.store.close()  # ends every watch stream first, so the runner can drain
        for r in self._runners:
            await r.cleanup()
        self._runners.clear()

    # --- entry point -----------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        t0 = time.perf_counter()
        received = datetime.datetime.now(datetime.UTC)
        info = parse(request.method, request.path, wire.bool_param(request.query.get("watch")))
        code = 500
        answer: Any = None
        try:
            resp = await self._handle(request, info)
            code = resp.status
            if isinstance(resp, web.Response) and resp.content_type == "application/json" and \
                    isinstance(resp.body, bytes):
                answer = resp.body
            return resp
        except ApiError as e:
            code = e.code
            answer = e.status()
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
            if self.audit is not None:
                self._audit(request, info, code, received, json.loads(answer) if isinstance(answer, bytes) else answer)
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
        caller = await self.guard.authenticate(request)
        user = self.guard.impersonate(request, caller)
        request[wire.AUDIT_USERS] = (caller, None if user is caller else user)
        if not info.is_resource:
            self._require(request, self.guard.path_attributes(user, request.method, path))
            if path == "/metrics":
                return web.Response(body=self.metrics.render(self._refresh_gauges),
                                    headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
            if path.startswith("/openapi/"):
                return self._openapi(path)
            oidc = self._oidc(path)
            if oidc is not None:
                return oidc
            return self._discovery(request, path)
        decision = self._require(request, self.guard.resource_attributes(user, info, request.query))
        if info.qualified_resource in REVIEWS:
            return await self._review(request, user, info)
        kind = kinds.lookup(info.group, info.resource)
        if kind is None or info.version != kind.version or not self.registry.serves(kind):
            raise ApiError(404, "NotFound", "the server could not find the requested resource",
                           group=info.group, kind=info.resource)
        if info.subresource and info.subresource not in kind.subresources:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource "
                                            f"({info.resource}/{info.subresource})")
        if kind.namespaced is False and info.namespace:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if info.verb in ("update", "patch") and not info.name:
            raise ApiError(405, "MethodNotAllowed", f"{request.method} needs an object name in the URL: "
                                                    f"{info.path.rstrip('/')}/NAME")
        handler = self.verbs.handler(info.verb)
        if handler is None:
            raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested "
                                                    f"resource ({request.method} {info.resource})")
        resp: web.StreamResponse = await handler(request, info, kind, user, decision)
        return resp

    def _require(self, request: web.Request, attrs: Any) -> Decision:
        d = self.guard.authorize(attrs)
        request[wire.AUDIT_DECISION] = ("allow" if d.allowed else "forbid", d.reason)
        return self.guard.require(attrs, d)

    def _audit(self, request: web.Request, info: RequestInfo, code: int, received: Any, response: Any) -> None:
        caller, impersonated = request.get(wire.AUDIT_USERS) or (None, None)
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        try:
            self.audit.record(user=caller, impersonated=impersonated, info=info, method=request.method,
                              uri=request.path_qs, source_ip=peer[0] if peer else "",
                              user_agent=request.headers.get("User-Agent", ""), code=code, received=received,
                              decision=request.get(wire.AUDIT_DECISION), request_body=request.get(wire.AUDIT_BODY),
                              response=response)
        except Exception:
            log.exception("msg=\"writing the audit event failed\" path=%s", request.path)

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

    # --- service account tokens ----------------------------------------------------------
    async def _store_get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        e = await self.store.get(resource, namespace, name)
        return e.obj if e is not None else None

    async def token_request(self, request: web.Request, info: RequestInfo, user: UserInfo) -> web.Response:
        """serviceaccounts/NAME/token (TokenRequest); NodeRestriction sees it as a CREATE."""
        from nodeagent.api.admission import Attributes
        from nodeagent.api.auth.tokenrequest import create_token

        assert info.name is not None and self.sa_tokens is not None
        sa = (await self.registry.get(kinds.SERVICEACCOUNTS, info.namespace, info.name)).obj
        body = await wire.read_body(request, self.cfg.max_body_bytes)
        attrs = Attributes("CREATE", kinds.SERVICEACCOUNTS, info.namespace or "", info.name, "token",
                           body if isinstance(body, dict) else None, sa, user, False)
        await self.admission.validate(attrs)
        out = await create_token(self.sa_tokens, self._store_get, sa, body, self.cfg.min_token_expiration_seconds)
        return wire.json_response(out, 201)

    def _oidc(self, path: str) -> web.Response | None:
        """/.well-known/openid-configuration and /openid/v1/jwks (ServiceAccountIssuerDiscovery)."""
        if self.sa_tokens is None:
            return None
        if path == "/.well-known/openid-configuration":
            return wire.json_response(self.sa_tokens.openid_configuration(self.cfg.service_account_jwks_uri))
        if path == "/openid/v1/jwks":
            return wire.json_response(self.sa_tokens.jwks(), content_type="application/jwk-set+json")
        return None

    # --- authentication.k8s.io, authorization.k8s.io reviews ------------------------------
    async def _review(self, request: web.Request, user: UserInfo, info: RequestInfo) -> web.Response:
        if info.verb != "create" or info.name:
            raise ApiError(405, "MethodNotAllowed", f"only POST to the collection is supported on {info.resource}")
        if (info.qualified_resource in NAMESPACED_REVIEWS) != bool(info.namespace):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        body = await wire.read_body(request, self.cfg.max_body_bytes)
        out = await review(self.guard, user, info.qualified_resource, info.namespace, body)
        return wire.json_response(out, 201)

    # --- kubelet proxy (pods/log, pods/exec, pods/attach, pods/portforward) -------------
    async def proxy_to_kubelet(self, request: web.Request, info: RequestInfo, kind: Kind,
                               user: UserInfo) -> web.StreamResponse:
        from nodeagent.api.kubelet_proxy import kubelet_context, proxy_to_kubelet

        if self._kubelet_ssl is None:
            crt, key = self.kubelet_client_cert
            self._kubelet_ssl = kubelet_context(str(self.ca_file), str(crt), str(key))
        return await proxy_to_kubelet(self, request, info, kind, self._kubelet_ssl)


def _private_file(path: Path) -> None:
    """Create path empty with mode 0600 if missing, else narrow it to 0600 (sqlite gives its -wal and
    -shm files the database file's mode)."""
    import os

    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)
