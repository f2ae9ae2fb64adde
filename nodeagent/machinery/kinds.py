"""The resource types the apiserver serves, shared by the server and the one client.

Shared by the apiserver and the one client (nodeagent.machinery; the client needs to
know the URL of a resource). Objects themselves are plain JSON dicts shaped as Kubernetes sends them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Kind:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = field(
        default=("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
    )

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def singular(self) -> str:
        return self.kind.lower()

    def base_path(self, namespace: str | None = None) -> str:
        """URL path of the collection: /api/v1/namespaces/ns/pods or /apis/apps/v1/deployments."""
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            return f"{root}/namespaces/{namespace}/{self.plural}"
        return f"{root}/{self.plural}"

    def path(self, name: str, namespace: str | None = None, subresource: str | None = None) -> str:
        p = f"{self.base_path(namespace)}/{name}"
        return f"{p}/{subresource}" if subresource else p


NAMESPACES = Kind("", "v1", "Namespace", "namespaces", False, ("ns",), ("status", "finalize"))
NODES = Kind("", "v1", "Node", "nodes", False, ("no",), ("status", "proxy"))
PODS = Kind("", "v1", "Pod", "pods", True, ("po",), ("status", "binding", "log", "exec", "attach", "portforward",
                                                         "eviction"))
SERVICES = Kind("", "v1", "Service", "services", True, ("svc",), ("status",))
ENDPOINTS = Kind("", "v1", "Endpoints", "endpoints", True, ("ep",))
EVENTS = Kind("", "v1", "Event", "events", True, ("ev",))
CONFIGMAPS = Kind("", "v1", "ConfigMap", "configmaps", True, ("cm",))
SECRETS = Kind("", "v1", "Secret", "secrets", True)
SERVICEACCOUNTS = Kind("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",), ("token",))
BINDINGS = Kind("", "v1", "Binding", "bindings", True, verbs=("create",))
DEPLOYMENTS = Kind("apps", "v1", "Deployment", "deployments", True, ("deploy",), ("status", "scale"))
REPLICASETS = Kind("apps", "v1", "ReplicaSet", "replicasets", True, ("rs",), ("status", "scale"))
DAEMONSETS = Kind("apps", "v1", "DaemonSet", "daemonsets", True, ("ds",), ("status",))
CONTROLLERREVISIONS = Kind("apps", "v1", "ControllerRevision", "controllerrevisions", True)
JOBS = Kind("batch", "v1", "Job", "jobs", True, (), ("status",))
ENDPOINTSLICES = Kind("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True)
LEASES = Kind("coordination.k8s.io", "v1", "Lease", "leases", True)
ROLES = Kind("rbac.authorization.k8s.io", "v1", "Role", "roles", True)
CLUSTERROLES = Kind("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False)
ROLEBINDINGS = Kind("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True)
CLUSTERROLEBINDINGS = Kind("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False)
INGRESSES = Kind("networking.k8s.io", "v1", "Ingress", "ingresses", True, ("ing",), ("status",))
INGRESSCLASSES = Kind("networking.k8s.io", "v1", "IngressClass", "ingressclasses", False)
RUNTIME_CLASSES = Kind("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", False)

KINDS: tuple[Kind, ...] = (
    NAMESPACES, NODES, PODS, SERVICES, ENDPOINTS, EVENTS, CONFIGMAPS, SECRETS, SERVICEACCOUNTS,
    BINDINGS, DEPLOYMENTS, REPLICASETS, DAEMONSETS, CONTROLLERREVISIONS, JOBS, ENDPOINTSLICES, LEASES,
    ROLES, CLUSTERROLES, ROLEBINDINGS, CLUSTERROLEBINDINGS,
    INGRESSES, INGRESSCLASSES, RUNTIME_CLASSES,
)


def lookup(group: str, plural: str) -> Kind | None:
    """The Kind served at /apis/{group}/v1/{plural} (group "" for /api/v1)."""
    for k in KINDS:
        if k.group == group and k.plural == plural:
            return k
    return None


def by_kind(api_version: str, kind: str) -> Kind | None:
    """The Kind of an object from its apiVersion and kind fields."""
    for k in KINDS:
        if k.api_version == api_version and k.kind == kind:
            return k
    return None
