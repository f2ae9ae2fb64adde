"""The RBAC authorizer and rule resolver (upstream plugin/pkg/auth/authorizer/rbac/rbac.go and
pkg/registry/rbac/validation/rule.go), over an in-memory copy of the four RBAC kinds kept current
from the store (feed.py).

Bindings are indexed by subject (user name, group name, service account), so a request looks only
at the bindings that name its user or one of its groups instead of walking every binding: with
1,000 RoleBindings the added cost stays in the microseconds (benchmarks/authz.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nodeagent.api.auth.attributes import Attributes
from nodeagent.api.auth.decision import Decision, allow, no_opinion
from nodeagent.api.auth.rules import Rule, rule_allows
from nodeagent.api.auth.user import UserInfo, split_serviceaccount

Obj = dict[str, Any]
SubjectKey = tuple[str, str]  # ("User"|"Group", name) or ("ServiceAccount", "ns:name")

RESOURCES = ("roles.rbac.authorization.k8s.io", "clusterroles.rbac.authorization.k8s.io",
             "rolebindings.rbac.authorization.k8s.io", "clusterrolebindings.rbac.authorization.k8s.io")


def subject_keys(binding: Obj) -> set[SubjectKey]:
    ns = str((binding.get("metadata") or {}).get("namespace") or "")
    keys: set[SubjectKey] = set()
    for s in binding.get("subjects") or []:
        if not isinstance(s, dict) or not s.get("name"):
            continue
        kind = s.get("kind")
        if kind in ("User", "Group"):
            keys.add((str(kind), str(s["name"])))
        elif kind == "ServiceAccount":
            # upstream: a ServiceAccount subject without a namespace in a RoleBinding means the binding's
            keys.add(("ServiceAccount", f"{s.get('namespace') or ns}:{s['name']}"))
    return keys


def user_keys(user: UserInfo) -> list[SubjectKey]:
    keys: list[SubjectKey] = [("User", user.name)]
    keys += [("Group", g) for g in user.groups]
    sa = split_serviceaccount(user.name)
    if sa:
        keys.append(("ServiceAccount", f"{sa[0]}:{sa[1]}"))
    return keys


@dataclass
class Grant:
    """One binding that applies to a user, with the rules of the role it names."""
    binding_kind: str
    binding_name: str
    namespace: str
    role_kind: str
    role_name: str
    rules: list[Rule]
    missing: bool  # the role does not exist


class RBACAuthorizer:
    def __init__(self) -> None:
        self.cluster_roles: dict[str, Obj] = {}
        self.roles: dict[tuple[str, str], Obj] = {}
        self.cluster_bindings: dict[str, Obj] = {}
        self.bindings: dict[tuple[str, str], Obj] = {}
        self._cb_by_subject: dict[SubjectKey, set[str]] = {}
        self._rb_by_subject: dict[str, dict[SubjectKey, set[str]]] = {}  # namespace -> subject -> names

    # --- the copy of the store ------------------------------------------------------------
    def on_event(self, resource: str, type_: str, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        gone = type_ == "DELETED"
        if resource.startswith("clusterroles."):
            if gone:
                self.cluster_roles.pop(name, None)
            else:
                self.cluster_roles[name] = obj
        elif resource.startswith("roles."):
            if gone:
                self.roles.pop((ns, name), None)
            else:
                self.roles[(ns, name)] = obj
        elif resource.startswith("clusterrolebindings."):
            old = self.cluster_bindings.pop(name, None)
            if old is not None:
                for k in subject_keys(old):
                    self._cb_by_subject.get(k, set()).discard(name)
            if not gone:
                self.cluster_bindings[name] = obj
                for k in subject_keys(obj):
                    self._cb_by_subject.setdefault(k, set()).add(name)
        elif resource.startswith("rolebindings."):
            idx = self._rb_by_subject.setdefault(ns, {})
            old = self.bindings.pop((ns, name), None)
            if old is not None:
                for k in subject_keys(old):
                    idx.get(k, set()).discard(name)
            if not gone:
                self.bindings[(ns, name)] = obj
                for k in subject_keys(obj):
                    idx.setdefault(k, set()).add(name)

    def feeder(self, resource: str) -> Any:
        return lambda type_, obj, _prev: self.on_event(resource, type_, obj)

    # --- resolution ------------------------------------------------------------------------
    def _role_rules(self, ref: Obj, namespace: str) -> tuple[list[Rule], bool]:
        kind, name = ref.get("kind"), str(ref.get("name") or "")
        role = self.cluster_roles.get(name) if kind == "ClusterRole" else self.roles.get((namespace, name))
        if role is None:
            return [], True
        return [x for x in role.get("rules") or [] if isinstance(x, dict)], False

    def grants(self, user: UserInfo, namespace: str) -> Iterator[Grant]:
        """Every binding that applies to the user: cluster-wide first, then those in namespace."""
        keys = user_keys(user)
        seen: set[str] = set()
        for k in keys:
            for name in sorted(self._cb_by_subject.get(k, ())):
                if name in seen:
                    continue
                seen.add(name)
                b = self.cluster_bindings.get(name)
                if b is None:
                    continue
                ref = b.get("roleRef") or {}
                rules, missing = self._role_rules(ref, "")
                yield Grant("ClusterRoleBinding", name, "", str(ref.get("kind")), str(ref.get("name")), rules,
                            missing)
        if not namespace:
            return
        idx = self._rb_by_subject.get(namespace, {})
        seen = set()
        for k in keys:
            for name in sorted(idx.get(k, ())):
                if name in seen:
                    continue
                seen.add(name)
                b = self.bindings.get((namespace, name))
                if b is None:
                    continue
                ref = b.get("roleRef") or {}
                rules, missing = self._role_rules(ref, namespace)
                yield Grant("RoleBinding", name, namespace, str(ref.get("kind")), str(ref.get("name")), rules,
                            missing)

    def rules_for(self, user: UserInfo, namespace: str) -> tuple[list[Rule], list[str]]:
        """All the rules the user holds in namespace (cluster-wide ones included) and the errors met
        (bindings to roles that do not exist), as upstream's RulesFor."""
        rules: list[Rule] = []
        errs: list[str] = []
        for g in self.grants(user, namespace):
            if g.missing:
                where = f"{g.namespace}/" if g.namespace else ""
                errs.append(f'{g.role_kind.lower()}.rbac.authorization.k8s.io "{g.role_name}" not found '
                            f"(bound by {g.binding_kind} {where}{g.binding_name})")
            rules.extend(g.rules)
        return rules, errs

    # --- the authorizer --------------------------------------------------------------------
    def authorize(self, attrs: Attributes) -> Decision:
        errs: list[str] = []
        for g in self.grants(attrs.user, attrs.namespace):
            if g.missing:
                errs.append(f'{g.role_kind.lower()}.rbac.authorization.k8s.io "{g.role_name}" not found')
                continue
            for rule in g.rules:
                if rule_allows(attrs, rule):
                    where = f' in namespace "{g.namespace}"' if g.namespace else ""
                    return allow(f'RBAC: allowed by {g.binding_kind} "{g.binding_name}"{where} of '
                                 f'{g.role_kind} "{g.role_name}" to {_describe(attrs.user)}')
        return no_opinion("RBAC: " + ", ".join(errs) if errs else "")


def _describe(user: UserInfo) -> str:
    sa = split_serviceaccount(user.name)
    if sa:
        return f'ServiceAccount "{sa[1]}/{sa[0]}"'
    return f'User "{user.name}"'
