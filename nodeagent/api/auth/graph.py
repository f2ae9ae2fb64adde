"""What each node may reach: upstream's node authorizer graph (plugin/pkg/auth/authorizer/node/
graph.go, graph_populator.go), flattened. A pod bound to a node gives that node an edge to the pod
and to every secret, configmap, persistentvolumeclaim and serviceaccount the pod names
(pkg/api/pod/util.go VisitPodSecretNames, VisitPodConfigmapNames); a pod that is not bound gives
nothing. Each node keeps a count per object, so an object stays reachable while any pod bound to
the node still uses it. Fed by the store's pods (feed.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Obj = dict[str, Any]
Ref = tuple[str, str, str]  # (resource, namespace, name): "pods", "secrets", "configmaps", ...


def _containers(spec: Obj) -> Iterator[Obj]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                yield c


def _source_secret(src: Obj) -> Iterator[str]:
    """Secret names a volume source names (secret, projected secret, and the plugins' secretRefs)."""
    if isinstance(src.get("secret"), dict) and src["secret"].get("secretName"):
        yield str(src["secret"]["secretName"])
    for plugin in ("azureFile",):
        if isinstance(src.get(plugin), dict) and src[plugin].get("secretName"):
            yield str(src[plugin]["secretName"])
    for plugin in ("cephfs", "cinder", "flexVolume", "rbd", "iscsi", "scaleIO", "storageos"):
        ref = src.get(plugin, {}).get("secretRef") if isinstance(src.get(plugin), dict) else None
        if isinstance(ref, dict) and ref.get("name"):
            yield str(ref["name"])
    csi = src.get("csi")
    if isinstance(csi, dict) and isinstance(csi.get("nodePublishSecretRef"), dict):
        if csi["nodePublishSecretRef"].get("name"):
            yield str(csi["nodePublishSecretRef"]["name"])


def pod_references(pod: Obj) -> set[Ref]:
    """Every object a pod names, in its own namespace."""
    meta = pod.get("metadata") or {}
    ns = str(meta.get("namespace") or "")
    spec = pod.get("spec") or {}
    refs: set[Ref] = set()
    for s in spec.get("imagePullSecrets") or []:
        if isinstance(s, dict) and s.get("name"):
            refs.add(("secrets", ns, str(s["name"])))
    for c in _containers(spec):
        for ef in c.get("envFrom") or []:
            if not isinstance(ef, dict):
                continue
            if isinstance(ef.get("secretRef"), dict) and ef["secretRef"].get("name"):
                refs.add(("secrets", ns, str(ef["secretRef"]["name"])))
            if isinstance(ef.get("configMapRef"), dict) and ef["configMapRef"].get("name"):
                refs.add(("configmaps", ns, str(ef["configMapRef"]["name"])))
        for e in c.get("env") or []:
            vf = e.get("valueFrom") if isinstance(e, dict) else None
            if not isinstance(vf, dict):
                continue
            if isinstance(vf.get("secretKeyRef"), dict) and vf["secretKeyRef"].get("name"):
                refs.add(("secrets", ns, str(vf["secretKeyRef"]["name"])))
            if isinstance(vf.get("configMapKeyRef"), dict) and vf["configMapKeyRef"].get("name"):
                refs.add(("configmaps", ns, str(vf["configMapKeyRef"]["name"])))
    for v in spec.get("volumes") or []:
        if not isinstance(v, dict):
            continue
        refs.update(("secrets", ns, n) for n in _source_secret(v))
        if isinstance(v.get("configMap"), dict) and v["configMap"].get("name"):
            refs.add(("configmaps", ns, str(v["configMap"]["name"])))
        proj = v.get("projected")
        for src in (proj.get("sources") or []) if isinstance(proj, dict) else []:
            if not isinstance(src, dict):
                continue
            if isinstance(src.get("secret"), dict) and src["secret"].get("name"):
                refs.add(("secrets", ns, str(src["secret"]["name"])))
            if isinstance(src.get("configMap"), dict) and src["configMap"].get("name"):
                refs.add(("configmaps", ns, str(src["configMap"]["name"])))
        pvc = v.get("persistentVolumeClaim")
        if isinstance(pvc, dict) and pvc.get("claimName"):
            refs.add(("persistentvolumeclaims", ns, str(pvc["claimName"])))
        if isinstance(v.get("ephemeral"), dict):
            refs.add(("persistentvolumeclaims", ns, f"{meta.get('name', '')}-{v.get('name', '')}"))
    sa = spec.get("serviceAccountName") or spec.get("serviceAccount")
    if sa:
        refs.add(("serviceaccounts", ns, str(sa)))
    return refs


class NodeGraph:
    def __init__(self) -> None:
        self._pods: dict[tuple[str, str], tuple[str, set[Ref]]] = {}  # pod -> (node, refs incl. itself)
        self._reach: dict[str, dict[Ref, int]] = {}  # node -> object -> number of its pods naming it

    def _drop(self, key: tuple[str, str]) -> None:
        old = self._pods.pop(key, None)
        if old is None:
            return
        node, refs = old
        counts = self._reach.get(node, {})
        for r in refs:
            n = counts.get(r, 0) - 1
            if n > 0:
                counts[r] = n
            else:
                counts.pop(r, None)
        if not counts:
            self._reach.pop(node, None)

    def set_pod(self, pod: Obj) -> None:
        meta = pod.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        self._drop(key)
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            return
        refs = pod_references(pod) | {("pods", key[0], key[1])}
        self._pods[key] = (str(node), refs)
        counts = self._reach.setdefault(str(node), {})
        for r in refs:
            counts[r] = counts.get(r, 0) + 1

    def delete_pod(self, pod: Obj) -> None:
        meta = pod.get("metadata") or {}
        self._drop((str(meta.get("namespace") or ""), str(meta.get("name") or "")))

    def on_event(self, type_: str, obj: Obj, _prev: Obj | None) -> None:
        if type_ == "DELETED":
            self.delete_pod(obj)
        else:
            self.set_pod(obj)

    def reaches(self, node: str, resource: str, namespace: str, name: str) -> bool:
        return self._reach.get(node, {}).get((resource, namespace, name), 0) > 0
