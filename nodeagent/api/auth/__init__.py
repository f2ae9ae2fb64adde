"""Authentication and authorization of the apiserver (upstream's request filters, cut to ours).

  user.py        who a request is (UserInfo) and the well-known users and groups
  attributes.py  what a request asks (upstream authorizer.Attributes)
  rules.py       PolicyRule matching and covering (rbac.RulesAllow, validation.Covers)
  graph.py       pods -> secrets/configmaps/pvcs/serviceaccounts -> node, fed by the store
  node.py        the Node authorizer (plugin/pkg/auth/authorizer/node/node_authorizer.go)
  rbac.py        the RBAC authorizer and rule resolver (plugin/pkg/auth/authorizer/rbac/rbac.go)
  authorizer.py  the chain: system:masters, Node, RBAC
  impersonation.py  Impersonate-* headers (k8s.io/apiserver/pkg/endpoints/filters/impersonation.go)
"""
