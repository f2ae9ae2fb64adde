"""Admission: the ordered plugins every write passes after authentication and authorization and
before storage (ARCHITECTURE.md practice 14; upstream k8s.io/apiserver/pkg/admission).

The registry calls the chain at upstream's two points: `admit` (mutating) on the incoming object
before the kind's strategy prepares and validates it, `validate` on the prepared object right before
the write. A plugin refuses by raising an errors.ApiError (403 Forbidden for policy, 422 for a bad
value). Built-in plugins are added to `ApiServer.admission`; with no plugin the chain costs one
truth test per write.

  request.py          the adapter issue 14's plugins read (Request.of(attrs)) and upstream's Forbidden
  serviceaccount.py   ServiceAccount (mutating): default account, the kube-api-access volume
  noderestriction.py  NodeRestriction: what a node may write
  rbacescalation.py   RBAC escalation prevention (upstream's policy-based RBAC storage)
  runtimeclass.py     RuntimeClass (mutating and validating): a pod's RuntimeClass overhead and
                      scheduling; in every Registry's chain from the start, as upstream enables it
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from nodeagent.machinery.kinds import Kind

Obj = dict[str, Any]


@dataclass
class Attributes:
    """What a plugin may look at (upstream admission.Attributes)."""

    operation: str  # CREATE | UPDATE | DELETE
    kind: Kind
    namespace: str
    name: str
    subresource: str | None
    obj: Obj | None  # the object to be stored (None for DELETE); admit may change it in place
    old: Obj | None  # the stored object (None for CREATE)
    user: Any  # nodeagent.api.tokens.UserInfo, or None for the apiserver's own writes
    dry_run: bool


class Plugin(Protocol):
    name: str

    async def admit(self, attrs: Attributes) -> None:
        """Mutating admission: change attrs.obj, or raise ApiError to refuse."""

    async def validate(self, attrs: Attributes) -> None:
        """Validating admission: raise ApiError to refuse; must not change anything."""


class Chain:
    def __init__(self, plugins: list[Plugin] | None = None) -> None:
        self.plugins: list[Plugin] = list(plugins or [])

    def __bool__(self) -> bool:
        return bool(self.plugins)

    async def admit(self, attrs: Attributes) -> None:
        for p in self.plugins:
            await p.admit(attrs)

    async def validate(self, attrs: Attributes) -> None:
        for p in self.plugins:
            await p.validate(attrs)


class NamespaceAutoProvision:
    """Create the namespace of an object being created when it does not exist yet (upstream
    plugin/pkg/admission/namespace/autoprovision). Off in `nodeagent apiserver`, as upstream's
    default; the unit tests' fake client turns it on, so set-up does not have to create every
    namespace first while everything else keeps the server's rules."""

    name = "NamespaceAutoProvision"

    def __init__(self, ensure_namespace: Callable[[str], Awaitable[None]]) -> None:
        self._ensure = ensure_namespace

    async def admit(self, attrs: Attributes) -> None:
        if attrs.operation == "CREATE" and attrs.kind.namespaced and attrs.namespace and not attrs.dry_run:
            await self._ensure(attrs.namespace)

    async def validate(self, attrs: Attributes) -> None:
        pass
