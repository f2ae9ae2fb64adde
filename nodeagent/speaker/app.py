"""The speaker's loop: Service, EndpointSlice and Node informers -> the addresses this node must
announce (election.py) -> one ARP responder per underlay interface (arp.py) -> an Event on the
Service when this node takes an address over (MetalLB's "nodeAssigned").

API needs (issue 14): get/list/watch services, endpointslices (discovery.k8s.io), nodes;
create/patch events."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Any

from nodeagent.client import EventRecorder, Informer
from nodeagent.client.interface import ClientProtocol
from nodeagent.machinery.kinds import ENDPOINTSLICES, NODES, SERVICES
from nodeagent.speaker.arp import Responder, interface_for
from nodeagent.speaker.election import SERVICE_NAME_LABEL, announcer, lb_addresses, wants_announcement

log = logging.getLogger(__name__)
Obj = dict[str, Any]


@dataclass
class Options:
    node_name: str
    interfaces: tuple[str, ...] = ()   # empty: any interface with a connected network for the address
    load_balancer_class: str | None = None


def local_interfaces() -> dict[str, list[str]]:
    import psutil

    out: dict[str, list[str]] = {}
    for name, addrs in psutil.net_if_addrs().items():
        for a in addrs:
            if a.family == socket.AF_INET and a.netmask and name != "lo":
                prefix = ipaddress.IPv4Network(f"0.0.0.0/{a.netmask}").prefixlen
                out.setdefault(name, []).append(f"{a.address}/{prefix}")
    return out


class Speaker:
    def __init__(self, client: ClientProtocol, opts: Options) -> None:
        self.client = client
        self.opts = opts
        self.recorder = EventRecorder(client, component="nodeagent-speaker", host=opts.node_name)
        self.informers = {k: Informer(client, k) for k in (SERVICES, ENDPOINTSLICES, NODES)}
        for inf in self.informers.values():
            inf.add_handlers(on_add=self._changed, on_update=lambda _o, _n: self._changed(), on_delete=self._changed)
        self.dirty = asyncio.Event()
        self.responders: dict[str, Responder] = {}
        self.announced: dict[str, str] = {}  # address -> ns/name
        self._tasks: list[asyncio.Task[Any]] = []

    def _changed(self, *_: Any) -> None:
        self.dirty.set()

    def desired(self) -> dict[str, tuple[str, Obj]]:
        """address -> (service key, service) that this node announces."""
        slices: dict[str, list[Obj]] = {}
        for s in self.informers[ENDPOINTSLICES].list():
            md = s.get("metadata") or {}
            svc = (md.get("labels") or {}).get(SERVICE_NAME_LABEL)
            if svc:
                slices.setdefault(f"{md.get('namespace')}/{svc}", []).append(s)
        nodes = {n["metadata"]["name"]: n for n in self.informers[NODES].list()}
        out: dict[str, tuple[str, Obj]] = {}
        for svc in self.informers[SERVICES].list():
            if not wants_announcement(svc, self.opts.load_balancer_class):
                continue
            k = f"{svc['metadata'].get('namespace')}/{svc['metadata']['name']}"
            for ip in lb_addresses(svc):
                if announcer(ip, slices.get(k, []), nodes) == self.opts.node_name:
                    out[ip] = (k, svc)
        return out

    def sync(self) -> None:
        want = self.desired()
        ifaces = local_interfaces()
        per_if: dict[str, set[str]] = {}
        for ip in want:
            name = interface_for(ip, {n: c for n, c in ifaces.items()
                                      if not self.opts.interfaces or n in self.opts.interfaces})
            if name is None:
                log.warning("no interface on the network of address=%s: not announced", ip)
                continue
            per_if.setdefault(name, set()).add(ip)
        for name in set(self.responders) - set(per_if):
            self.responders.pop(name).close()
        for name, ips in per_if.items():
            if name not in self.responders:
                self.responders[name] = Responder(name)
            self.responders[name].set_addresses(ips)
        announced = {ip: want[ip][0] for ips in per_if.values() for ip in ips}
        for ip in sorted(set(announced) - set(self.announced)):
            k, svc = want[ip]
            self.recorder.event(svc, "Normal", "nodeAssigned",
                                f'announcing from node "{self.opts.node_name}" with protocol "layer2"')
            log.info("announcing address=%s service=%s", ip, k)
        for ip in sorted(set(self.announced) - set(announced)):
            log.info("stopped announcing address=%s service=%s", ip, self.announced[ip])
        self.announced = announced

    async def start(self, sync_timeout: float = 60.0) -> None:
        for k, inf in self.informers.items():
            self._tasks.append(asyncio.create_task(inf.run(), name=f"informer-{k.plural}"))
        for inf in self.informers.values():
            await inf.wait_synced(sync_timeout)
        self.sync()
        self._tasks.append(asyncio.create_task(self._loop(), name="speaker-sync"))

    async def _loop(self) -> None:
        while True:
            await self.dirty.wait()
            await asyncio.sleep(0.02)
            self.dirty.clear()
            try:
                self.sync()
            except Exception as e:
                log.warning("speaker sync failed error=%s", e)
                await asyncio.sleep(1)
                self.dirty.set()

    async def stop(self) -> None:
        for inf in self.informers.values():
            inf.stop()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for r in self.responders.values():
            r.close()
        self.responders.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.recorder.flush(), 2.0)
