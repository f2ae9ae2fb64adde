"""ServiceAccount admission (upstream plugin/pkg/admission/serviceaccount/admission.go): a new pod
runs as its namespace's `default` service account unless it names another, which must exist; and,
unless the pod or the account sets automountServiceAccountToken: false, it gets upstream's
projected `kube-api-access-XXXXX` volume (a bound token the kubelet requests and refreshes, the
cluster CA from the kube-root-ca.crt ConfigMap, the namespace) mounted read-only at
/var/run/secrets/kubernetes.io/serviceaccount in every container. Mirror pods are left alone."""

from __future__ import annotations

import secrets
from typing import Any

from nodeagent.api.admission.noderestriction import MIRROR_POD_ANNOTATION, Getter
from nodeagent.api.admission.request import CREATE, Request

Obj = dict[str, Any]
DEFAULT_SA = "default"
MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
VOLUME_PREFIX = "kube-api-access-"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
TOKEN_EXPIRATION = 3607  # upstream's 1h + 7s, so that kubelets can tell these apart
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # upstream utilrand's alphanumerics without vowels


def api_access_volume(name: str) -> Obj:
    return {"name": name, "projected": {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION, "path": "token"}},
        {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1",
                                                                       "fieldPath": "metadata.namespace"}}]}},
    ]}}


class ServiceAccountAdmission:
    name = "ServiceAccount"

    async def admit(self, attrs: Any) -> None:
        if attrs.user is not None:  # the apiserver's own writes are not admitted
            await self(Request.of(attrs))

    async def validate(self, attrs: Any) -> None:
        pass

    def __init__(self, get: Getter) -> None:
        self.get = get

    async def __call__(self, req: Request) -> None:
        if req.qualified_resource != "pods" or req.operation != CREATE or req.subresource or req.obj is None:
            return
        pod = req.obj
        raw_meta = pod.get("metadata")
        meta: Obj = raw_meta if isinstance(raw_meta, dict) else {}
        if MIRROR_POD_ANNOTATION in (meta.get("annotations") or {}):
            return
        spec = pod.get("spec")
        if not isinstance(spec, dict):
            return
        name = spec.get("serviceAccountName") or spec.get("serviceAccount") or DEFAULT_SA
        spec["serviceAccountName"] = spec["serviceAccount"] = name
        sa = await self.get("serviceaccounts", req.namespace, str(name))
        if sa is None:
            raise req.forbidden(f'error looking up service account {req.namespace}/{name}: serviceaccount "{name}" '
                                "not found")
        automount = spec.get("automountServiceAccountToken")
        if automount is None:
            automount = sa.get("automountServiceAccountToken")
        if automount is False:
            return
        containers = [c for key in ("initContainers", "containers") for c in spec.get(key) or []
                      if isinstance(c, dict)]
        if any(vm.get("mountPath") == MOUNT_PATH for c in containers for vm in c.get("volumeMounts") or []
               if isinstance(vm, dict)):
            return
        vols = spec.setdefault("volumes", [])
        if not isinstance(vols, list):
            return
        taken = {v.get("name") for v in vols if isinstance(v, dict)}
        vol_name = ""
        while not vol_name or vol_name in taken:
            vol_name = VOLUME_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(5))
        vols.append(api_access_volume(vol_name))
        for c in containers:
            mounts = c.setdefault("volumeMounts", [])
            if isinstance(mounts, list):
                mounts.append({"name": vol_name, "readOnly": True, "mountPath": MOUNT_PATH})


__all__ = ["ServiceAccountAdmission", "api_access_volume"]
