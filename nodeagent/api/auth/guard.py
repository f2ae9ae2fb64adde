"""The apiserver's access control in one place: who a request is (authentication, then
impersonation), whether it may do what it asks (the authorizer chain), and the views of the store
the authorizers need (the node graph, the RBAC objects). The HTTP layer calls `authenticate`,
`resource_attributes`/`path_attributes` and `require`; the registry runs admission."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from nodeagent.api import errors
from nodeagent.api.admission.noderestriction import NodeRestriction
from nodeagent.api.admission.rbacescalation import RBACEscalation
from nodeagent.api.admission.serviceaccount import ServiceAccountAdmission
from nodeagent.api.auth.attributes import Attributes
from nodeagent.api.auth.authn import TokenLookup, lookup_token
from nodeagent.api.auth.authorizer import Authorizer
from nodeagent.api.auth.decision import Decision
from nodeagent.api.auth.feed import Feed
from nodeagent.api.auth.rbac import RESOURCES as RBAC_RESOURCES
from nodeagent.api.auth.user import UserInfo
from nodeagent.api.store import Store
from nodeagent.machinery.selectors import FieldRequirement, SelectorError, parse_field_selector

log = logging.getLogger(__name__)

# aiohttp request -> user (or an awaitable of one); None: the request has no credential of this kind
Authenticate = Callable[[Any], Any]


class Guard:
    def __init__(self, authenticators: list[Authenticate] | None = None) -> None:
        self.authenticators: list[Authenticate] = list(authenticators or [])
        self.token_lookups: list[TokenLookup] = []
        self.authorizer = Authorizer()
        self._feeds: list[Feed] = []

    async def start(self, store: Store) -> None:
        feeds = [Feed(store, "pods", self.authorizer.graph.on_event)]
        feeds += [Feed(store, r, self.authorizer.rbac.feeder(r)) for r in RBAC_RESOURCES]
        for f in feeds:
            await f.start()
        self._feeds = feeds

    def close(self) -> None:
        for f in self._feeds:
            f.close()
        self._feeds.clear()

    # --- authentication --------------------------------------------------------------------
    async def authenticate(self, request: Any) -> UserInfo:
        for a in self.authenticators:
            user = a(request)
            if inspect.isawaitable(user):
                user = await user
            if user is not None:
                return user.with_authenticated()
        raise errors.ApiError(401, "Unauthorized", "Unauthorized")

    def impersonate(self, request: Any, user: UserInfo) -> UserInfo:
        """The user a request runs as: the caller, or whom its Impersonate-* headers name."""
        from nodeagent.api.auth.impersonation import impersonate

        return impersonate(request, user, self.authorize)

    async def authenticate_token(self, token: str) -> UserInfo | None:
        """A bearer token's user (TokenReview), or None."""
        return await lookup_token(self.token_lookups, token) if token else None

    # --- admission -------------------------------------------------------------------------
    def admission_plugins(self, registry: Any, disabled: list[str] | None = None) -> list[Any]:
        """Issue 14's plugins in upstream's order: ServiceAccount (mutating), NodeRestriction and the
        RBAC escalation checks (validating). `disabled` names plugins to leave out
        (--disable-admission-plugins)."""
        async def get(resource: str, namespace: str, name: str) -> dict[str, Any] | None:
            e = await registry.store.get(resource, namespace, name)
            return e.obj if e is not None else None

        plugins: list[Any] = [ServiceAccountAdmission(get), NodeRestriction(get), RBACEscalation(self.authorizer)]
        return [p for p in plugins if p.name not in set(disabled or [])]

    # --- authorization ---------------------------------------------------------------------
    def resource_attributes(self, user: UserInfo, info: Any, query: Any) -> Attributes:
        """Upstream RequestInfo: a list or watch with a metadata.name field selector names its object."""
        name = info.name or ""
        reqs: tuple[FieldRequirement, ...] = ()
        if info.verb in ("list", "watch", "deletecollection") and query.get("fieldSelector"):
            try:
                reqs = tuple(parse_field_selector(query.get("fieldSelector"), info.qualified_resource))
            except (SelectorError, TypeError):
                reqs = ()
            if not name:
                for r in reqs:
                    if r.field == "metadata.name" and r.op in ("=", "=="):
                        name = r.value
        return Attributes(user=user, verb=info.verb, namespace=info.namespace or "", api_group=info.group,
                          api_version=info.version, resource=info.resource, subresource=info.subresource or "",
                          name=name, field_selector=reqs)

    def path_attributes(self, user: UserInfo, method: str, path: str) -> Attributes:
        verb = {"GET": "get", "HEAD": "head", "POST": "post", "PUT": "put", "PATCH": "patch",
                "DELETE": "delete"}.get(method.upper(), method.lower())
        if verb == "head":
            verb = "get"
        return Attributes(user=user, verb=verb, resource_request=False, path=path)

    def authorize(self, attrs: Attributes) -> Decision:
        return self.authorizer.authorize(attrs)

    def require(self, attrs: Attributes, decided: Decision | None = None) -> Decision:
        """Authorize or raise upstream's 403: `pods "x" is forbidden: User "u" cannot get ...`."""
        d = decided if decided is not None else self.authorize(attrs)
        if d.allowed:
            return d
        why = f": {d.reason}" if d.reason else ""
        if not attrs.resource_request:
            raise errors.ApiError(403, "Forbidden", f'forbidden: User "{attrs.user.name}" cannot '
                                                    f"{attrs.describe()}{why}")
        res = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
        label = res + (f' "{attrs.name}"' if attrs.name else "")
        raise errors.ApiError(403, "Forbidden", f'{label} is forbidden: User "{attrs.user.name}" cannot '
                                                f"{attrs.describe()}{why}",
                              name=attrs.name or None, group=attrs.api_group, kind=attrs.resource)
