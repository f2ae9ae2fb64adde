"""pods/log, pods/exec, pods/attach and pods/portforward: forwarded to the kubelet of the pod's
node, as upstream's apiserver does.

The target is https://<node InternalIP>:<status.daemonEndpoints.kubeletEndpoint.Port>/containerLogs/
NS/POD/CONTAINER, /exec/NS/POD/CONTAINER, /attach/NS/POD/CONTAINER or /portForward/NS/POD/UID. The
apiserver authenticates to the kubelet with its own token (user system:apiserver in tokens.csv);
the kubelet checks it with a TokenReview. Like kube-apiserver without
--kubelet-certificate-authority, the kubelet's self-signed serving certificate is not verified.

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

import aiohttp
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


def _insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


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


async def proxy_to_kubelet(server: Any, request: web.Request, info: Any, kind: Kind, token: str) -> web.StreamResponse:
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
        return await _splice(request, host, port, path, list(request.query.items()), token)
    verb = "containerLogs" if info.subresource == "log" else info.subresource  # exec, attach
    query = [(k, v) for k, v in request.query.items() if k != "container"]
    path = f"/{verb}/{info.namespace}/{info.name}/{container}"
    if info.subresource in ("exec", "attach") and request.headers.get("Upgrade"):
        return await _splice(request, host, port, path, query, token)
    return await _forward(request, host, port, path, query, token)


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


async def _forward(request: web.Request, host: str, port: int, path: str, query: list[tuple[str, str]],
                   token: str) -> web.StreamResponse:
    """A plain request (logs, one-shot exec, a non-upgraded attach the kubelet refuses): stream the kubelet's answer back."""
    url = f"https://{host}:{port}{path}"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as s, \
                s.request(request.method, url, params=query, ssl=_insecure_context(),
                          headers={"Authorization": f"Bearer {token}"}) as r:
            if r.status >= 400:
                text = (await r.text(errors="replace")).strip()
                code = r.status if r.status < 500 else 502
                reason = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}.get(
                    code, "ServiceUnavailable" if code >= 500 else "BadRequest")
                raise ApiError(code, reason, text or f"kubelet at {host}:{port} answered {r.status}")
            resp = web.StreamResponse(status=r.status, headers={
                "Content-Type": r.headers.get("Content-Type", "text/plain")})
            await resp.prepare(request)
            try:
                async for chunk in r.content.iter_any():
                    await resp.write(chunk)
            except (ConnectionResetError, asyncio.CancelledError):
                return resp
            await resp.write_eof()
            return resp
    except aiohttp.ClientError as e:
        raise ApiError(503, "ServiceUnavailable", f"error dialing the kubelet at {host}:{port}: {e}") from None


async def _splice(request: web.Request, host: str, port: int, path: str, query: list[tuple[str, str]],
                  token: str) -> web.StreamResponse:
    """An upgrade (exec, attach or port forward, over WebSocket or SPDY): re-send the head, then copy bytes
    both ways."""
    from urllib.parse import urlencode

    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=_insecure_context()), 10)
    except (OSError, TimeoutError) as e:
        raise ApiError(503, "ServiceUnavailable", f"error dialing the kubelet at {host}:{port}: {e}") from None
    target = path + (f"?{urlencode(query)}" if query else "")
    head = [f"{request.method} {target} HTTP/1.1", f"Host: {host}:{port}", f"Authorization: Bearer {token}"]
    head += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS]
    try:
        return await splice_upgrade(request, reader, writer, head)
    except ConnectionError as e:
        raise errors.bad_request(str(e)) from None
