"""The authorization chain (upstream kube-apiserver --authorization-mode=Node,RBAC): members of
system:masters are allowed everything (authorizerfactory.NewPrivilegedGroups), then the Node
authorizer, then RBAC; the first that allows wins, and no opinion from all of them is a denial."""

from __future__ import annotations

from nodeagent.api.auth.attributes import Attributes
from nodeagent.api.auth.decision import Decision, allow, no_opinion
from nodeagent.api.auth.graph import NodeGraph
from nodeagent.api.auth.node import NodeAuthorizer
from nodeagent.api.auth.rbac import RBACAuthorizer
from nodeagent.api.auth.user import MASTERS_GROUP


class Authorizer:
    def __init__(self, graph: NodeGraph | None = None, rbac: RBACAuthorizer | None = None) -> None:
        self.graph = graph or NodeGraph()
        self.node = NodeAuthorizer(self.graph)
        self.rbac = rbac or RBACAuthorizer()

    def authorize(self, attrs: Attributes) -> Decision:
        if MASTERS_GROUP in attrs.user.groups:
            return allow()
        reasons = []
        for a in (self.node, self.rbac):
            d = a.authorize(attrs)
            if d.allowed:
                return d
            if d.reason:
                reasons.append(d.reason)
        return no_opinion(", ".join(reasons))
