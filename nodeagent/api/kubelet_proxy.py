"""pods/log, pods/exec, pods/attach and pods/portforward: forwarded to the kubelet of the pod's
node, as upstream's apiserver does.

The target is https://<node InternalIP>:<status.daemonEndpoints.kubeletEndpoint.Port>/containerLogs/
NS/POD/CONTAINER, /exec/NS/POD/CONTAINER, /attach/NS/POD/CONTAINER or /portForward/NS/POD/UID. As
kube-apiserver with --kubelet-certificate-authority and --kubelet-client-certificate, the apiserver
verifies the kubelet's serving certificate against the cluster CA for the address it dials, and
more: the certificate must name the pod's node itself (CN system:node:NODE), so a node that
rewrites its status.addresses cannot point the apiserver at another node's kubelet or at a listener
of its own (issue 14). The apiserver authenticates with a client certificate (user
kube-apiserver-kubelet-client, bound only to system:kubelet-api-admin), never with a bearer token,
so nothing the far end sees can be replayed.

Exec and attach upgrades (WebSocket v5.channel.k8s.io first, SPDY/3.1 as fallback: whatever
kubectl offers) are proxied as a byte stream: the request head is re-sent to the kubelet with our
credentials, and from then on bytes are copied both ways, the kubelet's 101 answer included.
(Upstream's apiserver translates kubectl's v5 WebSocket into SPDY towards the kubelet; we pass it
through, the runtime's streaming server (containerd 1.6) refuses v5 with 403, and kubectl falls back
to SPDY.) A plain, non-upgraded attach is forwarded as is and the kubelet refuses it with 400.

Port forwarding is always an upgrade (upstream answers a plain request with 400). Over SPDY/3.1
(`X-Stream-Protocol-Version: portforward.k8s.io`) it is spliced like exec. kubectl >= 1.31 first
offers WebSocket tunnelling SPDY (subprotocol `SPDY/3.1+portforward.k8s.io`, feature
PortForwardWebsockets): upstream's apiserver unwraps that tunnel, we do not. We refuse that
upgrade with a 400 and client-go's fallback dialer, which treats a failed WebSocket handshake as an
upgrade failure, retries with SPDY. Older WebSocket port forwarding (`port` query parameters, the
channel protocols) is passed through to the runtime's streaming server (not covered by a test).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from aiohttp import web

from nodeagent.api import errors
from nodeagent.api.errors import ApiError
from nodeagent.httpsplice import splice_upgrade
from nodeagent.machinery import kinds
from nodeagent.machinery.kinds import Kind

log = logging.getLogger(__name__)

DEFAULT_KUBELET_PORT = 10250
_HOP_HEADERS = {"host", "authorization", "content-length", "transfer-encoding", "keep-alive", "te", "trailer",
                "proxy-authorization", "proxy-connection"}


def kubelet_context(ca_file: str, client_crt: str, client_key: str) -> ssl.SSLContext:
    """Verify the kubelet against the cluster CA (hostname = the dialed address) and present the
    apiserver's kubelet client certificate."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.load_cert_chain(client_crt, client_key)
    return ctx


