"""Wiring of the DNS add-on: informers -> index -> resolver -> listeners, metrics, self-registration.

The listeners open only after both informers have synced: answering from an empty cache would hand
out NXDOMAINs that clients then cache for the negative TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from nodeagent.client import Informer
from nodeagent.client.interface import ClientProtocol
from nodeagent.dns.index import ClusterIndex
from nodeagent.dns.metrics import Metrics, serve_http
from nodeagent.dns.register import Registrar, Registration, remove_slice
from nodeagent.dns.resolver import Resolver
from nodeagent.dns.server import DnsHandler, DnsServer
from nodeagent.dns.upstream import Upstream, parse_upstream
from nodeagent.machinery.kinds import ENDPOINTSLICES, SERVICES

log = logging.getLogger(__name__)


@dataclass
class DnsOptions:
    bind: str = "0.0.0.0"
    port: int = 53
    cluster_domain: str = "cluster.local"
    upstream: str | None = None
    ttl: int = 30
    service_ip: str = "10.96.0.10"
    advertise_address: str | None = None  # None: do not register the kube-dns Service
    metrics_port: int = 9153              # 0: no metrics/health endpoint
    lameduck: float = 0.0                 # seconds to keep answering after leaving the Service
    udp_batch: bool = True                # recvmmsg/sendmmsg (udpbatch.py); False: asyncio's transport


class DnsApp:
    def __init__(self, client: ClientProtocol, opts: DnsOptions) -> None:
        self.client = client
        self.opts = opts
        self.index = ClusterIndex()
        self.resolver = Resolver(self.index, opts.cluster_domain, opts.ttl, opts.service_ip)
        self.metrics = Metrics(f"dns://{opts.bind}:{opts.port}")
        upstream = Upstream(*parse_upstream(opts.upstream)) if opts.upstream else None
        self.handler = DnsHandler(self.resolver, self.metrics, upstream)
        self.server = DnsServer(self.handler, opts.bind, opts.port, batch=opts.udp_batch)
        self.services = Informer(client, SERVICES)
        self.slices = Informer(client, ENDPOINTSLICES)
        self.services.add_handlers(self.index.service_added, self.index.service_updated, self.index.service_deleted)
        self.slices.add_handlers(self.index.slice_added, self.index.slice_updated, self.index.slice_deleted)
        self.registrar: Registrar | None = None
        self.listening = False
        self.leaving = False
        self._tasks: list[asyncio.Task[None]] = []
        self._stop_http: Any = None

    @property
    def port(self) -> int:
        return self.server.port

    def synced(self) -> bool:
        return self.services.has_synced and self.slices.has_synced

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()  # no informer task or listener outlives a failed start
            raise

    async def _start(self) -> None:
        if self.opts.metrics_port:
            self._stop_http = await serve_http(self.metrics, self.opts.bind, self.opts.metrics_port,
                                               healthy=lambda: True,
                                               ready=lambda: self.listening and not self.leaving and self.synced())
        self._tasks += [asyncio.create_task(self.services.run(), name="informer:services"),
                        asyncio.create_task(self.slices.run(), name="informer:endpointslices")]
        while True:
            try:
                await self.services.wait_synced(timeout=10)
                await self.slices.wait_synced(timeout=10)
                break
            except TimeoutError:
                log.warning("waiting for services and endpointslices to sync before answering")
        await self.server.start()
        self.metrics.server = f"dns://{self.opts.bind}:{self.server.port}"  # the bound port, if --port 0
        self.listening = True
        if self.opts.advertise_address:
            # Registered with the port actually bound (--port 0 picks one, in tests).
            reg = Registration(self.opts.service_ip, self.opts.advertise_address, self.server.port,
                               self.opts.metrics_port)
            self.registrar = Registrar(self.client, reg)
            for inf in (self.services, self.slices):
                inf.add_handlers(self.registrar.on_add, self.registrar.on_update, self.registrar.on_delete)
            self._tasks.append(asyncio.create_task(self.registrar.run(), name="registrar"))

    async def stop(self) -> None:
        """Leave the Service first, then stop answering: queries the proxy still sends here while it
        moves to the other endpoints get answers for `lameduck` seconds (CoreDNS's health lameduck)."""
        self.leaving = True
        if self.registrar is not None and self.registrar.registered.is_set():
            self.registrar.registered.clear()
            for t in [t for t in self._tasks if t.get_name() == "registrar"]:
                t.cancel()  # it would put the slice back
            try:
                await asyncio.wait_for(remove_slice(self.client, self.registrar.reg), 5)
            except Exception as e:  # shutting down: say it, don't fail the exit
                log.warning("could not delete endpointslice=%s error=%s", self.registrar.reg.slice_name, e)
            if self.opts.lameduck > 0 and self.listening:
                log.info("lameduck seconds=%.1f: still answering while the proxy moves away", self.opts.lameduck)
                await asyncio.sleep(self.opts.lameduck)
        self.listening = False
        self.services.stop()
        self.slices.stop()
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.server.close()
        if self._stop_http is not None:
            stop_http, self._stop_http = self._stop_http, None
            await stop_http()
