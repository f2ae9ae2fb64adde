"""The root CA publisher (upstream pkg/controller/certificates/rootcacertpublisher): every active
namespace has the ConfigMap kube-root-ca.crt holding the cluster CA (key ca.crt), which the
kube-api-access volume of every pod projects to /var/run/secrets/kubernetes.io/serviceaccount/ca.crt."""

from __future__ import annotations

from typing import Any

from nodeagent.client.errors import AlreadyExists
from nodeagent.controllers.base import Context, Controller
from nodeagent.controllers.objects import is_deleting, name_of, namespace_of
from nodeagent.machinery.kinds import CONFIGMAPS, NAMESPACES

Obj = dict[str, Any]
NAME = "kube-root-ca.crt"
DESCRIPTION = ("Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints "
               "such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across "
               "distributions of Kubernetes clusters.")


class RootCACertPublisher(Controller):
    name = "root-ca-cert-publisher"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.ca = (ctx.options.extra.get("root_ca") or b"").decode()
        self.namespaces = ctx.informers.get(NAMESPACES)
        self.namespaces.add_handlers(on_add=lambda ns: self.queue.add(name_of(ns)),
                                     on_update=lambda _o, ns: self.queue.add(name_of(ns)))
        self.configmaps = ctx.informers.get(CONFIGMAPS)
        self.configmaps.add_handlers(on_update=lambda _o, cm: self._cm(cm), on_delete=self._cm)

    def _cm(self, cm: Obj) -> None:
        if name_of(cm) == NAME:
            self.queue.add(namespace_of(cm))

    async def reconcile(self, key: str) -> None:
        ns = self.namespaces.get(key)
        if not self.ca or ns is None or is_deleting(ns):
            return
        cur = self.configmaps.get(f"{key}/{NAME}")
        want = {"ca.crt": self.ca}
        if cur is None:
            try:
                await self.client.create(CONFIGMAPS, {
                    "apiVersion": "v1", "kind": "ConfigMap", "data": want,
                    "metadata": {"name": NAME, "namespace": key, "annotations": {"kubernetes.io/description":
                                                                                    DESCRIPTION}}}, namespace=key)
            except AlreadyExists:
                pass
        elif cur.get("data") != want:
            await self.client.update(CONFIGMAPS, {**cur, "data": want})