def check_kubelet_identity(peercert: dict[str, Any] | None, node: str, host: str, port: int) -> None:
    """The verified certificate must be the node's own: CN system:node:NODE."""
    cn = ""
    for rdn in (peercert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
    if cn != f"system:node:{node}":
        raise ApiError(502, "BadGateway", f"the kubelet at {host}:{port} presented a certificate for "
                                          f'"{cn or "?"}", not for node "{node}": refusing to send the request '
                                          "there (are the node's status.addresses its own?)")


def _tls_error(host: str, port: int, e: BaseException) -> ApiError:
    return ApiError(502, "BadGateway", f"cannot verify the kubelet at {host}:{port}: {e} (its serving certificate "
                                       "must be issued by the cluster CA for that address)")


def pick_container(pod: dict[str, Any], wanted: str | None) -> str:
    spec = pod.get("spec") or {}
    name = (pod.get("metadata") or {}).get("name", "")
    containers = [c.get("name") for c in spec.get("containers") or [] if isinstance(c, dict)]
    others = [c.get("name") for c in (spec.get("initContainers") or []) + (spec.get("ephemeralContainers") or [])
              if isinstance(c, dict)]
    if wanted:
        if wanted not in containers + others:
            raise errors.bad_request(f"container {wanted} is not valid for pod {name}")
        return wanted
    default = ((pod.get("metadata") or {}).get("annotations") or {}).get("kubectl.kubernetes.io/default-container")
    if default in containers:
        return str(default)
    if len(containers) == 1:
        return str(containers[0])
    raise errors.bad_request(f"a container name must be specified for pod {name}, choose one of: "
                             f"[{' '.join(str(c) for c in containers)}]")


def kubelet_address(node: dict[str, Any]) -> tuple[str, int]:
    status = node.get("status") or {}
    addrs = {a.get("type"): a.get("address") for a in status.get("addresses") or [] if isinstance(a, dict)}
    host = addrs.get("InternalIP") or addrs.get("ExternalIP") or addrs.get("Hostname")
    name = (node.get("metadata") or {}).get("name", "")
    if not host:
        raise ApiError(503, "ServiceUnavailable", f'node "{name}" has no address in status.addresses: is its '
                                                  "kubelet running?")
    endpoint = (status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}
    port = endpoint.get("Port") or DEFAULT_KUBELET_PORT
    return str(host), int(port)


async def proxy_to_kubelet(server: Any, request: web.Request, info: Any, kind: Kind,
                           tls: ssl.SSLContext) -> web.StreamResponse:
    if kind is not kinds.PODS or info.subresource not in ("log", "exec", "attach", "portforward"):
        raise ApiError(404, "NotFound", f"the server could not find the requested resource "
                                        f"({info.resource}/{info.subresource})")
    entry = await server.registry.get(kinds.PODS, info.namespace, info.name)
    pod = entry.obj
    if info.subresource == "portforward":
        _check_port_forward(request)
        container = ""
    else:
        container = pick_container(pod, request.query.get("container"))
    node_name = (pod.get("spec") or {}).get("nodeName")
    if not node_name:
        raise errors.bad_request(f"pod {info.name} does not have a host assigned")
    node = (await server.registry.get(kinds.NODES, None, node_name)).obj
    host, port = kubelet_address(node)
    if info.subresource == "portforward":
        # upstream's kubelet path; the pod's UID pins the forward to this incarnation of the pod
        uid = (pod.get("metadata") or {}).get("uid", "")
        path = f"/portForward/{info.namespace}/{info.name}" + (f"/{uid}" if uid else "")
        return await _splice(request, node_name, host, port, path, list(request.query.items()), tls)
    verb = "containerLogs" if info.subresource == "log" else info.subresource  # exec, attach
    query = [(k, v) for k, v in request.query.items() if k != "container"]
    path = f"/{verb}/{info.namespace}/{info.name}/{container}"
    if info.subresource in ("exec", "attach") and request.headers.get("Upgrade"):
        return await _splice(request, node_name, host, port, path, query, tls)
    return await _forward(request, node_name, host, port, path, query, tls)


# kubectl's WebSocket subprotocols that carry SPDY inside (client-go's tunneling dialer).
TUNNELING_PREFIX = "SPDY/3.1+"


def _check_port_forward(request: web.Request) -> None:
    """Refuse what we cannot proxy before dialing the kubelet: a plain request (upstream's kubelet
    answers it with 400 too) and a WebSocket tunnelling SPDY, which makes kubectl fall back to SPDY."""
    upgrade = request.headers.get("Upgrade", "").lower()
    if not upgrade:
        raise errors.bad_request("pods/portforward needs an upgraded connection (SPDY/3.1 or WebSocket): "
                                 "use kubectl port-forward")
    if upgrade == "websocket":
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        if offered and all(p.startswith(TUNNELING_PREFIX) for p in offered):
            raise errors.bad_request(f"pods/portforward: WebSocket tunnelling of SPDY ({', '.join(offered)}) is "
                                     "not served by this apiserver; retry with an SPDY/3.1 upgrade (kubectl falls "
                                     "back on its own)")


async def _dial(node: str, host: str, port: int,
                tls: ssl.SSLContext) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TLS connection to the node's kubelet, checked to be that node's before a byte is sent."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=tls), 10)
    except ssl.SSLError as e:
        raise _tls_error(host, port, e) from None
    except (OSError, TimeoutError) as e:
        raise ApiError(503, "ServiceUnavailable", f"error dialing the kubelet at {host}:{port}: {e}") from None
    try:
        check_kubelet_identity(writer.get_extra_info("peercert"), node, host, port)
    except ApiError:
        writer.close()
        raise
    return reader, writer


async def _forward(request: web.Request, node: str, host: str, port: int, path: str, query: list[tuple[str, str]],
                   tls: ssl.SSLContext) -> web.StreamResponse:
    """A plain request (logs, one-shot exec, a non-upgraded attach the kubelet refuses): stream the
    kubelet's answer back. HTTP/1.0, so the body ends when the kubelet closes the connection."""
    from urllib.parse import urlencode

    reader, writer = await _dial(node, host, port, tls)
    try:
        target = path + (f"?{urlencode(query)}" if query else "")
        writer.write(f"{request.method} {target} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
        await writer.drain()
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError) as e:
            raise ApiError(503, "ServiceUnavailable", f"the kubelet at {host}:{port} sent no answer: {e}") from None
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            raise ApiError(502, "BadGateway", f"the kubelet at {host}:{port} answered {lines[0]!r}") from None
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        if status >= 400:
            text = (await reader.read(64 * 1024)).decode("utf-8", "replace").strip()
            code = status if status < 500 else 502
            reason = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}.get(
                code, "ServiceUnavailable" if code >= 500 else "BadRequest")
            raise ApiError(code, reason, text or f"kubelet at {host}:{port} answered {status}")
        resp = web.StreamResponse(status=status, headers={"Content-Type": headers.get("content-type", "text/plain")})
        await resp.prepare(request)
        try:
            while chunk := await reader.read(65536):
                await resp.write(chunk)
        except (ConnectionResetError, asyncio.CancelledError):
            return resp
        await resp.write_eof()
        return resp
    finally:
        writer.close()


async def _splice(request: web.Request, node: str, host: str, port: int, path: str, query: list[tuple[str, str]],
                  tls: ssl.SSLContext) -> web.StreamResponse:
    """An upgrade (exec, attach or port forward, over WebSocket or SPDY): re-send the head, then copy bytes
    both ways."""
    from urllib.parse import urlencode

    reader, writer = await _dial(node, host, port, tls)
    target = path + (f"?{urlencode(query)}" if query else "")
    head = [f"{request.method} {target} HTTP/1.1", f"Host: {host}:{port}"]
    head += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS]
    try:
        return await splice_upgrade(request, reader, writer, head)
    except ConnectionError as e:
        raise errors.bad_request(str(e)) from None
