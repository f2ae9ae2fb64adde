"""The apiserver's own control loops, on an injected clock.

- System namespaces and the `kubernetes` Service, created at start (upstream's bootstrap
  controllers, pkg/controlplane/controller/systemnamespaces and kubernetesservice), and that
  Service's Endpoints and EndpointSlice kept pointing at the advertise address (the endpoint
  reconciler): repaired as soon as another writer changes them, and re-checked every
  `endpoint_interval` for writes another apiserver made.
- NamespaceFinalizer: empties a Terminating namespace, then removes it (upstream's namespace
  controller, kept here since the apiserver owns storage). Woken by the registry's write
  observer when a namespace is marked or an object in a Terminating one is removed, with a slow
  resync for writes that another apiserver made.
- EventExpiry: deletes events older than --event-ttl (etcd leases do this upstream).

Every wait is on the clock (nodeagent.clock.SleepingClock), so unit tests advance a FakeClock
instead of sleeping.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from nodeagent.api import errors
from nodeagent.api.registry.options import DeleteOptions, copy_obj, resource_key
from nodeagent.api.store import KeyNotFound, RevisionConflict
from nodeagent.clock import SleepingClock
from nodeagent.machinery import kinds
from nodeagent.machinery.kinds import Kind

if TYPE_CHECKING:
    from nodeagent.api.registry.registry import Registry

log = logging.getLogger(__name__)
Obj = dict[str, Any]

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


async def ensure_system_namespaces(reg: Registry) -> None:
    for ns in SYSTEM_NAMESPACES:
        await reg.ensure_namespace(ns)


async def ensure_kubernetes_service(reg: Registry, secure_port: int) -> None:
    if await reg.store.get("services", "default", "kubernetes") is None:
        await reg.create(kinds.SERVICES, "default", {
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": reg.cluster_ips.first,
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": secure_port}]},
        }, allow_reserved=True)


async def reconcile_kubernetes_endpoints(reg: Registry, ip: str, port: int) -> None:
    """The `kubernetes` Service's endpoints point at the advertise address (upstream's endpoint
    reconciler), so pods reach the apiserver at 10.96.0.1:443."""
    ep = {"metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
          "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}
    es = {"metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes",
                                                        "endpointslice.kubernetes.io/managed-by":
                                                            "endpointslice-controller.k8s.io"}},
          "addressType": "IPv4",
          "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
          "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}
    for kind, body in ((kinds.ENDPOINTS, ep), (kinds.ENDPOINTSLICES, es)):
        cur = await reg.store.get(resource_key(kind), "default", "kubernetes")
        if cur is None:
            await reg.create(kind, "default", body)
        else:
            new = copy_obj(cur)
            for k, v in body.items():
                if k != "metadata":
                    new[k] = v
            if new != cur.obj:
                await reg.update(kind, "default", "kubernetes", new)


async def _wait(wake: asyncio.Event, clock: SleepingClock, seconds: float) -> None:
    """Until `wake` is set or `seconds` have passed on the clock."""
    waiter = asyncio.ensure_future(wake.wait())
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        sleeper.cancel()


async def _forever(name: str, clock: SleepingClock, step: Callable[[], Awaitable[None]]) -> None:
    """Run `step` again and again; an error is logged and the next round tries again."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("msg=\"%s failed\"", name)
            await clock.sleep(1.0)  # a persistent error must not spin


class NamespaceFinalizer:
    def __init__(self, reg: Registry, clock: SleepingClock, resync: float = 30.0) -> None:
        self.reg = reg
        self.clock = clock
        self.resync = resync
        self._wake = asyncio.Event()
        self._terminating: set[str] = set()

    def observe(self, kind: Kind, type_: str, obj: Obj) -> None:
        """Called after every write the registry makes: wake up when there may be work."""
        meta = obj.get("metadata") or {}
        if kind is kinds.NAMESPACES:
            if type_ == "DELETED":
                self._terminating.discard(meta.get("name", ""))
            elif meta.get("deletionTimestamp"):
                self._terminating.add(meta.get("name", ""))
                self._wake.set()
        elif type_ == "DELETED" and self._terminating and meta.get("namespace") in self._terminating:
            self._wake.set()

    async def run(self) -> None:
        async def step() -> None:
            self._wake.clear()  # a wake-up during the pass stays set and starts the next one at once
            await self.finalize()
            await _wait(self._wake, self.clock, self.resync)

        await _forever("namespace finalizer", self.clock, step)

    async def finalize(self) -> None:
        """One pass over the Terminating namespaces: delete what is in them, remove the empty ones."""
        nss, _ = await self.reg.store.list("namespaces", "")
        self._terminating = {ns.name for ns in nss if (ns.obj.get("metadata") or {}).get("deletionTimestamp")}
        for name in sorted(self._terminating):
            if await self._empty(name):
                try:
                    cur = await self.reg.store.get("namespaces", "", name)
                    if cur is not None:
                        await self.reg.store.delete("namespaces", "", name, cur.rev)
                except (RevisionConflict, KeyNotFound):
                    pass
                self._terminating.discard(name)
                log.info("msg=\"namespace removed\" namespace=%s", name)

    async def _empty(self, namespace: str) -> bool:
        remaining = 0
        for kind in self.reg.kinds():
            if not kind.namespaced:
                continue
            items, _ = await self.reg.store.list(resource_key(kind), namespace)
            for e in items:
                remaining += 1
                if not (e.obj.get("metadata") or {}).get("deletionTimestamp"):
                    try:
                        await self.reg.delete(kind, namespace, e.name, DeleteOptions())
                    except errors.ApiError:
                        pass
        return remaining == 0


