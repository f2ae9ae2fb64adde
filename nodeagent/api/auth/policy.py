"""Upstream's bootstrap RBAC policy as data (plugin/pkg/auth/authorizer/rbac/bootstrappolicy:
policy.go, controller_policy.go and their testdata/*.yaml), cut to the kinds this apiserver
serves plus the few the roles name for completeness, and the nodeagent additions its own
components need (named nodeagent:*). Reconciled into the store at every start (bootstrap.py)."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]

READ = ("get", "list", "watch")
WRITE = ("create", "delete", "deletecollection", "patch", "update")
READ_WRITE = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
EVENTS = {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]}

BOOTSTRAP_LABEL = {"kubernetes.io/bootstrapping": "rbac-defaults"}
AUTOUPDATE = "rbac.authorization.kubernetes.io/autoupdate"


def _as_list(v: tuple[str, ...] | str) -> list[str]:
    return [v] if isinstance(v, str) else list(v)


def r(verbs: tuple[str, ...] | str, groups: tuple[str, ...] | str, resources: tuple[str, ...] | str,
      names: tuple[str, ...] = ()) -> Obj:
    out: Obj = {"apiGroups": _as_list(groups), "resources": _as_list(resources), "verbs": _as_list(verbs)}
    if names:
        out["resourceNames"] = list(names)
    return out


def urls(verbs: tuple[str, ...] | str, *paths: str) -> Obj:
    return {"nonResourceURLs": list(paths), "verbs": [verbs] if isinstance(verbs, str) else list(verbs)}


# What a kubelet may do beyond the Node authorizer's per-object checks (bootstrappolicy NodeRules).
NODE_RULES: list[Obj] = [
    r("create", "authentication.k8s.io", "tokenreviews"),
    r("create", "authorization.k8s.io", ("localsubjectaccessreviews", "subjectaccessreviews")),
    r(READ, "", "services"),
    r(("create", "get", "list", "watch"), "", "nodes"),
    r(("patch", "update"), "", "nodes/status"),
    r(("patch", "update"), "", "nodes"),
    r(("create", "patch", "update"), "", "events"),
    r(READ, "", "pods"),
    r(("create", "delete"), "", "pods"),
    r(("patch", "update"), "", "pods/status"),
    r("create", "", "pods/eviction"),
    r(READ, "", ("configmaps", "secrets")),
    r("get", "", ("persistentvolumeclaims", "persistentvolumes")),
    r("get", "", "endpoints"),
    r(("create", "get", "list", "watch"), "certificates.k8s.io", "certificatesigningrequests"),
    r(("create", "delete", "get", "patch", "update"), "coordination.k8s.io", "leases"),
    r("get", "storage.k8s.io", "volumeattachments"),
    r("create", "", "serviceaccounts/token"),
    r(("get", "patch", "update"), "", "persistentvolumeclaims/status"),
    r(READ, "storage.k8s.io", "csidrivers"),
    r(("create", "delete", "get", "patch", "update"), "storage.k8s.io", "csinodes"),
    r(READ, "node.k8s.io", "runtimeclasses"),
]

_AGGREGATE_TO_VIEW: list[Obj] = [
    r(READ, "", ("configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status", "pods",
                 "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts", "services",
                 "services/status")),
    r(READ, "", ("bindings", "events", "limitranges", "namespaces/status", "pods/log", "pods/status",
                 "replicationcontrollers/status", "resourcequotas", "resourcequotas/status")),
    r(READ, "", "namespaces"),
    r(READ, "discovery.k8s.io", "endpointslices"),
    r(READ, "apps", ("controllerrevisions", "daemonsets", "daemonsets/status", "deployments", "deployments/scale",
                     "deployments/status", "replicasets", "replicasets/scale", "replicasets/status", "statefulsets",
                     "statefulsets/scale", "statefulsets/status")),
    r(READ, "autoscaling", ("horizontalpodautoscalers", "horizontalpodautoscalers/status")),
    r(READ, "batch", ("cronjobs", "cronjobs/status", "jobs", "jobs/status")),
    r(READ, "extensions", ("daemonsets", "daemonsets/status", "deployments", "deployments/scale",
                           "deployments/status", "ingresses", "ingresses/status", "networkpolicies", "replicasets",
                           "replicasets/scale", "replicasets/status", "replicationcontrollers/scale")),
    r(READ, "policy", ("poddisruptionbudgets", "poddisruptionbudgets/status")),
    r(READ, "networking.k8s.io", ("ingresses", "ingresses/status", "networkpolicies")),
]

_AGGREGATE_TO_EDIT: list[Obj] = [
    r(READ, "", ("pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy")),
    r("impersonate", "", "serviceaccounts"),
    r(WRITE, "", ("pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy")),
    r("create", "", "pods/eviction"),
    r(WRITE, "", ("configmaps", "events", "persistentvolumeclaims", "replicationcontrollers",
                  "replicationcontrollers/scale", "secrets", "serviceaccounts", "services", "services/proxy")),
    r("create", "", "serviceaccounts/token"),
    r(WRITE, "apps", ("daemonsets", "deployments", "deployments/rollback", "deployments/scale", "replicasets",
                      "replicasets/scale", "statefulsets", "statefulsets/scale")),
    r(WRITE, "autoscaling", "horizontalpodautoscalers"),
    r(WRITE, "batch", ("cronjobs", "jobs")),
    r(WRITE, "extensions", ("daemonsets", "deployments", "deployments/rollback", "deployments/scale", "ingresses",
                            "networkpolicies", "replicasets", "replicasets/scale", "replicationcontrollers/scale")),
    r(WRITE, "policy", "poddisruptionbudgets"),
    r(WRITE, "networking.k8s.io", ("ingresses", "networkpolicies")),
    r(READ_WRITE, "coordination.k8s.io", "leases"),
]

_AGGREGATE_TO_ADMIN: list[Obj] = [
    r("create", "authorization.k8s.io", "localsubjectaccessreviews"),
    r(READ_WRITE, "rbac.authorization.k8s.io", ("rolebindings", "roles")),
]


def _role(name: str, rules: list[Obj] | None, labels: dict[str, str] | None = None,
          aggregate_from: str | None = None) -> Obj:
    obj: Obj = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": name, "labels": {**BOOTSTRAP_LABEL, **(labels or {})},
                             "annotations": {AUTOUPDATE: "true"}},
                "rules": rules or []}
    if aggregate_from:
        obj["aggregationRule"] = {"clusterRoleSelectors": [
            {"matchLabels": {f"rbac.authorization.k8s.io/aggregate-to-{aggregate_from}": "true"}}]}
    return obj


def _agg(to: str) -> dict[str, str]:
    return {f"rbac.authorization.k8s.io/aggregate-to-{to}": "true"}


# The controllers upstream's kube-controller-manager runs under their own service accounts
# (--use-service-account-credentials), with the roles of controller_policy.go that ours need.
CONTROLLER_ROLES: dict[str, list[Obj]] = {
    "certificate-controller": [
        r(("delete", "get", "list", "watch"), "certificates.k8s.io", "certificatesigningrequests"),
        r("update", "certificates.k8s.io", ("certificatesigningrequests/approval", "certificatesigningrequests/status")),
        r("approve", "certificates.k8s.io", "signers", ("kubernetes.io/kube-apiserver-client-kubelet",)),
        r("sign", "certificates.k8s.io", "signers", ("kubernetes.io/kube-apiserver-client",
                                                     "kubernetes.io/kube-apiserver-client-kubelet",
                                                     "kubernetes.io/kubelet-serving", "kubernetes.io/legacy-unknown")),
        r("create", "authorization.k8s.io", "subjectaccessreviews"),
        EVENTS,
    ],
    "clusterrole-aggregation-controller": [
        r(("escalate", "get", "list", "patch", "update", "watch"), "rbac.authorization.k8s.io", "clusterroles"),
    ],
    "daemon-set-controller": [
        r(READ, ("apps", "extensions"), "daemonsets"),
        r("update", ("apps", "extensions"), ("daemonsets/status", "daemonsets/finalizers")),
        r(("list", "watch"), "", "nodes"),
        r(("create", "delete", "list", "patch", "watch"), "", "pods"),
        r("create", "", "pods/binding"),
        r(("create", "delete", "get", "list", "patch", "update", "watch"), "apps", "controllerrevisions"),
        EVENTS,
    ],
    "deployment-controller": [
        r(("get", "list", "update", "watch"), ("apps", "extensions"), "deployments"),
        r("update", ("apps", "extensions"), ("deployments/status", "deployments/finalizers")),
        r(("create", "delete", "get", "list", "patch", "update", "watch"), ("apps", "extensions"), "replicasets"),
        r(("get", "list", "update", "watch"), "", "pods"),
        EVENTS,
    ],
    "endpoint-controller": [
        r(READ, "", ("pods", "services")),
        r(("create", "delete", "get", "list", "update", "watch"), "", "endpoints"),
        r("create", "", "endpoints/restricted"),
        EVENTS,
    ],
    "endpointslice-controller": [
        r(READ, "", ("nodes", "pods", "services")),
        r("update", "", "services/finalizers"),
        r(("create", "delete", "get", "list", "update", "watch"), "discovery.k8s.io", "endpointslices"),
        EVENTS,
    ],
    "generic-garbage-collector": [
        r(("delete", "get", "list", "patch", "update", "watch"), "*", "*"),
        EVENTS,
    ],
    "job-controller": [
        r(("get", "list", "patch", "update", "watch"), "batch", "jobs"),
        r("update", "batch", ("jobs/status", "jobs/finalizers")),
        r(("create", "delete", "list", "patch", "watch"), "", "pods"),
        EVENTS,
    ],
    "node-controller": [
        r(("delete", "get", "list", "patch", "update", "watch"), "", "nodes"),
        r(("patch", "update"), "", ("nodes/status", "pods/status")),
        r(("delete", "get", "list", "watch"), "", "pods"),
        EVENTS,
    ],
    "pod-garbage-collector": [
        r(("delete", "list", "watch"), "", "pods"),
        r(READ, "", "nodes"),
        r("patch", "", "pods/status"),
    ],
    "replicaset-controller": [
        r(("get", "list", "update", "watch"), ("apps", "extensions"), "replicasets"),
        r("update", ("apps", "extensions"), ("replicasets/status", "replicasets/finalizers")),
        r(("create", "delete", "list", "patch", "watch"), "", "pods"),
        EVENTS,
    ],
    "ttl-after-finished-controller": [
        r(("delete", "get", "list", "watch"), "batch", "jobs"),
        EVENTS,
    ],
    # cloud-provider's service controller (LoadBalancer addresses: servicelb)
    "service-controller": [
        r(READ, "", "services"),
        r(("patch", "update"), "", "services/status"),
        EVENTS,
    ],
    "root-ca-cert-publisher": [
        r(("create", "update"), "", "configmaps"),
        EVENTS,
    ],
    "service-account-controller": [
        r("create", "", "serviceaccounts"),
        EVENTS,
    ],
}


def cluster_roles() -> list[Obj]:
    roles = [
        _role("cluster-admin", [r("*", "*", "*"), urls("*", "*")]),
        _role("admin", None, aggregate_from="admin"),
        _role("edit", None, _agg("admin"), aggregate_from="edit"),
        _role("view", None, _agg("edit"), aggregate_from="view"),
        _role("system:aggregate-to-admin", _AGGREGATE_TO_ADMIN, _agg("admin")),
        _role("system:aggregate-to-edit", _AGGREGATE_TO_EDIT, _agg("edit")),
        _role("system:aggregate-to-view", _AGGREGATE_TO_VIEW, _agg("view")),
        _role("system:auth-delegator", [r("create", "authentication.k8s.io", "tokenreviews"),
                                        r("create", "authorization.k8s.io", "subjectaccessreviews")]),
        _role("system:basic-user", [
            r("create", "authorization.k8s.io", ("selfsubjectaccessreviews", "selfsubjectrulesreviews")),
            r("create", "authentication.k8s.io", "selfsubjectreviews")]),
        _role("system:discovery", [urls("get", "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
                                        "/openapi/*", "/readyz", "/version", "/version/")]),
        _role("system:public-info-viewer", [urls("get", "/healthz", "/livez", "/readyz", "/version", "/version/")]),
        _role("system:monitoring", [urls("get", "/healthz", "/healthz/*", "/livez", "/livez/*", "/metrics",
                                         "/metrics/slis", "/readyz", "/readyz/*")]),
        _role("system:node", NODE_RULES),
        _role("system:node-proxier", [
            r(("list", "watch"), "", ("endpoints", "services")), r(READ, "", "nodes"), EVENTS,
            r(("list", "watch"), "discovery.k8s.io", "endpointslices")]),
        _role("system:kube-dns", [r(("list", "watch"), "", ("endpoints", "services"))]),
        _role("system:kube-controller-manager", [
            EVENTS,
            r("create", "coordination.k8s.io", "leases"),
            r(("get", "update"), "coordination.k8s.io", "leases", ("kube-controller-manager",)),
            r("create", "", ("secrets", "serviceaccounts")),
            r("delete", "", "secrets"),
            r("get", "", ("configmaps", "namespaces", "secrets", "serviceaccounts")),
            r("update", "", ("secrets", "serviceaccounts")),
            r("create", "authentication.k8s.io", "tokenreviews"),
            r("create", "authorization.k8s.io", "subjectaccessreviews"),
            r(("list", "watch"), "*", "*"),
            r("create", "", "serviceaccounts/token"),
        ]),
        _role("system:kube-scheduler", [
            EVENTS,
            r("create", "coordination.k8s.io", "leases"),
            r(("get", "update"), "coordination.k8s.io", "leases", ("kube-scheduler",)),
            r(READ, "", "nodes"),
            r(("delete", "get", "list", "watch"), "", "pods"),
            r("create", "", ("bindings", "pods/binding")),
            r(("patch", "update"), "", "pods/status"),
            r(READ, "", ("replicationcontrollers", "services")),
            r(READ, ("apps", "extensions"), "replicasets"),
            r(READ, "apps", "statefulsets"),
            r(READ, "policy", "poddisruptionbudgets"),
            r(READ, "", ("persistentvolumeclaims", "persistentvolumes")),
            r("create", "authentication.k8s.io", "tokenreviews"),
            r("create", "authorization.k8s.io", "subjectaccessreviews"),
            r(READ, "storage.k8s.io", ("csinodes", "csidrivers", "csistoragecapacities")),
            r(READ, "", "namespaces"),
        ]),
        _role("system:kubelet-api-admin", [
            r(READ, "", "nodes"), r("proxy", "", "nodes"),
            r("*", "", ("nodes/log", "nodes/metrics", "nodes/proxy", "nodes/stats"))]),
        _role("system:node-bootstrapper", [
            r(("create", "get", "list", "watch"), "certificates.k8s.io", "certificatesigningrequests")]),
        _role("system:service-account-issuer-discovery", [
            urls("get", "/.well-known/openid-configuration", "/openid/v1/jwks")]),
        _role("system:certificates.k8s.io:kubelet-serving-approver", [
            r("approve", "certificates.k8s.io", "signers", ("kubernetes.io/kubelet-serving",))]),
        # nodeagent's own components (no upstream counterpart): the CNI daemon routes to every node's
        # podCIDR, the DNS server also registers itself as the kube-dns Service's endpoint.
        _role("nodeagent:cni-daemon", [r(READ, "", "nodes"), EVENTS]),
        # the ingress controller (ingress-nginx's ClusterRole, less what it does not use) and the
        # load-balancer speaker (MetalLB's speaker role)
        _role("nodeagent:ingress", [
            r(READ, "", ("services", "secrets", "nodes")),
            r(READ, "discovery.k8s.io", "endpointslices"),
            r(READ, "networking.k8s.io", ("ingresses", "ingressclasses")),
            r(("patch", "update"), "networking.k8s.io", "ingresses/status"),
            EVENTS]),
        _role("nodeagent:speaker", [
            r(READ, "", ("services", "nodes")),
            r(READ, "discovery.k8s.io", "endpointslices"),
            EVENTS]),
        _role("nodeagent:dns", [r(("list", "watch"), "", ("endpoints", "services")),
                                r(("list", "watch"), "discovery.k8s.io", "endpointslices"),
                                r("get", "", "namespaces", ("kube-system",))]),
    ]
    roles += [_role(f"system:controller:{name}", rules) for name, rules in CONTROLLER_ROLES.items()]
    return roles


def _binding(name: str, role: str, subjects: list[Obj], namespace: str | None = None) -> Obj:
    kind = "RoleBinding" if namespace else "ClusterRoleBinding"
    meta: Obj = {"name": name, "labels": dict(BOOTSTRAP_LABEL), "annotations": {AUTOUPDATE: "true"}}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role" if namespace else "ClusterRole",
                        "name": role},
            "subjects": subjects}


def group(name: str) -> Obj:
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": name}


def user(name: str) -> Obj:
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}


def serviceaccount(namespace: str, name: str) -> Obj:
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


def cluster_role_bindings() -> list[Obj]:
    out = [
        _binding("cluster-admin", "cluster-admin", [group("system:masters")]),
        _binding("system:basic-user", "system:basic-user", [group("system:authenticated")]),
        _binding("system:discovery", "system:discovery", [group("system:authenticated")]),
        _binding("system:public-info-viewer", "system:public-info-viewer",
                 [group("system:authenticated"), group("system:unauthenticated")]),
        _binding("system:monitoring", "system:monitoring", [group("system:monitoring")]),
        _binding("system:node", "system:node", []),  # nodes are served by the Node authorizer
        _binding("system:node-proxier", "system:node-proxier", [user("system:kube-proxy")]),
        _binding("system:kube-controller-manager", "system:kube-controller-manager",
                 [user("system:kube-controller-manager")]),
        _binding("system:kube-scheduler", "system:kube-scheduler", [user("system:kube-scheduler")]),
        _binding("system:kube-dns", "system:kube-dns", [serviceaccount("kube-system", "kube-dns")]),
        _binding("system:service-account-issuer-discovery", "system:service-account-issuer-discovery",
                 [group("system:serviceaccounts")]),
        # kubeadm's binding of the apiserver's kubelet client certificate
        _binding("kube-apiserver-kubelet-client", "system:kubelet-api-admin",
                 [user("kube-apiserver-kubelet-client")]),
        _binding("nodeagent:cni-daemon", "nodeagent:cni-daemon", [user("system:nodeagent:cni-daemon")]),
        _binding("nodeagent:ingress", "nodeagent:ingress", [user("system:nodeagent:ingress")]),
        _binding("nodeagent:speaker", "nodeagent:speaker", [user("system:nodeagent:speaker")]),
        _binding("nodeagent:dns", "nodeagent:dns", [serviceaccount("kube-system", "kube-dns")]),
    ]
    out += [_binding(f"system:controller:{name}", f"system:controller:{name}",
                     [serviceaccount("kube-system", name)]) for name in CONTROLLER_ROLES]
    return out


def namespaced_roles() -> list[Obj]:
    """Roles in kube-system: the DNS server writes its own Service and EndpointSlice there."""
    return [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": "nodeagent:dns-registration", "namespace": "kube-system",
                          "labels": dict(BOOTSTRAP_LABEL), "annotations": {AUTOUPDATE: "true"}},
             "rules": [r(("get", "create", "update"), "", "services"),
                       r(("get", "create", "update", "delete"), "discovery.k8s.io", "endpointslices")]}]


def namespaced_role_bindings() -> list[Obj]:
    b = _binding("nodeagent:dns-registration", "nodeagent:dns-registration",
                 [serviceaccount("kube-system", "kube-dns")], namespace="kube-system")
    return [b]
