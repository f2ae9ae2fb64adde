"""Garbage collection by ownerReferences (pkg/controller/garbagecollector, simplified graph).

An object whose owners are all gone is deleted (background propagation: the apiserver removed the
owner at once, we remove its dependents, and theirs in turn). An owner being deleted with the
foregroundDeletion finalizer has its dependents deleted first (foreground too) and loses the
finalizer when no blocking dependent is left; with the orphan finalizer its dependents lose their
ownerReference to it and then the finalizer is removed. "Gone" is always confirmed with a live GET
(owner name and uid), because a dependent can be seen before its owner reaches our cache.
"""

from __future__ import annotations

import logging
from typing import Any

from nodeagent.client.errors import ApiError, NotFound
from nodeagent.client.informer import Informer
from nodeagent.controllers.base import Context, Controller
from nodeagent.controllers.objects import deep, is_deleting, meta, name_of, namespace_of, uid_of
from nodeagent.machinery.kinds import (
    CONFIGMAPS,
    CONTROLLERREVISIONS,
    DAEMONSETS,
    DEPLOYMENTS,
    ENDPOINTSLICES,
    JOBS,
    PODS,
    REPLICASETS,
    SECRETS,
    SERVICES,
    Kind,
    by_kind,
)

log = logging.getLogger(__name__)

Obj = dict[str, Any]
TRACKED: tuple[Kind, ...] = (PODS, REPLICASETS, DEPLOYMENTS, DAEMONSETS, JOBS, CONTROLLERREVISIONS,
                             ENDPOINTSLICES, SERVICES, CONFIGMAPS, SECRETS)
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"


def _key(kind: Kind, obj: Obj) -> str:
    return f"{kind.plural}|{namespace_of(obj)}|{name_of(obj)}"


