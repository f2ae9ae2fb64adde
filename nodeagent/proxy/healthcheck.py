"""healthCheckNodePort servers (upstream pkg/proxy/healthcheck/service_health.go).

A LoadBalancer Service with externalTrafficPolicy Local gets a healthCheckNodePort. Every proxy
listens on it and answers whether this node has a ready endpoint of the Service, so the cloud load
balancer sends the Service's traffic only to nodes that can serve it without a second hop:

    200 / 503   {"service": {"namespace": N, "name": S}, "localEndpoints": K, "serviceProxyHealthy": B}

200 needs K > 0 and a healthy proxy (stale rules would mislead the balancer). One listener per
Service, on every address by default, or on this node's addresses inside --nodeport-addresses.

Threads: the sync runs in a worker thread and calls `update` (thread-safe, never blocks); the
listeners are opened and closed by a task on the event loop. A port that cannot be bound is
reported and tried again at the next update (upstream: the next sync).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from aiohttp import web

from nodeagent.proxy.backend import ProxyState
from nodeagent.proxy.http import json_response

log = logging.getLogger(__name__)

FAILED_REASON = "FailedToStartServiceHealthcheck"  # upstream's Event reason
ALL_ADDRESSES = "0.0.0.0"  # this proxy is IPv4-only


class EventSink(Protocol):
    """nodeagent.client.EventRecorder's shape (the proxy only needs `event`)."""

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None: ...


class ServiceHealthUpdater(Protocol):
    """What the Proxier calls after each successful sync."""

    def update(self, ports: Mapping[str, int], local_endpoints: Mapping[str, int]) -> None: ...


def local_ready_endpoints(services: Iterable[str], state: ProxyState) -> dict[str, int]:
    """ns/name -> ready endpoints on this node, for each of `services`. Counted by IP across the
    Service's ports (10.0.0.1:80 and :443 are one endpoint), and ready only: a node whose local
    endpoints are all terminating must fail the check, so that the balancer drains it while they
    finish (upstream EndpointsMap.LocalReadyEndpoints)."""
    return {svc: len({e.ip for spn in state.ports_of(svc) for e in state.endpoints.get(spn, ())
                      if e.is_local and e.ready})
            for svc in services}


