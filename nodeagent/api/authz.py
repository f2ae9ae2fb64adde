"""Authorization: system:masters may do everything; a node identity may do what a kubelet, a
kube-proxy and a CNI daemon on that node need (upstream's Node authorizer + NodeRestriction,
simplified); everyone else is forbidden.

Decisions that depend on the stored object (is this pod bound to me?) are made in two steps: the
request-level check here says "allowed if the object belongs to node N", and the server checks
the object (`object_rule`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nodeagent.api.tokens import UserInfo

# Everything a node's daemons read (kubelet, proxy, CNI daemon, DNS).
_NODE_READABLE = {
    "pods", "nodes", "services", "endpoints", "endpointslices.discovery.k8s.io", "configmaps", "secrets",
    "namespaces", "leases.coordination.k8s.io", "serviceaccounts", "events",
}
_READ_VERBS = {"get", "list", "watch"}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""
    # When set, the request is allowed only if this predicate holds for the stored/new object.
    object_rule: str | None = None  # "pod-bound-to-node"


def authorize(user: UserInfo, verb: str, resource: str, subresource: str | None, namespace: str | None,
              name: str | None) -> Decision:
    if user.is_admin:
        return Decision(True)
    if resource in ("selfsubjectreviews.authentication.k8s.io",
                    "selfsubjectaccessreviews.authorization.k8s.io") and verb == "create":
        return Decision(True)  # anyone may ask who they are and what they may do
    node = user.node_name
    if node is None:
        return Decision(False, "no RBAC policy matched")
    if resource == "tokenreviews.authentication.k8s.io" and verb == "create":
        return Decision(True)  # kubelets authenticate the apiserver's calls (delegated authn)
    if resource in ("selfsubjectreviews.authentication.k8s.io",
                    "selfsubjectaccessreviews.authorization.k8s.io") and verb == "create":
        return Decision(True)  # anyone may ask who they are and what they may do
    if verb in _READ_VERBS and resource in _NODE_READABLE and subresource in (None, "status"):
        return Decision(True)
    if resource == "nodes":
        if verb == "create" and subresource is None:
            return Decision(True, object_rule="own-node")
        if verb in ("update", "patch", "get") and name == node and subresource in (None, "status"):
            return Decision(True)
        return Decision(False, f"node {node!r} can only modify its own Node object")
    if resource == "leases.coordination.k8s.io" and namespace == "kube-node-lease":
        if verb in ("create",):
            return Decision(True, object_rule="own-lease")
        if verb in ("update", "patch") and name == node:
            return Decision(True)
        return Decision(False, f"node {node!r} can only modify its own Lease in kube-node-lease")
    if resource == "events" and verb in ("create", "update", "patch"):
        return Decision(True)
    if resource == "pods":
        if subresource == "status" and verb in ("update", "patch"):
            return Decision(True, object_rule="pod-bound-to-node")
        if subresource is None and verb == "delete":
            return Decision(True, object_rule="pod-bound-to-node")
        if subresource is None and verb == "create":
            return Decision(True, object_rule="pod-bound-to-node")  # mirror pods
        if subresource is None and verb in ("update", "patch"):
            return Decision(True, object_rule="pod-bound-to-node")
        if subresource == "eviction" and verb == "create":
            return Decision(True, object_rule="pod-bound-to-node")
    return Decision(False, f"node {node!r} is not allowed to {verb} {resource}")


def object_allowed(rule: str, user: UserInfo, obj: dict[str, Any] | None) -> bool:
    node = user.node_name
    if obj is None or node is None:
        return False
    meta = obj.get("metadata") or {}
    if rule == "pod-bound-to-node":
        return (obj.get("spec") or {}).get("nodeName") == node
    if rule == "own-node":
        return meta.get("name") == node
    if rule == "own-lease":
        return meta.get("name") == node
    return False