class EventExpiry:
    def __init__(self, reg: Registry, clock: SleepingClock, ttl: float = 3600.0) -> None:
        self.reg = reg
        self.clock = clock
        self.ttl = ttl  # upstream --event-ttl 1h: events are not kept forever

    async def run(self) -> None:
        async def step() -> None:
            await self.clock.sleep(min(60.0, self.ttl))
            n = await self.expire()
            if n:
                log.info("msg=\"expired events\" count=%d ttl=%s", n, self.ttl)

        await _forever("event expiry", self.clock, step)

    async def expire(self, now: datetime.datetime | None = None) -> int:
        """Delete events not updated for ttl seconds."""
        now = now or datetime.datetime.fromtimestamp(self.clock.now(), datetime.UTC)
        cutoff = (now - datetime.timedelta(seconds=self.ttl)).strftime("%Y-%m-%dT%H:%M:%SZ")
        events, _ = await self.reg.store.list("events", None)
        n = 0
        for e in events:
            o = e.obj
            last = o.get("lastTimestamp") or o.get("eventTime") or (o.get("metadata") or {}).get("creationTimestamp")
            # RFC 3339 UTC timestamps compare as strings (second precision is enough here).
            if isinstance(last, str) and last[:19] < cutoff[:19]:
                try:
                    await self.reg.store.delete("events", e.namespace, e.name, e.rev)
                    n += 1
                except (RevisionConflict, KeyNotFound):
                    pass
        return n


class Loops:
    """The loops of one Registry, started with it and cancelled at close."""

    def __init__(self, reg: Registry, clock: SleepingClock) -> None:
        self.reg = reg
        self.clock = clock
        self.namespaces = NamespaceFinalizer(reg, clock)
        self.events = EventExpiry(reg, clock)
        self.endpoint_interval = 10.0  # upstream's --endpoint-reconciler interval
        self._endpoints_wake = asyncio.Event()
        self._reconciling = False  # its own writes wake nobody
        self._tasks: list[asyncio.Task[None]] = []
        reg.observers.append(self.namespaces.observe)
        reg.observers.append(self._observe_endpoints)

    def _observe_endpoints(self, kind: Kind, type_: str, obj: Obj) -> None:
        """Someone changed the `kubernetes` Service's endpoints: repair them now, not at the next tick."""
        if kind in (kinds.ENDPOINTS, kinds.ENDPOINTSLICES) and not self._reconciling:
            meta = obj.get("metadata") or {}
            if meta.get("name") == "kubernetes" and meta.get("namespace") == "default":
                self._endpoints_wake.set()

    async def bootstrap(self, advertise: tuple[str, int] | None, secure_port: int) -> None:
        await ensure_system_namespaces(self.reg)
        await ensure_kubernetes_service(self.reg, secure_port)
        if advertise:
            await reconcile_kubernetes_endpoints(self.reg, *advertise)

    def start(self, advertise: tuple[str, int] | None = None) -> None:
        self._tasks.append(asyncio.create_task(self.namespaces.run()))
        if self.events.ttl > 0:
            self._tasks.append(asyncio.create_task(self.events.run()))
        if advertise:
            self._tasks.append(asyncio.create_task(self._endpoints(*advertise)))

    async def _endpoints(self, ip: str, port: int) -> None:
        async def step() -> None:
            await _wait(self._endpoints_wake, self.clock, self.endpoint_interval)
            self._endpoints_wake.clear()
            self._reconciling = True
            try:
                await reconcile_kubernetes_endpoints(self.reg, ip, port)  # writes only what differs
            finally:
                self._reconciling = False

        await _forever("kubernetes endpoints reconciler", self.clock, step)

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
