"""NodeRestriction (upstream plugin/pkg/admission/noderestriction/admission.go): a node may
create only mirror pods bound to itself that name no other object, delete or evict only pods bound
to itself, update only the status of those pods (labels unchanged), change only its own Node
(never its taints, its ownerReferences, node-restriction.kubernetes.io/ labels or kubernetes.io
labels the kubelet does not own), ask for tokens only bound to its own pods, and touch only its own
Lease. Other users pass untouched."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from nodeagent.api.admission.request import CREATE, DELETE, UPDATE, Request
from nodeagent.api.auth.graph import pod_references

Obj = dict[str, Any]
Getter = Callable[[str, str, str], Awaitable[Obj | None]]  # (resource, namespace, name) -> object

MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
NODE_LEASE_NAMESPACE = "kube-node-lease"
NODE_RESTRICTION_NAMESPACE = "node-restriction.kubernetes.io"
# k8s.io/kubelet/pkg/apis well_known_labels.go: the kubernetes.io labels a kubelet may set
KUBELET_LABELS = {
    "kubernetes.io/hostname", "topology.kubernetes.io/zone", "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type", "node.kubernetes.io/instance-type", "kubernetes.io/os",
    "kubernetes.io/arch", "beta.kubernetes.io/os", "beta.kubernetes.io/arch",
}
KUBELET_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")


def _label_namespace(key: str) -> str:
    prefix, sep, _ = key.partition("/")
    return prefix if sep else ""


def _in_namespace(ns: str, want: str) -> bool:
    return ns == want or ns.endswith("." + want)


def is_kubelet_label(key: str) -> bool:
    ns = _label_namespace(key)
    return key in KUBELET_LABELS or any(_in_namespace(ns, k) for k in KUBELET_LABEL_NAMESPACES)


def _is_kubernetes_label(key: str) -> bool:
    ns = _label_namespace(key)
    return _in_namespace(ns, "kubernetes.io") or _in_namespace(ns, "k8s.io")


def modified_labels(new: dict[str, str], old: dict[str, str]) -> set[str]:
    return {k for k in set(new) | set(old) if new.get(k) != old.get(k)}


def forbidden_labels(keys: set[str]) -> list[str]:
    out = set()
    for k in keys:
        if _in_namespace(_label_namespace(k), NODE_RESTRICTION_NAMESPACE):
            out.add(k)
        if _is_kubernetes_label(k) and not is_kubelet_label(k):
            out.add(k)
    return sorted(out)


def _meta(obj: Obj | None) -> Obj:
    m = (obj or {}).get("metadata")
    return m if isinstance(m, dict) else {}


def _spec(obj: Obj | None) -> Obj:
    s = (obj or {}).get("spec")
    return s if isinstance(s, dict) else {}


class NodeRestriction:
    name = "NodeRestriction"

    async def validate(self, attrs: Any) -> None:
        if attrs.user is not None:  # the apiserver's own writes are not admitted
            await self(Request.of(attrs))

    async def admit(self, attrs: Any) -> None:
        pass

    def __init__(self, get: Getter) -> None:
        self.get = get

    async def __call__(self, req: Request) -> None:
        if not req.user.is_node:
            return
        node = req.user.node_name
        if not node:
            raise req.forbidden(f'could not determine node from user "{req.user.name}"')
        res = req.qualified_resource
        if res == "pods":
            if req.subresource == "":
                await self._pod(node, req)
            elif req.subresource == "status":
                self._pod_status(node, req)
            elif req.subresource == "eviction":
                await self._eviction(node, req)
            else:
                raise req.forbidden(f'unexpected pod subresource "{req.subresource}", only \'status\' and '
                                    "'eviction' are allowed")
        elif res == "nodes":
            self._node(node, req)
        elif res == "persistentvolumeclaims":
            raise req.forbidden("may only update PVC status")
        elif res == "serviceaccounts":
            await self._token(node, req)
        elif res == "leases.coordination.k8s.io":
            self._lease(node, req)

    # --- pods ------------------------------------------------------------------------------
    async def _pod(self, node: str, req: Request) -> None:
        if req.operation == CREATE:
            await self._mirror_pod(node, req)
        elif req.operation == DELETE:
            if _spec(req.old).get("nodeName") != node:
                raise req.forbidden(f'node "{node}" can only delete pods with spec.nodeName set to itself')
        else:
            raise req.forbidden(f'unexpected operation "{req.operation.capitalize()}", node "{node}" can only '
                                "create and delete mirror pods")

    async def _mirror_pod(self, node: str, req: Request) -> None:
        pod = req.obj or {}
        meta, spec = _meta(pod), _spec(pod)
        if MIRROR_POD_ANNOTATION not in (meta.get("annotations") or {}):
            raise req.forbidden(f'pod does not have "{MIRROR_POD_ANNOTATION}" annotation, node "{node}" can only '
                                "create mirror pods")
        if spec.get("nodeName") != node:
            raise req.forbidden(f'node "{node}" can only create pods with spec.nodeName set to itself')
        owners = meta.get("ownerReferences") or []
        if len(owners) > 1:
            raise req.forbidden(f'node "{node}" can only create pods with a single owner reference set to itself')
        if not owners:
            raise req.forbidden(f'node "{node}" can only create pods with an owner reference set to itself')
        owner = owners[0] if isinstance(owners[0], dict) else {}
        if owner.get("apiVersion") != "v1" or owner.get("kind") != "Node" or owner.get("name") != node:
            raise req.forbidden(f'node "{node}" can only create pods with an owner reference set to itself')
        if owner.get("controller") is not True:
            raise req.forbidden(f'node "{node}" can only create pods with a controller owner reference set to '
                                "itself")
        if owner.get("blockOwnerDeletion") is True:
            raise req.forbidden(f'node "{node}" must not set blockOwnerDeletion on an owner reference')
        current = await self.get("nodes", "", node)
        if current is None:
            from nodeagent.api import errors

            raise errors.not_found("nodes", "", node)
        if owner.get("uid") != _meta(current).get("uid"):
            raise req.forbidden(f"node {node} UID mismatch: expected {owner.get('uid')} got "
                                f"{_meta(current).get('uid')}")
        # a mirror pod may name no other API object (the node could read it through the pod)
        if spec.get("serviceAccountName"):
            raise req.forbidden(f'node "{node}" can not create pods that reference a service account')
        kinds = {r[0] for r in pod_references(pod)}
        for resource, what in (("secrets", "secrets"), ("configmaps", "configmaps"),
                               ("persistentvolumeclaims", "persistentvolumeclaims")):
            if resource in kinds:
                raise req.forbidden(f'node "{node}" can not create pods that reference {what}')
        for v in spec.get("volumes") or []:
            for src in ((v.get("projected") or {}).get("sources") or []) if isinstance(v, dict) else []:
                if isinstance(src, dict) and "clusterTrustBundle" in src:
                    raise req.forbidden(f'node "{node}" can not create pods that reference clustertrustbundles')

    def _pod_status(self, node: str, req: Request) -> None:
        if req.operation != UPDATE:
            raise req.forbidden(f'unexpected operation "{req.operation.capitalize()}"')
        if _spec(req.old).get("nodeName") != node:
            raise req.forbidden(f'node "{node}" can only update pod status for pods with spec.nodeName set to '
                                "itself")
        if (_meta(req.obj).get("labels") or {}) != (_meta(req.old).get("labels") or {}):
            raise req.forbidden(f'node "{node}" cannot update labels through pod status')

    async def _eviction(self, node: str, req: Request) -> None:
        name = req.name or _meta(req.obj).get("name") or ""
        if not name:
            raise req.forbidden("could not determine pod from request data")
        pod = await self.get("pods", req.namespace, str(name))
        if pod is None:
            from nodeagent.api import errors

            raise errors.not_found("pods", "", str(name))
        if _spec(pod).get("nodeName") != node:
            raise req.forbidden(f"node {node} can only evict pods with spec.nodeName set to itself")

    # --- nodes -----------------------------------------------------------------------------
    def _node(self, node: str, req: Request) -> None:
        name = req.name or _meta(req.obj).get("name") or ""
        if name != node:
            raise req.forbidden(f'node "{node}" is not allowed to modify node "{name}"')
        new_meta = _meta(req.obj)
        if req.operation == CREATE:
            if _spec(req.obj).get("configSource") is not None:
                raise req.forbidden(f'node "{node}" is not allowed to create pods with a non-nil configSource')
            bad = forbidden_labels(set(new_meta.get("labels") or {}))
            if bad:
                raise req.forbidden(f'node "{node}" is not allowed to set the following labels: {", ".join(bad)}')
            if new_meta.get("ownerReferences"):
                raise req.forbidden(f'node "{node}" is not allowed to set ownerReferences')
        elif req.operation == UPDATE:
            new_spec, old_spec, old_meta = _spec(req.obj), _spec(req.old), _meta(req.old)
            if new_spec.get("configSource") is not None and new_spec.get("configSource") != old_spec.get("configSource"):
                raise req.forbidden(f'node "{node}" is not allowed to update configSource to a new non-nil '
                                    "configSource")
            if (new_spec.get("taints") or []) != (old_spec.get("taints") or []):
                raise req.forbidden(f'node "{node}" is not allowed to modify taints')
            bad = forbidden_labels(modified_labels(new_meta.get("labels") or {}, old_meta.get("labels") or {}))
            if bad:
                raise req.forbidden(f"is not allowed to modify labels: {', '.join(bad)}")
            # CVE-2025-5187: an owner reference would let the garbage collector delete the Node
            if (new_meta.get("ownerReferences") or []) != (old_meta.get("ownerReferences") or []):
                raise req.forbidden(f'node "{node}" is not allowed to modify ownerReferences')

    # --- service account tokens, leases ----------------------------------------------------
    async def _token(self, node: str, req: Request) -> None:
        if req.operation != CREATE or req.subresource != "token":
            return
        ref = _spec(req.obj).get("boundObjectRef")
        if not isinstance(ref, dict) or ref.get("apiVersion") != "v1" or ref.get("kind") != "Pod" or \
                not ref.get("name"):
            raise req.forbidden("node requested token not bound to a pod")
        if not ref.get("uid"):
            raise req.forbidden("node requested token with a pod binding without a uid")
        pod = await self.get("pods", req.namespace, str(ref["name"]))
        if pod is None:
            from nodeagent.api import errors

            raise errors.not_found("pods", "", str(ref["name"]))
        if ref["uid"] != _meta(pod).get("uid"):
            raise req.forbidden(f"the UID in the bound object reference ({ref['uid']}) does not match the UID in "
                                "record. The object might have been deleted and then recreated")
        if _spec(pod).get("nodeName") != node:
            raise req.forbidden("node requested token bound to a pod scheduled on a different node")

    def _lease(self, node: str, req: Request) -> None:
        if req.namespace != NODE_LEASE_NAMESPACE:
            raise req.forbidden(f'can only access leases in the "{NODE_LEASE_NAMESPACE}" system namespace')
        name = _meta(req.obj).get("name") if req.operation == CREATE else req.name
        if name != node:
            raise req.forbidden("can only access node lease with the same name as the requesting node")
