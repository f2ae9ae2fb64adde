"""The Registry: one generic store per kind (each with its strategy from strategies.STRATEGIES),
the Service allocators the strategies share, admission, the write observers and the background
loops. The HTTP layer (server.py, verbs.py) and the unit tests' fake client call it by kind."""

from __future__ import annotations

import builtins
import datetime
from collections.abc import Callable
from typing import Any

from nodeagent.api import errors
from nodeagent.api.admission import Chain
from nodeagent.api.admission.runtimeclass import RuntimeClassAdmission
from nodeagent.api.allocators import ClusterIPAllocator, NodePortAllocator
from nodeagent.api.registry import subresources
from nodeagent.api.registry.generic import GenericStore, Mutate, Observer
from nodeagent.api.registry.loops import Loops
from nodeagent.api.registry.options import DeleteOptions, ListOptions, ListResult, WriteContext
from nodeagent.api.registry.strategies import STRATEGIES
from nodeagent.api.registry.strategy import Shared, Strategy
from nodeagent.api.registry.watch import WatchSession
from nodeagent.api.store import Entry, Store
from nodeagent.clock import RealClock, SleepingClock
from nodeagent.machinery.kinds import NAMESPACES, PODS, RUNTIME_CLASSES, Kind

Obj = dict[str, Any]


