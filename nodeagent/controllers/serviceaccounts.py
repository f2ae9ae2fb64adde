"""The service account controller (upstream pkg/controller/serviceaccount/serviceaccounts_controller.go):
every active namespace has a `default` ServiceAccount; one deleted is made again."""

from __future__ import annotations

from typing import Any

from nodeagent.client.errors import AlreadyExists
from nodeagent.controllers.base import Context, Controller
from nodeagent.controllers.objects import is_deleting, name_of, namespace_of
from nodeagent.machinery.kinds import NAMESPACES, SERVICEACCOUNTS

Obj = dict[str, Any]
DEFAULT = "default"


class ServiceAccountsController(Controller):
    name = "serviceaccount"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.namespaces = ctx.informers.get(NAMESPACES)
        self.namespaces.add_handlers(on_add=lambda ns: self.queue.add(name_of(ns)),
                                     on_update=lambda _o, ns: self.queue.add(name_of(ns)))
        self.accounts = ctx.informers.get(SERVICEACCOUNTS)
        self.accounts.add_handlers(on_delete=lambda sa: self.queue.add(namespace_of(sa)))

    async def reconcile(self, key: str) -> None:
        ns = self.namespaces.get(key)
        if ns is None or is_deleting(ns) or self.accounts.get(f"{key}/{DEFAULT}") is not None:
            return
        try:
            await self.client.create(SERVICEACCOUNTS, {"apiVersion": "v1", "kind": "ServiceAccount",
                                                       "metadata": {"name": DEFAULT, "namespace": key}},
                                     namespace=key)
        except AlreadyExists:
            pass
