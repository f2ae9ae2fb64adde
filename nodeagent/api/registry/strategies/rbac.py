"""rbac.authorization.k8s.io/v1 Role, ClusterRole, RoleBinding, ClusterRoleBinding (upstream
pkg/registry/rbac/*/strategy.go): names are path segments, rules and bindings validated as upstream
(auth/rbacobjects.py), a binding's roleRef never changes; kubectl's columns. Who may write them is
admission's business (admission/rbacescalation.py)."""

from __future__ import annotations

from typing import Any

from nodeagent.api import tables as t
from nodeagent.api.auth.rbacobjects import validate_binding, validate_role
from nodeagent.api.registry.strategy import Strategy
from nodeagent.api.validation import PATH_SEGMENT, Cause

Obj = dict[str, Any]
Row = list[Any]


def _role_row(o: Obj) -> Row:
    return [t.meta(o).get("name", ""), t.meta(o).get("creationTimestamp", "")]


def _binding_row(o: Obj) -> Row:
    """upstream printers.go printRoleBinding: ROLE is Kind/name; USERS, GROUPS, SERVICEACCOUNTS wide."""
    ref = o.get("roleRef") or {}
    subjects = [x for x in o.get("subjects") or [] if isinstance(x, dict)]
    users = ", ".join(str(x.get("name")) for x in subjects if x.get("kind") == "User")
    groups = ", ".join(str(x.get("name")) for x in subjects if x.get("kind") == "Group")
    sas = ", ".join(f"{x.get('namespace') or ''}/{x.get('name')}" for x in subjects if x.get("kind") == "ServiceAccount")
    return [t.meta(o).get("name", ""), f"{ref.get('kind', '')}/{ref.get('name', '')}", t.created(o), users, groups,
            sas]


class RoleStrategy(Strategy):
    name_rule = PATH_SEGMENT
    printer = t.Printer((("Name", "string", 0), ("Created At", "date", 0)), _role_row)

    def validate(self, obj: Obj, ctx: Any) -> list[Cause]:
        return validate_role(obj, self.kind.namespaced)

    def validate_update(self, new: Obj, old: Obj, ctx: Any) -> list[Cause]:
        return validate_role(new, self.kind.namespaced)


class RoleBindingStrategy(Strategy):
    name_rule = PATH_SEGMENT
    printer = t.Printer((("Name", "string", 0), ("Role", "string", 0), ("Age", "string", 0), ("Users", "string", 1),
                         ("Groups", "string", 1), ("ServiceAccounts", "string", 1)), _binding_row)

    def validate(self, obj: Obj, ctx: Any) -> list[Cause]:
        return validate_binding(obj, self.kind.namespaced)

    def validate_update(self, new: Obj, old: Obj, ctx: Any) -> list[Cause]:
        return validate_binding(new, self.kind.namespaced, old)
