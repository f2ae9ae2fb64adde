"""Who a request is: upstream's user.Info (k8s.io/apiserver/pkg/authentication/user) and the
well-known users and groups the bootstrap policy names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MASTERS_GROUP = "system:masters"            # the privileged group: allowed everything
NODES_GROUP = "system:nodes"
AUTHENTICATED_GROUP = "system:authenticated"
UNAUTHENTICATED_GROUP = "system:unauthenticated"
SERVICEACCOUNTS_GROUP = "system:serviceaccounts"
NODE_USER_PREFIX = "system:node:"
SERVICEACCOUNT_USER_PREFIX = "system:serviceaccount:"
ANONYMOUS_USER = "system:anonymous"
KUBE_PROXY_USER = "system:kube-proxy"
KUBE_CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
KUBE_SCHEDULER_USER = "system:kube-scheduler"
# The apiserver's identity towards kubelets (kubeadm's apiserver-kubelet-client certificate): a
# user with no group, bound only to system:kubelet-api-admin.
APISERVER_KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"


@dataclass(frozen=True)
class UserInfo:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = field(default=())
    extra: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    @property
    def is_admin(self) -> bool:
        return MASTERS_GROUP in self.groups

    @property
    def node_name(self) -> str | None:
        """The node this user is (upstream nodeidentifier: system:node:NAME in system:nodes)."""
        if NODES_GROUP in self.groups and self.name.startswith(NODE_USER_PREFIX):
            return self.name[len(NODE_USER_PREFIX):]
        return None

    @property
    def is_node(self) -> bool:
        return NODES_GROUP in self.groups and self.name.startswith(NODE_USER_PREFIX)

    def extra_map(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.extra}

    def with_authenticated(self) -> UserInfo:
        """Upstream's authenticator chain adds system:authenticated to every authenticated user."""
        if AUTHENTICATED_GROUP in self.groups or self.name == ANONYMOUS_USER:
            return self
        return UserInfo(self.name, self.uid, (*self.groups, AUTHENTICATED_GROUP), self.extra)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"username": self.name, "groups": list(self.with_authenticated().groups)}
        if self.uid:
            out["uid"] = self.uid
        if self.extra:
            out["extra"] = self.extra_map()
        return out


def node_user(node: str) -> str:
    return NODE_USER_PREFIX + node


def serviceaccount_user(namespace: str, name: str) -> str:
    return f"{SERVICEACCOUNT_USER_PREFIX}{namespace}:{name}"


def split_serviceaccount(username: str) -> tuple[str, str] | None:
    """(namespace, name) of system:serviceaccount:NS:NAME, else None."""
    if not username.startswith(SERVICEACCOUNT_USER_PREFIX):
        return None
    ns, sep, name = username[len(SERVICEACCOUNT_USER_PREFIX):].partition(":")
    if not sep or not ns or not name or ":" in name:
        return None
    return ns, name


def serviceaccount_groups(namespace: str) -> tuple[str, ...]:
    return (SERVICEACCOUNTS_GROUP, f"{SERVICEACCOUNTS_GROUP}:{namespace}")
