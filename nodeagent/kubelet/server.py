"""The kubelet's HTTPS endpoint (upstream pkg/kubelet/server): /healthz, /metrics,
/containerLogs/NS/POD/CONTAINER, /exec/NS/POD/CONTAINER, /attach/NS/POD[/UID]/CONTAINER and
/portForward/NS/POD[/UID].

The apiserver proxies pods/log, pods/exec, pods/attach and pods/portforward here, presenting its
kubelet client certificate. As upstream's kubelet (authentication x509 + webhook, authorization
webhook), every request except /healthz is authenticated, by a client certificate signed by the
cluster CA or by a bearer token a TokenReview accepts, and then authorized by a
SubjectAccessReview for the node's subresource (nodes/proxy, nodes/log, nodes/stats,
nodes/metrics; verb from the HTTP method), answered by the apiserver's RBAC.
A streaming exec is answered by CRI Exec and the upgraded connection (SPDY or WebSocket) is spliced
byte for byte to the runtime's streaming server, which only listens inside the node. An attach is
answered the same way from CRI Attach on the container's running instance, with the TTY setting the
container was created with (upstream's GetAttach: a process's terminal cannot change after it
started), whatever the request asks; it must stream at least one of stdin, stdout, stderr. A port
forward is answered the same way from CRI PortForward on the pod's ready sandbox: over SPDY the
ports travel in each stream's headers, over WebSocket in `port` query parameters.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import ssl
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nodeagent.httpsplice import splice_upgrade
from nodeagent.kubelet.logs import LogOptions, log_files, read_logs
from nodeagent.kubelet.model import ContainerState

if TYPE_CHECKING:
    from nodeagent.kubelet.kubelet import Kubelet

log = logging.getLogger(__name__)

TOKEN_CACHE_TTL = 120.0  # upstream's webhook token authenticator caches for 2 minutes
AUTHZ_ALLOW_TTL, AUTHZ_DENY_TTL = 300.0, 30.0  # upstream's webhook authorizer cache defaults
# upstream pkg/kubelet/server/auth.go: the path's first segment picks the subresource
_SUBRESOURCES = {"stats": "stats", "metrics": "metrics", "logs": "log", "spec": "spec", "checkpoint": "checkpoint",
                 "configz": "configz", "healthz": "healthz", "pods": "pods"}
_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def ensure_serving_cert(pki_dir: str, node_name: str, ips: list[str]) -> tuple[str, str]:
    """A self-signed serving certificate for the kubelet (upstream's default without a CSR)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    crt, key = os.path.join(pki_dir, "kubelet.crt"), os.path.join(pki_dir, "kubelet.key")
    if os.path.exists(crt) and os.path.exists(key):
        return crt, key
    os.makedirs(pki_dir, mode=0o700, exist_ok=True)
    pk = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{node_name}@{int(time.time())}")])
    sans: list[x509.GeneralName] = [x509.DNSName(node_name), x509.DNSName("localhost")]
    for ip in {*ips, "127.0.0.1"}:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError:
            continue
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(pk.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(pk, hashes.SHA256()))
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()))
    with open(crt, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return crt, key


def _flag(q: Any, name: str) -> bool:
    return str(q.get(name, "")).lower() in ("1", "true", "yes")


class KubeletServer:
    def __init__(self, kubelet: Kubelet) -> None:
        self.k = kubelet
        self._tokens: dict[str, tuple[float, dict[str, Any] | None]] = {}  # token -> (expiry, user)
        self._decisions: dict[tuple[Any, ...], tuple[float, bool, str]] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ------------------------------------------------------------------ app
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self.container_logs)
        app.router.add_route("*", "/exec/{ns}/{pod}/{container}", self.exec)
        app.router.add_route("*", "/attach/{ns}/{pod}/{container}", self.attach)
        app.router.add_route("*", "/attach/{ns}/{pod}/{uid}/{container}", self.attach)
        app.router.add_route("*", "/portForward/{ns}/{pod}", self.port_forward)
        app.router.add_route("*", "/portForward/{ns}/{pod}/{uid}", self.port_forward)
        app.router.add_get("/pods", self.pods)
        return app

    async def start(self, host: str, port: int, certfile: str, keyfile: str, client_ca: str | None = None) -> None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(certfile, keyfile)
        if client_ca:
            ctx.load_verify_locations(cafile=client_ca)
            ctx.verify_mode = ssl.CERT_OPTIONAL
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ctx, reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        log.info("kubelet server listening address=%s port=%d", host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ authn / authz
    async def _token_user(self, token: str) -> dict[str, Any] | None:
        hit = self._tokens.get(token)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
        resp = await self.k.client.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", body=body)
        st = resp.get("status") or {}
        user = st.get("user") if st.get("authenticated") else None
        if len(self._tokens) > 1024:
            self._tokens.clear()
        self._tokens[token] = (time.monotonic() + TOKEN_CACHE_TTL, user)
        return user

    async def _allowed(self, user: dict[str, Any], verb: str, subresource: str) -> tuple[bool, str]:
        key = (user.get("username"), tuple(user.get("groups") or ()), verb, subresource)
        hit = self._decisions.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1], hit[2]
        spec = {"user": user.get("username", ""), "groups": list(user.get("groups") or []),
                "resourceAttributes": {"verb": verb, "resource": "nodes", "subresource": subresource,
                                       "name": self.k.config.node_name}}
        if user.get("uid"):
            spec["uid"] = user["uid"]
        if user.get("extra"):
            spec["extra"] = user["extra"]
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
        resp = await self.k.client.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=body)
        st = resp.get("status") or {}
        allowed, reason = bool(st.get("allowed")), str(st.get("reason") or "")
        if len(self._decisions) > 1024:
            self._decisions.clear()
        self._decisions[key] = (time.monotonic() + (AUTHZ_ALLOW_TTL if allowed else AUTHZ_DENY_TTL), allowed, reason)
        return allowed, reason

    @staticmethod
    def _cert_user(request: web.Request) -> dict[str, Any] | None:
        cert = request.transport.get_extra_info("peercert") if request.transport is not None else None
        if not cert:
            return None
        cn, orgs = "", []
        for rdn in cert.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    cn = value
                elif key == "organizationName":
                    orgs.append(value)
        return {"username": cn, "groups": [*orgs, "system:authenticated"]} if cn else None

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/healthz" or not self.k.config.authenticate:
            return await handler(request)  # type: ignore[no-any-return]
        user = self._cert_user(request)
        auth = request.headers.get("Authorization", "")
        try:
            if user is None:
                if not auth.lower().startswith("bearer ") or not auth[7:].strip():
                    return web.Response(status=401, text="Unauthorized\n")
                user = await self._token_user(auth[7:].strip())
                if user is None:
                    return web.Response(status=401, text="Unauthorized\n")
            verb = _VERBS.get(request.method, request.method.lower())
            sub = _SUBRESOURCES.get(request.path.strip("/").split("/", 1)[0], "proxy")
            allowed, reason = await self._allowed(user, verb, sub)
        except Exception as e:
            log.warning("authentication or authorization review failed err=%s", e)
            return web.Response(status=401, text=f"Unauthorized: review failed: {e}\n")
        if not allowed:
            name = user.get("username", "")
            return web.Response(status=403, text=f"Forbidden (user={name}, verb={verb}, resource=nodes, "
                                                  f"subresource={sub})" + (f": {reason}" if reason else "") + "\n")
        return await handler(request)  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ handlers
    async def healthz(self, request: web.Request) -> web.Response:
        ok, msg = self.k.pleg.healthy()
        if not ok:
            return web.Response(status=500, text=f"[-]pleg failed: {msg}\nhealthz check failed\n")
        return web.Response(text="ok")

    async def metrics(self, request: web.Request) -> web.Response:
        self.k._count_running()
        body = generate_latest(self.k.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def pods(self, request: web.Request) -> web.Response:
        items = [w.pod for w in self.k.workers.values() if w.pod]
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})

    def _find(self, request: web.Request) -> tuple[dict[str, Any], str]:
        ns, name, container = (request.match_info["ns"], request.match_info["pod"],
                               request.match_info["container"])
        pod = self.k.informer.get(f"{ns}/{name}")
        uid = request.match_info.get("uid")
        if pod is None or (uid and pod["metadata"].get("uid") != uid):
            raise web.HTTPNotFound(text=f'pod "{name}" not found in namespace "{ns}" on node '
                                        f'"{self.k.config.node_name}"' + (f" with UID {uid}" if uid else "") + "\n")
        spec = pod.get("spec", {})
        names = [c["name"] for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])]
        if container not in names:
            raise web.HTTPBadRequest(text=f'container {container} is not valid for pod {name}\n')
        return pod, container

    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        pod, container = self._find(request)
        q = request.query
        uid = pod["metadata"]["uid"]
        rs = self.k.pleg.cached(uid) or await self.k.pleg.refresh(uid)
        latest = rs.latest(container)
        log_dir = self.k.runtime.pod_log_directory(pod)
        files = log_files(log_dir, container)
        current = latest.attempt if latest else (files[0][0] if files else -1)
        if _flag(q, "previous"):
            prev = [f for f in files if f[0] < current]
            if not prev:
                raise web.HTTPBadRequest(text=f'previous terminated container "{container}" in pod '
                                              f'"{pod["metadata"]["name"]}" not found\n')
            path = prev[0][1]
            follow = False
        else:
            cur = [f for f in files if f[0] == current]
            if not cur:
                raise web.HTTPBadRequest(text=f'container "{container}" in pod "{pod["metadata"]["name"]}" '
                                              'is waiting to start\n')
            path = cur[0][1]
            follow = _flag(q, "follow")
        opts = LogOptions(
            follow=follow,
            tail_lines=int(q["tailLines"]) if q.get("tailLines") not in (None, "", "-1") else None,
            timestamps=_flag(q, "timestamps"),
            limit_bytes=int(q["limitBytes"]) if q.get("limitBytes") else None,
            since_seconds=int(q["sinceSeconds"]) if q.get("sinceSeconds") else None,
        )
        cid = latest.id if latest else ""

        async def still_running() -> bool:
            if not cid:
                return False
            try:
                c = await self.k.runtime.container_status(cid)
            except Exception:
                return False
            return c.state == ContainerState.RUNNING

        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        try:
            async for chunk in read_logs(path, opts, still_running):
                await resp.write(chunk)
        except (ConnectionResetError, asyncio.CancelledError):
            return resp
        await resp.write_eof()
        return resp

    async def exec(self, request: web.Request) -> web.StreamResponse:
        pod, container = self._find(request)
        q = request.query
        cmd = q.getall("command", [])
        if not cmd:
            raise web.HTTPBadRequest(text="exec: at least one command argument is required\n")
        uid = pod["metadata"]["uid"]
        rs = await self.k.pleg.refresh(uid)
        c = rs.latest(container)
        if c is None or c.state != ContainerState.RUNNING:
            raise web.HTTPBadRequest(text=f"container {container} is not running\n")
        upgrade = request.headers.get("Upgrade", "")
        if not upgrade:
            # One-shot exec (no stream): CRI ExecSync, output in the body, the exit code in a header.
            timeout = float(q.get("timeout", "60"))
            res = await self.k.runtime.exec_sync(c.id, cmd, timeout)
            return web.Response(body=res.stdout + res.stderr, headers={"X-Exit-Code": str(res.exit_code),
                                                                       "Content-Type": "text/plain"})
        url = await self.k.runtime.exec_url(c.id, cmd, tty=_flag(q, "tty"), stdin=_flag(q, "input") or _flag(q, "stdin"),
                                            stdout=_flag(q, "output") or _flag(q, "stdout"),
                                            stderr=_flag(q, "error") or _flag(q, "stderr"))
        return await self._splice(request, url)

    async def attach(self, request: web.Request) -> web.StreamResponse:
        """Upstream's getAttach: the container's running instance, CRI Attach, then the splice."""
        pod, container = self._find(request)
        if not request.headers.get("Upgrade"):
            raise web.HTTPBadRequest(text="attach: an upgrade request (SPDY/3.1 or WebSocket) is required\n")
        q = request.query
        spec = next(c for c in (pod["spec"].get("containers") or []) + (pod["spec"].get("initContainers") or [])
                    if c["name"] == container)
        tty = bool(spec.get("tty"))
        stdin = _flag(q, "input") or _flag(q, "stdin")
        stdout = _flag(q, "output") or _flag(q, "stdout")
        # as upstream's stream options: with a terminal there is no separate stderr
        stderr = (_flag(q, "error") or _flag(q, "stderr")) and not tty
        if not (stdin or stdout or stderr):
            raise web.HTTPBadRequest(text="attach: you must specify at least 1 of stdin, stdout, stderr\n")
        rs = await self.k.pleg.refresh(pod["metadata"]["uid"])
        c = rs.latest(container)
        if c is None or c.state != ContainerState.RUNNING:
            raise web.HTTPBadRequest(text=f"container {container} is not running\n")
        url = await self.k.runtime.attach_url(c.id, tty=tty, stdin=stdin, stdout=stdout, stderr=stderr)
        log.info("attach pod=%s/%s container=%s id=%s tty=%s stdin=%s", pod["metadata"]["namespace"],
                 pod["metadata"]["name"], container, c.id[:12], tty, stdin)
        return await self._splice(request, url)

    async def port_forward(self, request: web.Request) -> web.StreamResponse:
        """Upstream's getPortForward: find the pod (and, when given, check its UID), ask the runtime
        for a streaming URL for its sandbox, and splice the upgraded connection to it."""
        ns, name = request.match_info["ns"], request.match_info["pod"]
        pod = self.k.informer.get(f"{ns}/{name}")
        uid = request.match_info.get("uid")
        if pod is None or (uid and pod["metadata"].get("uid") != uid):
            raise web.HTTPNotFound(text=f'pod "{name}" not found in namespace "{ns}" on node '
                                        f'"{self.k.config.node_name}"' + (f" with UID {uid}" if uid else "") + "\n")
        if not request.headers.get("Upgrade"):
            raise web.HTTPBadRequest(text="port forward: an upgrade request (SPDY/3.1 or WebSocket) is required\n")
        try:
            ports = [int(p) for p in request.query.getall("port", [])]
        except ValueError:
            raise web.HTTPBadRequest(text="port forward: every port query parameter must be a number\n") from None
        if any(not 0 < p < 65536 for p in ports):
            raise web.HTTPBadRequest(text=f"port forward: ports must be in 1-65535, got {ports}\n")
        rs = await self.k.pleg.refresh(pod["metadata"]["uid"])
        ready = rs.ready_sandboxes()
        if not ready:
            raise web.HTTPBadRequest(text=f'pod "{name}" has no running sandbox on node '
                                          f'"{self.k.config.node_name}": cannot forward ports into it\n')
        sandbox = max(ready, key=lambda sb: (sb.attempt, sb.created_at))
        url = await self.k.runtime.port_forward_url(sandbox.id, ports)
        log.info("port forward pod=%s/%s sandbox=%s ports=%s", ns, name, sandbox.id[:12], ports or "per-stream")
        return await self._splice(request, url)

    async def _splice(self, request: web.Request, url: str) -> web.StreamResponse:
        """Hand the upgraded connection to the runtime's streaming server and copy bytes both ways."""
        u = urllib.parse.urlsplit(url)
        try:
            if u.scheme == "https":
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                reader, writer = await asyncio.open_connection(u.hostname, u.port or 443, ssl=ctx)
            else:
                reader, writer = await asyncio.open_connection(u.hostname, u.port or 80)
        except OSError as e:
            raise web.HTTPBadGateway(text=f"the runtime's streaming server at {u.netloc} is unreachable: {e}\n") \
                from None
        target = u.path + (f"?{u.query}" if u.query else "")
        head = [f"{request.method} {target} HTTP/1.1", f"Host: {u.netloc}"]
        for k, v in request.headers.items():
            if k.lower() in ("host", "authorization", "content-length", "transfer-encoding"):
                continue
            head.append(f"{k}: {v}")
        try:
            return await splice_upgrade(request, reader, writer, head)
        except ConnectionError:
            raise web.HTTPBadRequest(text="connection closed\n") from None