class GarbageCollector(Controller):
    name = "garbagecollector"
    workers = 2

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.kinds = {k.plural: k for k in TRACKED}
        self.by_uid: dict[str, str] = {}  # uid -> key
        self.dependents: dict[str, set[str]] = {}  # owner uid -> keys of dependents
        self.informers: dict[str, Informer] = {}
        for kind in TRACKED:
            inf = ctx.informers.get(kind)
            self.informers[kind.plural] = inf
            self._watch(kind, inf)

    def _watch(self, kind: Kind, inf: Informer) -> None:
        def on_add(o: Obj) -> None:
            self._upsert(kind, o)

        def on_update(_o: Obj, n: Obj) -> None:
            self._upsert(kind, n)

        def on_delete(o: Obj) -> None:
            self._deleted(kind, o)

        inf.add_handlers(on_add=on_add, on_update=on_update, on_delete=on_delete)

    # -- the graph --------------------------------------------------------------------------------

    def _upsert(self, kind: Kind, obj: Obj) -> None:
        key = _key(kind, obj)
        self.by_uid[uid_of(obj)] = key
        for ref in meta(obj).get("ownerReferences") or []:
            self.dependents.setdefault(str(ref.get("uid")), set()).add(key)
        finalizers = meta(obj).get("finalizers") or []
        if meta(obj).get("ownerReferences") or (is_deleting(obj) and (FOREGROUND in finalizers or ORPHAN in finalizers)):
            self.queue.add(key)

    def _deleted(self, kind: Kind, obj: Obj) -> None:
        uid = uid_of(obj)
        self.by_uid.pop(uid, None)
        for ref in meta(obj).get("ownerReferences") or []:
            deps = self.dependents.get(str(ref.get("uid")))
            if deps:
                deps.discard(_key(kind, obj))
                # an owner waiting in foreground for this dependent may now finish
                owner_key = self.by_uid.get(str(ref.get("uid")))
                if owner_key:
                    self.queue.add(owner_key)
        for dep in self.dependents.pop(uid, set()):
            self.queue.add(dep)

    def _lookup(self, key: str) -> tuple[Kind, Obj | None]:
        plural, ns, name = key.split("|", 2)
        kind = self.kinds[plural]
        return kind, self.informers[plural].get(f"{ns}/{name}" if ns else name)

    def _dependents_of(self, owner: Obj) -> list[tuple[Kind, Obj]]:
        out = []
        uid = uid_of(owner)
        for key in list(self.dependents.get(uid, ())):
            kind, obj = self._lookup(key)
            if obj is not None and any(r.get("uid") == uid for r in meta(obj).get("ownerReferences") or []):
                out.append((kind, obj))
        return out

    async def _owner_exists(self, obj: Obj, ref: Obj) -> tuple[bool, Obj | None]:
        """Does the referenced owner exist (same uid)? Confirmed against the apiserver when in doubt."""
        uid = str(ref.get("uid"))
        if uid in self.by_uid:
            _, cached = self._lookup(self.by_uid[uid])
            if cached is not None:
                return True, cached
        kind = by_kind(str(ref.get("apiVersion", "")), str(ref.get("kind", "")))
        if kind is None:
            return True, None  # a kind we do not serve: never delete on a guess
        try:
            live = await self.client.get(kind, str(ref.get("name")), namespace_of(obj) if kind.namespaced else None)
        except NotFound:
            return False, None
        return uid_of(live) == uid, live

    # -- reconcile --------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        kind, obj = self._lookup(key)
        if obj is None:
            return
        finalizers = list(meta(obj).get("finalizers") or [])
        if is_deleting(obj) and ORPHAN in finalizers:
            await self._orphan_dependents(kind, obj)
            return
        if is_deleting(obj) and FOREGROUND in finalizers:
            await self._delete_dependents_first(kind, obj)
            return
        refs = list(meta(obj).get("ownerReferences") or [])
        if not refs or is_deleting(obj):
            return
        absent, waiting_foreground = [], False
        for ref in refs:
            exists, owner = await self._owner_exists(obj, ref)
            if not exists:
                absent.append(ref)
            elif owner is not None and is_deleting(owner) and FOREGROUND in (meta(owner).get("finalizers") or []) \
                    and ref.get("blockOwnerDeletion"):
                waiting_foreground = True
        if absent and len(absent) == len(refs):
            log.info("deleting dependent of a deleted owner object=%s owners=%s", key,
                     ",".join(f"{r.get('kind')}/{r.get('name')}" for r in refs))
            await self._delete(kind, obj, "Foreground" if waiting_foreground else "Background")
        elif absent:
            body = deep(obj)
            gone = {r.get("uid") for r in absent}
            body["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") not in gone]
            await self.client.update(kind, body)
        elif waiting_foreground:
            await self._delete(kind, obj, "Foreground")

    async def _delete(self, kind: Kind, obj: Obj, policy: str) -> None:
        try:
            await self.client.delete(kind, name_of(obj), namespace=namespace_of(obj) or None,
                                     propagation_policy=policy, preconditions={"uid": uid_of(obj)})
        except NotFound:
            pass

    async def _delete_dependents_first(self, kind: Kind, owner: Obj) -> None:
        blocking = 0
        for dkind, dep in self._dependents_of(owner):
            ref = next(r for r in meta(dep).get("ownerReferences") or [] if r.get("uid") == uid_of(owner))
            if ref.get("blockOwnerDeletion"):
                blocking += 1
            if not is_deleting(dep):
                await self._delete(dkind, dep, "Foreground")
        if blocking == 0:
            await self._remove_finalizer(kind, owner, FOREGROUND)

    async def _orphan_dependents(self, kind: Kind, owner: Obj) -> None:
        uid = uid_of(owner)
        for dkind, dep in self._dependents_of(owner):
            body = deep(dep)
            body["metadata"]["ownerReferences"] = [
                r for r in meta(dep).get("ownerReferences") or [] if r.get("uid") != uid]
            try:
                await self.client.update(dkind, body)
            except NotFound:
                pass
        await self._remove_finalizer(kind, owner, ORPHAN)

    async def _remove_finalizer(self, kind: Kind, obj: Obj, finalizer: str) -> None:
        body = deep(obj)
        body["metadata"]["finalizers"] = [f for f in meta(obj).get("finalizers") or [] if f != finalizer]
        try:
            await self.client.update(kind, body)
        except NotFound:
            return
        except ApiError:
            raise
        log.info("removed finalizer object=%s/%s finalizer=%s", kind.plural, name_of(obj), finalizer)