def local_ipv4_addresses() -> list[str]:
    """IPv4 addresses of the network namespace the calling thread is in (blocking netlink)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return [a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET)]


def addresses_in(cidrs: tuple[str, ...], addresses: list[str]) -> list[str]:
    nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    found = {ipaddress.ip_address(a) for a in addresses if a}
    return [str(a) for a in sorted(found) if any(a in n for n in nets)]


@dataclass
class _Listener:
    service: str  # ns/name
    port: int
    hosts: list[str]
    runner: web.ServerRunner


@dataclass
class _Desired:
    ports: dict[str, int] = field(default_factory=dict)  # ns/name -> healthCheckNodePort
    counts: dict[str, int] = field(default_factory=dict)  # ns/name -> local ready endpoints


class ServiceHealthServer:
    def __init__(self, node_name: str, proxy_healthy: Callable[[], bool], nodeport_addresses: tuple[str, ...] = (),
                 recorder: EventSink | None = None,
                 list_addresses: Callable[[], list[str]] = local_ipv4_addresses) -> None:
        self.node_name = node_name
        self.proxy_healthy = proxy_healthy  # the proxy's own verdict (Health.healthy: no node eligibility)
        self.nodeport_addresses = nodeport_addresses
        self.recorder = recorder
        self.list_addresses = list_addresses
        self._lock = threading.Lock()  # guards _desired and _loop (update() comes from the sync thread)
        self._desired = _Desired()
        self._loop: asyncio.AbstractEventLoop | None = None
        # the rest is touched on the event loop only
        self._listeners: dict[str, _Listener] = {}
        self._task: asyncio.Task[None] | None = None
        self._again = False

    # -- any thread ------------------------------------------------------------------------------
    def update(self, ports: Mapping[str, int], local_endpoints: Mapping[str, int]) -> None:
        """The Services with a healthCheckNodePort and their local ready endpoints, as of the last
        successful sync. Counts take effect at once; listeners follow on the event loop."""
        desired = _Desired(dict(ports), {svc: local_endpoints.get(svc, 0) for svc in ports})
        with self._lock:
            self._desired = desired
            loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing: nothing to serve anymore
                loop.call_soon_threadsafe(self._kick)

    # -- the event loop ---------------------------------------------------------------------------
    async def start(self) -> None:
        with self._lock:
            self._loop = asyncio.get_running_loop()
        self._kick()

    async def settle(self) -> None:
        """Wait until the listeners match the last update (for tests and shutdown)."""
        await asyncio.sleep(0)  # let a kick queued by update() from another thread run first
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def close(self) -> None:
        with self._lock:
            self._loop = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for svc in list(self._listeners):
            await self._close(svc)

    def listening(self) -> dict[str, tuple[int, list[str]]]:
        """ns/name -> (port, addresses) of the open listeners."""
        return {svc: (li.port, li.hosts) for svc, li in self._listeners.items()}

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._reconcile_until_quiet())
        else:
            self._again = True  # picked up when the running pass ends

    async def _reconcile_until_quiet(self) -> None:
        while True:
            self._again = False
            with self._lock:
                wanted = dict(self._desired.ports)
            await self._reconcile(wanted)
            if not self._again:
                return

    async def _reconcile(self, wanted: dict[str, int]) -> None:
        for svc, li in list(self._listeners.items()):
            if wanted.get(svc) != li.port:
                log.info("closing health check service=%s port=%d", svc, li.port)
                await self._close(svc)
        taken = {li.port: svc for svc, li in self._listeners.items()}
        for svc, port in sorted(wanted.items()):
            if svc in self._listeners:
                continue
            if port in taken:  # the apiserver allocates them uniquely; two would be a bug upstream of us
                log.warning("health check port taken service=%s port=%d by=%s", svc, port, taken[port])
                continue
            try:
                self._listeners[svc] = await self._open(svc, port)
            except OSError as e:
                self._report_failure(svc, port, e)
                continue
            taken[port] = svc
            log.info("opened health check service=%s port=%d addresses=%s", svc, port,
                     ",".join(self._listeners[svc].hosts))

    async def _bind_hosts(self) -> list[str]:
        if not self.nodeport_addresses:
            return [ALL_ADDRESSES]
        try:
            addresses = await asyncio.to_thread(self.list_addresses)  # netlink blocks
        except Exception as e:  # as upstream: listening everywhere beats not answering at all
            log.error("listing local addresses failed error=%s; health checks listen on every address", e)
            return [ALL_ADDRESSES]
        hosts = addresses_in(self.nodeport_addresses, addresses)
        if not hosts:
            raise OSError(f"no local address inside --nodeport-addresses {','.join(self.nodeport_addresses)}")
        return hosts

    async def _open(self, svc: str, port: int) -> _Listener:
        hosts = await self._bind_hosts()
        # the low-level server: every method and path gets the same answer, as upstream's handler
        runner = web.ServerRunner(web.Server(partial(self._handle, svc), access_log=None), shutdown_timeout=1.0)
        await runner.setup()
        try:
            for host in hosts:
                await web.TCPSite(runner, host, port).start()
        except BaseException:  # half-open is no use (and blocks the retry): close what was bound
            await runner.cleanup()
            raise
        return _Listener(svc, port, hosts, runner)

    async def _close(self, svc: str) -> None:
        li = self._listeners.pop(svc)
        try:
            await li.runner.cleanup()
        except Exception as e:
            log.warning("closing health check failed service=%s port=%d error=%s", svc, li.port, e)

    def _report_failure(self, svc: str, port: int, err: OSError) -> None:
        msg = f"node {self.node_name} failed to start healthcheck {svc} on port {port}: {err}; retrying at the next sync"
        log.warning("health check listen failed reason=%s service=%s port=%d error=%s", FAILED_REASON, svc, port, err)
        if self.recorder is not None:
            ns, name = svc.split("/", 1)
            ref = {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": ns, "name": name}}
            self.recorder.event(ref, "Warning", FAILED_REASON, msg)

    async def _handle(self, svc: str, _: web.BaseRequest) -> web.Response:
        with self._lock:
            count = self._desired.counts.get(svc, 0)
        healthy = self.proxy_healthy()
        ns, name = svc.split("/", 1)
        body = {"service": {"namespace": ns, "name": name}, "localEndpoints": count, "serviceProxyHealthy": healthy}
        return json_response(200 if count > 0 and healthy else 503, body)
