"""The Node authorizer (upstream plugin/pkg/auth/authorizer/node/node_authorizer.go, with the
AuthorizeNodeWithSelectors feature on as in 1.32): a node (system:node:NAME in system:nodes) may
read only the secrets, configmaps, persistentvolumeclaims and pods of pods bound to it, create
tokens only for their serviceaccounts, touch only its own Lease and Node, list and watch pods only
with `spec.nodeName=NAME`, and otherwise what the static system:node rules allow. Creates and
updates it allows are narrowed further by NodeRestriction admission (admission/noderestriction.py).
Requests from anyone else get no opinion."""

from __future__ import annotations

from collections.abc import Callable

from nodeagent.api.auth.attributes import Attributes
from nodeagent.api.auth.decision import Decision, allow, no_opinion
from nodeagent.api.auth.graph import NodeGraph
from nodeagent.api.auth.policy import NODE_RULES
from nodeagent.api.auth.rules import rules_allow

NODE_LEASE_NAMESPACE = "kube-node-lease"


class NodeAuthorizer:
    def __init__(self, graph: NodeGraph) -> None:
        self.graph = graph
        self._by_resource: dict[str, Callable[[str, Attributes], Decision]] = {
            "secrets": self._read_namespaced, "configmaps": self._read_namespaced,
            "persistentvolumeclaims": self._pvc, "persistentvolumes": self._get_related,
            "serviceaccounts": self._create_token, "leases.coordination.k8s.io": self._lease,
            "nodes": self._node, "pods": self._pod,
        }

    def authorize(self, attrs: Attributes) -> Decision:
        node = attrs.user.node_name
        if not attrs.user.is_node:
            return no_opinion()
        if not node:
            return no_opinion(f'unknown node for user "{attrs.user.name}"')
        if attrs.resource_request:
            handler = self._by_resource.get(attrs.qualified_resource)
            if handler is not None:
                return handler(node, attrs)
        return allow() if rules_allow(attrs, NODE_RULES) else no_opinion()

    # --- helpers ---------------------------------------------------------------------------
    def _related(self, node: str, attrs: Attributes) -> Decision:
        if not attrs.name:
            return no_opinion("No Object name found")
        if self.graph.reaches(node, attrs.resource, attrs.namespace, attrs.name):
            return allow()
        return no_opinion(f"no relationship found between node '{node}' and this object")

    def _get_related(self, node: str, attrs: Attributes) -> Decision:
        if attrs.verb != "get":
            return no_opinion("can only get individual resources of this type")
        if attrs.subresource:
            return no_opinion("cannot get subresource")
        return self._related(node, attrs)

    # --- per resource ----------------------------------------------------------------------
    def _read_namespaced(self, node: str, attrs: Attributes) -> Decision:
        if attrs.verb not in ("get", "list", "watch"):
            return no_opinion("can only read resources of this type")
        if attrs.subresource:
            return no_opinion("cannot read subresource")
        if not attrs.namespace:
            return no_opinion("can only read namespaced object of this type")
        return self._related(node, attrs)

    def _pvc(self, node: str, attrs: Attributes) -> Decision:
        if attrs.subresource == "status":
            if attrs.verb not in ("update", "patch"):
                return no_opinion("can only get/update/patch this type")
            return self._related(node, attrs)
        return self._get_related(node, attrs)

    def _create_token(self, node: str, attrs: Attributes) -> Decision:
        if attrs.verb != "create" or not attrs.name:
            return no_opinion("can only create tokens for individual service accounts")
        if attrs.subresource != "token":
            return no_opinion("can only create token subresource of serviceaccount")
        return self._related(node, attrs)

    def _lease(self, node: str, attrs: Attributes) -> Decision:
        if attrs.verb not in ("get", "create", "update", "patch", "delete"):
            return no_opinion("can only get, create, update, patch, or delete a node lease")
        if attrs.namespace != NODE_LEASE_NAMESPACE:
            return no_opinion(f'can only access leases in the "{NODE_LEASE_NAMESPACE}" system namespace')
        # create carries no name here: NodeRestriction checks the new Lease's name
        if attrs.verb != "create" and attrs.name != node:
            return no_opinion("can only access node lease with the same name as the requesting node")
        return allow()

    def _node(self, node: str, attrs: Attributes) -> Decision:
        if not attrs.subresource:
            if attrs.verb in ("create", "update", "patch"):
                return allow()  # NodeRestriction limits these to the node's own object
            if attrs.verb in ("get", "list", "watch"):
                if attrs.name == node:
                    return allow()
                if not attrs.name:
                    return no_opinion(f"node '{node}' cannot read all nodes, only its own Node object")
                return no_opinion(f"node '{node}' cannot read '{attrs.name}', only its own Node object")
        elif attrs.subresource == "status" and attrs.verb in ("update", "patch"):
            return allow()
        return no_opinion()

    def _pod(self, node: str, attrs: Attributes) -> Decision:
        sub, verb = attrs.subresource, attrs.verb
        if not sub:
            if verb == "get":
                return self._get_related(node, attrs)
            if verb in ("list", "watch"):
                for req in attrs.field_selector:
                    if req.field == "spec.nodeName" and req.op in ("=", "==") and req.value == node:
                        return allow()
                if attrs.name:
                    return self._related(node, attrs)
                return no_opinion("can only list/watch pods with spec.nodeName field selector")
            if verb in ("create", "delete"):
                return allow()  # mirror pods; NodeRestriction checks the binding to this node
        elif sub == "status" and verb in ("update", "patch"):
            return allow()
        elif sub == "eviction" and verb == "create":
            return allow()
        return no_opinion()