class Registry:
    def __init__(self, store: Store, *, service_cidr: str = "10.96.0.0/12",
                 node_port_range: str = "30000-32767", clock: SleepingClock | None = None) -> None:
        self.store = store
        self.shared = Shared(ClusterIPAllocator(service_cidr), NodePortAllocator(node_port_range))
        # The plugins upstream enables by default that act on what we store (admission/).
        self.admission = Chain([RuntimeClassAdmission(self._runtime_class)])
        self.observers: list[Observer] = []
        self._stores = {kind: GenericStore(store, kind, cls(kind, self.shared), self.admission, self.observers)
                        for kind, cls in STRATEGIES.items()}
        self.loops = Loops(self, clock or RealClock())

    # --- what is served ----------------------------------------------------------------------
    @property
    def cluster_ips(self) -> ClusterIPAllocator:
        return self.shared.cluster_ips

    @property
    def node_ports(self) -> NodePortAllocator:
        return self.shared.node_ports

    @property
    def default_toleration_seconds(self) -> dict[str, int]:
        return self.shared.default_toleration_seconds

    @property
    def event_ttl(self) -> float:
        return self.loops.events.ttl

    @event_ttl.setter
    def event_ttl(self, seconds: float) -> None:
        self.loops.events.ttl = seconds

    def serves(self, kind: Kind) -> bool:
        return kind in self._stores

    def kinds(self) -> builtins.list[Kind]:
        return list(self._stores)

    def for_kind(self, kind: Kind) -> GenericStore:
        try:
            return self._stores[kind]
        except KeyError:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource",
                                  group=kind.group, kind=kind.plural) from None

    def strategy(self, kind: Kind) -> Strategy:
        return self.for_kind(kind).strategy

    # --- start-up ----------------------------------------------------------------------------
    async def start(self, *, advertise: tuple[str, int] | None = None, secure_port: int = 6443) -> None:
        for gs in self._stores.values():
            if type(gs.strategy).restore is not Strategy.restore:
                entries, _ = await self.store.list(gs.resource, None)
                await gs.strategy.restore(e.obj for e in entries)
        await self.loops.bootstrap(advertise, secure_port)
        self.loops.start(advertise)

    async def close(self) -> None:
        await self.loops.stop()

    async def _runtime_class(self, name: str) -> Obj | None:
        e = await self.store.get(self.for_kind(RUNTIME_CLASSES).resource, "", name)
        return e.obj if e is not None else None

    async def ensure_namespace(self, name: str) -> None:
        """Create namespace `name` unless it exists."""
        if await self.store.get("namespaces", "", name) is None:
            try:
                await self.create(NAMESPACES, None, {"metadata": {"name": name}})
            except errors.ApiError as e:
                if e.reason != "AlreadyExists":
                    raise

    async def expire_events(self, now: datetime.datetime | None = None) -> int:
        return await self.loops.events.expire(now)

    # --- verbs -------------------------------------------------------------------------------
    async def get(self, kind: Kind, namespace: str | None, name: str) -> Entry:
        return await self.for_kind(kind).get(namespace, name)

    async def list(self, kind: Kind, namespace: str | None, opts: ListOptions) -> ListResult:
        return await self.for_kind(kind).list(namespace, opts)

    async def watch(self, kind: Kind, namespace: str | None, opts: ListOptions, **kw: Any) -> WatchSession:
        return await self.for_kind(kind).watch(namespace, opts, **kw)

    async def create(self, kind: Kind, namespace: str | None, obj: Obj, *, dry_run: bool = False,
                     allow_reserved: bool = False, user: Any = None) -> Obj:
        return await self.for_kind(kind).create(namespace, obj, WriteContext(dry_run, allow_reserved, user))

    async def guaranteed_update(self, kind: Kind, namespace: str | None, name: str, mutate: Mutate, *,
                                precondition_rv: str | None = None, subresource: str | None = None,
                                dry_run: bool = False, create_obj: Obj | None = None,
                                user: Any = None) -> tuple[Obj, bool]:
        ctx = WriteContext(dry_run, user=user, subresource=subresource)
        return await self.for_kind(kind).guaranteed_update(namespace, name, mutate, ctx,
                                                           precondition_rv=precondition_rv, create_obj=create_obj)

    async def update(self, kind: Kind, namespace: str | None, name: str, body: Obj, *,
                     subresource: str | None = None, dry_run: bool = False, user: Any = None) -> tuple[Obj, bool]:
        ctx = WriteContext(dry_run, user=user, subresource=subresource)
        return await self.for_kind(kind).update(namespace, name, body, ctx)

    async def patch(self, kind: Kind, namespace: str | None, name: str, patch_type: str, patch: Any, *,
                    subresource: str | None = None, dry_run: bool = False, user: Any = None) -> Obj:
        ctx = WriteContext(dry_run, user=user, subresource=subresource)
        return await self.for_kind(kind).patch(namespace, name, patch_type, patch, ctx)

    async def server_side_apply(self, kind: Kind, namespace: str | None, name: str, config: Obj, manager: str, *,
                                dry_run: bool = False, user: Any = None) -> tuple[Obj, bool]:
        return await self.for_kind(kind).server_side_apply(namespace, name, config, manager,
                                                           WriteContext(dry_run, user=user))

    async def delete(self, kind: Kind, namespace: str | None, name: str, opts: DeleteOptions, *,
                     user: Any = None) -> tuple[Obj, bool]:
        return await self.for_kind(kind).delete(namespace, name, opts, WriteContext(opts.dry_run, user=user))

    async def delete_collection(self, kind: Kind, namespace: str | None, opts: ListOptions,
                                dopts: DeleteOptions, user: Any = None) -> builtins.list[Obj]:
        return await self.for_kind(kind).delete_collection(namespace, opts, dopts, user)

    # --- subresources ------------------------------------------------------------------------
    def to_scale(self, obj: Obj) -> Obj:
        return subresources.to_scale(obj)

    async def get_scale(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        return await subresources.get_scale(self.for_kind(kind), namespace, name)

    async def update_scale(self, kind: Kind, namespace: str | None, name: str, change: Callable[[Obj], Obj], *,
                           dry_run: bool = False, precondition_rv: str | None = None, user: Any = None) -> Obj:
        return await subresources.update_scale(self.for_kind(kind), namespace, name, change,
                                               WriteContext(dry_run, user=user), precondition_rv)

    async def bind(self, namespace: str, name: str, binding: Obj) -> Obj:
        return await subresources.bind(self.for_kind(PODS), namespace, name, binding)

    async def evict(self, namespace: str | None, name: str, *, dry_run: bool = False) -> Obj:
        return await subresources.evict(self.for_kind(PODS), namespace, name, dry_run)
