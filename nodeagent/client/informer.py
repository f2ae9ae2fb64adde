"""Informer: list, then watch from the list's resourceVersion, keep a local cache, call handlers.

Layers as in kopf's watching.py: run() loops forever over list-then-watch; each watch request ends
at the server's timeout and resumes from the last seen resourceVersion (bookmarks keep it fresh);
a 410 Expired relists and turns the difference between the old cache and the new list into
add/update/delete calls, so no handler misses a change. Connection failures back off and retry.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import random
from collections.abc import Callable
from typing import Any, Protocol

from nodeagent.client.errors import ApiError, Expired
from nodeagent.machinery.kinds import Kind

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class WatchingClient(Protocol):
    async def list(self, kind: Kind, namespace: str | None = ..., label_selector: Any = ...,
                   field_selector: str | None = ..., limit: int | None = ...,
                   continue_: str | None = ...) -> dict[str, Any]: ...

    def watch(self, kind: Kind, namespace: str | None = ..., resource_version: str | None = ...,
              label_selector: Any = ..., field_selector: str | None = ...,
              timeout_seconds: int | None = ..., allow_bookmarks: bool = ...) -> Any: ...


def key_of(obj: Obj) -> str:
    """Cache key: "namespace/name" for namespaced objects, "name" otherwise (client-go's MetaNamespaceKey)."""
    md = obj.get("metadata") or {}
    ns = md.get("namespace")
    return f"{ns}/{md['name']}" if ns else md["name"]


class Informer:
    def __init__(self, client: WatchingClient, kind: Kind, namespace: str | None = None,
                 label_selector: str | dict[str, str] | None = None, field_selector: str | None = None,
                 resync_period: float | None = None, watch_timeout: tuple[int, int] = (240, 480)) -> None:
        self.client = client
        self.kind = kind
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self.watch_timeout = watch_timeout
        self._cache: dict[str, Obj] = {}
        self._handlers: list[tuple[Callable[[Obj], Any] | None, Callable[[Obj, Obj], Any] | None,
                                   Callable[[Obj], Any] | None]] = []
        self._synced = asyncio.Event()
        self.resource_version: str | None = None
        self._stopped = False

    # -- handlers and cache -------------------------------------------------------------------

    def add_handlers(self, on_add: Callable[[Obj], Any] | None = None,
                     on_update: Callable[[Obj, Obj], Any] | None = None,
                     on_delete: Callable[[Obj], Any] | None = None) -> None:
        """Handlers are plain callables and must be quick (enqueue work, don't do it). A handler added
        after sync is replayed the current cache as adds."""
        self._handlers.append((on_add, on_update, on_delete))
        if self._synced.is_set() and on_add:
            for obj in list(self._cache.values()):
                self._call(on_add, obj)

    def get(self, key: str) -> Obj | None:
        return self._cache.get(key)

    def list(self) -> list[Obj]:
        return list(self._cache.values())

    def keys(self) -> builtins.list[str]:
        return list(self._cache)

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._synced.wait(), timeout)

    def stop(self) -> None:
        self._stopped = True

    def _call(self, fn: Callable[..., Any], *args: Obj) -> None:
        try:
            res = fn(*args)
            if asyncio.iscoroutine(res):
                asyncio.ensure_future(res)
        except Exception:  # a handler bug must not stop the informer for everyone else
            log.exception("informer handler failed kind=%s key=%s", self.kind.plural, key_of(args[-1]))

    def _emit_add(self, obj: Obj) -> None:
        for on_add, _, _ in self._handlers:
            if on_add:
                self._call(on_add, obj)

    def _emit_update(self, old: Obj, new: Obj) -> None:
        for _, on_update, _ in self._handlers:
            if on_update:
                self._call(on_update, old, new)

    def _emit_delete(self, obj: Obj) -> None:
        for _, _, on_delete in self._handlers:
            if on_delete:
                self._call(on_delete, obj)

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = 0.2
        need_list = True
        last_resync = asyncio.get_running_loop().time()
        while not self._stopped:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                    backoff = 0.2
                    last_resync = asyncio.get_running_loop().time()
                await self._watch_once()
                backoff = 0.2
                if self.resync_period and asyncio.get_running_loop().time() - last_resync > self.resync_period:
                    self._resync()
                    last_resync = asyncio.get_running_loop().time()
            except asyncio.CancelledError:
                raise
            except Expired:
                log.info("watch expired kind=%s rv=%s: relisting", self.kind.plural, self.resource_version)
                need_list = True
            except (ApiError, OSError, ValueError) as e:
                log.warning("watch failed kind=%s error=%s retry_in=%.1fs", self.kind.plural, e, backoff)
                await asyncio.sleep(backoff * (1 + random.random() * 0.2))
                backoff = min(backoff * 2, 10.0)
                if isinstance(e, ApiError) and e.code not in (0, 429, 500, 503, 504):
                    need_list = True
            except Exception:  # never die silently: every component depends on its informers
                log.exception("informer error kind=%s: relisting in %.1fs", self.kind.plural, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                need_list = True

    def _resync(self) -> None:
        """Periodic resync: every cached object is handed to on_update(obj, obj), so level-based
        controllers reconcile even if a watch event was lost (upstream's resyncPeriod)."""
        for obj in list(self._cache.values()):
            self._emit_update(obj, obj)

    async def _relist(self) -> None:
        items: list[Obj] = []
        cont: str | None = None
        rv = ""
        while True:
            kw: dict[str, Any] = {"limit": 500}
            if cont:
                kw["continue_"] = cont
            lst = await self.client.list(self.kind, namespace=self.namespace, label_selector=self.label_selector,
                                         field_selector=self.field_selector, **kw)
            for it in lst.get("items") or []:
                it.setdefault("apiVersion", self.kind.api_version)
                it.setdefault("kind", self.kind.kind)
                items.append(it)
            md = lst.get("metadata") or {}
            rv = md.get("resourceVersion") or rv
            cont = md.get("continue")
            if not cont:
                break
        new = {key_of(o): o for o in items}
        old = self._cache
        self._cache = new
        self.resource_version = rv
        for k, o in old.items():
            if k not in new:
                self._emit_delete(o)
        for k, o in new.items():
            if k not in old:
                self._emit_add(o)
            elif (old[k].get("metadata") or {}).get("resourceVersion") != (o.get("metadata") or {}).get(
                    "resourceVersion"):
                self._emit_update(old[k], o)
        self._synced.set()
        log.debug("listed kind=%s items=%d rv=%s", self.kind.plural, len(new), rv)

    async def _watch_once(self) -> None:
        timeout = random.randint(*self.watch_timeout)
        async for ev in self.client.watch(self.kind, namespace=self.namespace,
                                          resource_version=self.resource_version,
                                          label_selector=self.label_selector,
                                          field_selector=self.field_selector,
                                          timeout_seconds=timeout, allow_bookmarks=True):
            if self._stopped:
                return
            obj = ev.object
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if ev.type == "BOOKMARK":
                if rv:
                    self.resource_version = rv
                continue
            obj.setdefault("apiVersion", self.kind.api_version)
            obj.setdefault("kind", self.kind.kind)
            key = key_of(obj)
            if ev.type in ("ADDED", "MODIFIED"):
                old = self._cache.get(key)
                self._cache[key] = obj
                if old is None:
                    self._emit_add(obj)
                else:
                    self._emit_update(old, obj)
            elif ev.type == "DELETED":
                self._cache.pop(key, None)
                self._emit_delete(obj)  # the server sends the object's last state
            if rv:
                self.resource_version = rv
