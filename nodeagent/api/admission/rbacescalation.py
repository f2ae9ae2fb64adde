"""RBAC escalation prevention (upstream pkg/registry/rbac/{role,clusterrole,rolebinding,
clusterrolebinding}/policybased): a user may write a Role or ClusterRole only with rules it holds
itself (or with the `escalate` verb on it), and a RoleBinding or ClusterRoleBinding only to a role
whose rules it holds (or with the `bind` verb on it). system:masters may do both."""

from __future__ import annotations

import json
from typing import Any

from nodeagent.api import errors
from nodeagent.api.admission.request import CREATE, UPDATE, Request
from nodeagent.api.auth.attributes import Attributes
from nodeagent.api.auth.authorizer import Authorizer
from nodeagent.api.auth.rules import compact_string, uncovered
from nodeagent.api.auth.user import MASTERS_GROUP, UserInfo

GROUP = "rbac.authorization.k8s.io"
ROLES = {"roles": "Role", "clusterroles": "ClusterRole"}
BINDINGS = {"rolebindings": "RoleBinding", "clusterrolebindings": "ClusterRoleBinding"}


def _groups(user: UserInfo) -> str:
    return "[" + " ".join(json.dumps(g) for g in user.groups) + "]"  # Go's %q of a []string


class RBACEscalation:
    name = "RBACEscalation"

    async def validate(self, attrs: Any) -> None:
        if attrs.user is not None:  # the apiserver's own writes are not admitted
            await self(Request.of(attrs))

    async def admit(self, attrs: Any) -> None:
        pass

    def __init__(self, authorizer: Authorizer) -> None:
        self.authorizer = authorizer

    async def __call__(self, req: Request) -> None:
        if req.group != GROUP or req.operation not in (CREATE, UPDATE) or req.subresource:
            return
        if MASTERS_GROUP in req.user.groups or req.obj is None:
            return
        if req.resource in ROLES:
            self._role(req)
        elif req.resource in BINDINGS:
            self._binding(req)

    def _allowed(self, user: UserInfo, verb: str, resource: str, namespace: str, name: str) -> bool:
        return self.authorizer.authorize(Attributes(user=user, verb=verb, api_group=GROUP, resource=resource,
                                                    namespace=namespace, name=name)).allowed

    def _name(self, req: Request) -> str:
        return str(req.name or ((req.obj or {}).get("metadata") or {}).get("name") or "")

    def _confirm(self, req: Request, wanted: list[dict[str, Any]]) -> None:
        held, errs = self.authorizer.rbac.rules_for(req.user, req.namespace)
        missing = uncovered(held, wanted)
        if not missing:
            return
        msg = (f'user "{req.user.name}" (groups={_groups(req.user)}) is attempting to grant RBAC permissions not '
               "currently held:\n" + "\n".join(compact_string(r) for r in missing))
        if errs:
            msg += "; RBAC rule resolution errors: " + "; ".join(errs)
        raise req.forbidden(msg)

    def _role(self, req: Request) -> None:
        obj = req.obj or {}
        if self._allowed(req.user, "escalate", req.resource, req.namespace, self._name(req)):
            return
        if obj.get("aggregationRule") and obj.get("aggregationRule") != (req.old or {}).get("aggregationRule"):
            raise req.forbidden("must have cluster-admin privileges to write the aggregationRule")
        self._confirm(req, [r for r in obj.get("rules") or [] if isinstance(r, dict)])

    def _binding(self, req: Request) -> None:
        ref = (req.obj or {}).get("roleRef") or {}
        kind, name = ref.get("kind"), str(ref.get("name") or "")
        resource = "clusterroles" if kind == "ClusterRole" else "roles"
        if self._allowed(req.user, "bind", resource, req.namespace, name):
            return
        rbac = self.authorizer.rbac
        role = rbac.cluster_roles.get(name) if kind == "ClusterRole" else rbac.roles.get((req.namespace, name))
        if role is None:
            raise errors.not_found(resource, GROUP, name)
        self._confirm(req, [r for r in role.get("rules") or [] if isinstance(r, dict)])
