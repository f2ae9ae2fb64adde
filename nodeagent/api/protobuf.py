"""Decode the Kubernetes protobuf request bodies kubectl's typed clients send.

kubectl 1.32 posts `application/vnd.kubernetes.protobuf` for `kubectl create deployment|job|
configmap|secret|namespace|service|serviceaccount`. The body is the 4-byte magic "k8s\\0" and a
runtime.Unknown {typeMeta{apiVersion, kind}, raw} whose raw bytes are the object's message.

We decode those into the JSON shape the rest of the server uses, from a table of field numbers
for the messages those generators fill (k8s.io/api and apimachinery generated.proto). A field
outside the table is refused with 415 and a hint to send JSON or YAML; nothing is dropped
silently. Go encodes non-pointer fields even when zero; JSON omits them (`omitempty`), so zero
scalars are dropped except for the pointer fields listed in _KEEP_ZERO.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    pass


# Field kinds: s string, b bool, i int (varint), y bytes, m:<Message>, t Time, q Quantity,
# n IntOrString, M:<value kind> map<string, value>, x ignored (status: reset on create anyway). A leading "*" marks a repeated field; a
# trailing "^" an embedded struct inlined into its parent in JSON.
_F = dict[int, tuple[str, str]]
_SCHEMA: dict[str, _F] = {
    "ObjectMeta": {1: ("name", "s"), 2: ("generateName", "s"), 3: ("namespace", "s"), 4: ("selfLink", "s"),
                   5: ("uid", "s"), 6: ("resourceVersion", "s"), 7: ("generation", "i"),
                   8: ("creationTimestamp", "t"), 9: ("deletionTimestamp", "t"),
                   10: ("deletionGracePeriodSeconds", "i"), 11: ("labels", "M:s"), 12: ("annotations", "M:s"),
                   13: ("ownerReferences", "*m:OwnerReference"), 14: ("finalizers", "*s")},
    "OwnerReference": {5: ("apiVersion", "s"), 1: ("kind", "s"), 3: ("name", "s"), 4: ("uid", "s"),
                       6: ("controller", "b"), 7: ("blockOwnerDeletion", "b")},
    "LabelSelector": {1: ("matchLabels", "M:s"), 2: ("matchExpressions", "*m:LabelSelectorRequirement")},
    "LabelSelectorRequirement": {1: ("key", "s"), 2: ("operator", "s"), 3: ("values", "*s")},
    # core/v1
    "Namespace": {1: ("metadata", "m:ObjectMeta"), 2: ("spec", "m:NamespaceSpec"), 3: ("status", "x")},
    "NamespaceSpec": {1: ("finalizers", "*s")},
    "ConfigMap": {1: ("metadata", "m:ObjectMeta"), 4: ("immutable", "b"), 2: ("data", "M:s"),
                  3: ("binaryData", "M:y")},
    "Secret": {1: ("metadata", "m:ObjectMeta"), 5: ("immutable", "b"), 2: ("data", "M:y"), 4: ("stringData", "M:s"),
               3: ("type", "s")},
    "ServiceAccount": {1: ("metadata", "m:ObjectMeta"), 2: ("secrets", "*m:ObjectReference"),
                       3: ("imagePullSecrets", "*m:LocalObjectReference"), 4: ("automountServiceAccountToken", "b")},
    "ObjectReference": {1: ("kind", "s"), 2: ("namespace", "s"), 3: ("name", "s"), 4: ("uid", "s"),
                        5: ("apiVersion", "s"), 6: ("resourceVersion", "s"), 7: ("fieldPath", "s")},
    "LocalObjectReference": {1: ("name", "s")},
    "Service": {1: ("metadata", "m:ObjectMeta"), 2: ("spec", "m:ServiceSpec"), 3: ("status", "x")},
    "ServiceSpec": {1: ("ports", "*m:ServicePort"), 2: ("selector", "M:s"), 3: ("clusterIP", "s"),
                    18: ("clusterIPs", "*s"), 4: ("type", "s"), 5: ("externalIPs", "*s"), 7: ("sessionAffinity", "s"),
                    8: ("loadBalancerIP", "s"), 9: ("loadBalancerSourceRanges", "*s"), 10: ("externalName", "s"),
                    11: ("externalTrafficPolicy", "s"), 12: ("healthCheckNodePort", "i"),
                    13: ("publishNotReadyAddresses", "b"), 19: ("ipFamilies", "*s"), 17: ("ipFamilyPolicy", "s"),
                    20: ("allocateLoadBalancerNodePorts", "b"), 21: ("loadBalancerClass", "s"),
                    22: ("internalTrafficPolicy", "s")},
    "ServicePort": {1: ("name", "s"), 2: ("protocol", "s"), 6: ("appProtocol", "s"), 3: ("port", "i"),
                    4: ("targetPort", "n"), 5: ("nodePort", "i")},
    "PodTemplateSpec": {1: ("metadata", "m:ObjectMeta"), 2: ("spec", "m:PodSpec")},
    "PodSpec": {1: ("volumes", "*m:Volume"), 20: ("initContainers", "*m:Container"), 2: ("containers", "*m:Container"),
                3: ("restartPolicy", "s"), 4: ("terminationGracePeriodSeconds", "i"),
                5: ("activeDeadlineSeconds", "i"), 6: ("dnsPolicy", "s"), 7: ("nodeSelector", "M:s"),
                8: ("serviceAccountName", "s"), 9: ("serviceAccount", "s"),
                21: ("automountServiceAccountToken", "b"), 10: ("nodeName", "s"), 11: ("hostNetwork", "b"),
                12: ("hostPID", "b"), 13: ("hostIPC", "b"), 27: ("shareProcessNamespace", "b"),
                14: ("securityContext", "m:Empty"), 15: ("imagePullSecrets", "*m:LocalObjectReference"),
                16: ("hostname", "s"), 17: ("subdomain", "s"), 19: ("schedulerName", "s"),
                22: ("tolerations", "*m:Toleration"), 24: ("priorityClassName", "s"), 25: ("priority", "i"),
                29: ("runtimeClassName", "s"), 30: ("enableServiceLinks", "b"), 31: ("preemptionPolicy", "s")},
    "Container": {1: ("name", "s"), 2: ("image", "s"), 3: ("command", "*s"), 4: ("args", "*s"), 5: ("workingDir", "s"),
                  6: ("ports", "*m:ContainerPort"), 7: ("env", "*m:EnvVar"), 8: ("resources", "m:ResourceRequirements"),
                  9: ("volumeMounts", "*m:VolumeMount"), 13: ("terminationMessagePath", "s"),
                  20: ("terminationMessagePolicy", "s"), 14: ("imagePullPolicy", "s"), 16: ("stdin", "b"),
                  17: ("stdinOnce", "b"), 18: ("tty", "b")},
    "ContainerPort": {1: ("name", "s"), 2: ("hostPort", "i"), 3: ("containerPort", "i"), 4: ("protocol", "s"),
                      5: ("hostIP", "s")},
    "EnvVar": {1: ("name", "s"), 2: ("value", "s"), 3: ("valueFrom", "m:EnvVarSource")},
    "EnvVarSource": {1: ("fieldRef", "m:ObjectFieldSelector"), 3: ("configMapKeyRef", "m:KeySelector"),
                     4: ("secretKeyRef", "m:KeySelector")},
    "ObjectFieldSelector": {1: ("apiVersion", "s"), 2: ("fieldPath", "s")},
    "KeySelector": {1: ("", "m:LocalObjectReference^"), 2: ("key", "s"), 3: ("optional", "b")},
    "ResourceRequirements": {1: ("limits", "M:q"), 2: ("requests", "M:q")},
    "VolumeMount": {1: ("name", "s"), 2: ("readOnly", "b"), 3: ("mountPath", "s"), 4: ("subPath", "s"),
                    5: ("mountPropagation", "s"), 6: ("subPathExpr", "s")},
    "Volume": {1: ("name", "s"), 2: ("", "m:VolumeSource^")},
    "VolumeSource": {1: ("hostPath", "m:HostPathVolumeSource"), 2: ("emptyDir", "m:EmptyDirVolumeSource"),
                     6: ("secret", "m:SecretVolumeSource"), 19: ("configMap", "m:ConfigMapVolumeSource")},
    "HostPathVolumeSource": {1: ("path", "s"), 2: ("type", "s")},
    "EmptyDirVolumeSource": {1: ("medium", "s"), 2: ("sizeLimit", "q")},
    "SecretVolumeSource": {1: ("secretName", "s"), 2: ("items", "*m:KeyToPath"), 3: ("defaultMode", "i"),
                           4: ("optional", "b")},
    "ConfigMapVolumeSource": {1: ("", "m:LocalObjectReference^"), 2: ("items", "*m:KeyToPath"),
                              3: ("defaultMode", "i"), 4: ("optional", "b")},
    "KeyToPath": {1: ("key", "s"), 2: ("path", "s"), 3: ("mode", "i")},
    "Toleration": {1: ("key", "s"), 2: ("operator", "s"), 3: ("value", "s"), 4: ("effect", "s"),
                   5: ("tolerationSeconds", "i")},
    # apps/v1, batch/v1
    "Deployment": {1: ("metadata", "m:ObjectMeta"), 2: ("spec", "m:DeploymentSpec"), 3: ("status", "x")},
    "DeploymentSpec": {1: ("replicas", "i"), 2: ("selector", "m:LabelSelector"), 3: ("template", "m:PodTemplateSpec"),
                       4: ("strategy", "m:DeploymentStrategy"), 5: ("minReadySeconds", "i"),
                       6: ("revisionHistoryLimit", "i"), 7: ("paused", "b"), 9: ("progressDeadlineSeconds", "i")},
    "DeploymentStrategy": {1: ("type", "s"), 2: ("rollingUpdate", "m:RollingUpdateDeployment")},
    "RollingUpdateDeployment": {1: ("maxUnavailable", "n"), 2: ("maxSurge", "n")},
    "Job": {1: ("metadata", "m:ObjectMeta"), 2: ("spec", "m:JobSpec"), 3: ("status", "x")},
    "JobSpec": {1: ("parallelism", "i"), 2: ("completions", "i"), 3: ("activeDeadlineSeconds", "i"),
                7: ("backoffLimit", "i"), 4: ("selector", "m:LabelSelector"), 5: ("manualSelector", "b"),
                6: ("template", "m:PodTemplateSpec"), 8: ("ttlSecondsAfterFinished", "i"), 9: ("completionMode", "s"),
                10: ("suspend", "b"), 14: ("podReplacementPolicy", "s")},
    # networking.k8s.io/v1 (kubectl create ingress)
    "Ingress": {1: ("metadata", "m:ObjectMeta"), 2: ("spec", "m:IngressSpec"), 3: ("status", "x")},
    "IngressSpec": {4: ("ingressClassName", "s"), 1: ("defaultBackend", "m:IngressBackend"),
                    2: ("tls", "*m:IngressTLS"), 3: ("rules", "*m:IngressRule")},
    "IngressBackend": {4: ("service", "m:IngressServiceBackend"), 3: ("resource", "m:TypedLocalObjectReference")},
    "IngressServiceBackend": {1: ("name", "s"), 2: ("port", "m:ServiceBackendPort")},
    "ServiceBackendPort": {1: ("name", "s"), 2: ("number", "i")},
    "TypedLocalObjectReference": {1: ("apiGroup", "s"), 2: ("kind", "s"), 3: ("name", "s")},
    "IngressTLS": {1: ("hosts", "*s"), 2: ("secretName", "s")},
    "IngressRule": {1: ("host", "s"), 2: ("", "m:IngressRuleValue^")},
    "IngressRuleValue": {1: ("http", "m:HTTPIngressRuleValue")},
    "HTTPIngressRuleValue": {1: ("paths", "*m:HTTPIngressPath")},
    "HTTPIngressPath": {1: ("path", "s"), 3: ("pathType", "s"), 2: ("backend", "m:IngressBackend")},
    # authentication.k8s.io/v1, authorization.k8s.io/v1 (kubectl auth whoami / can-i, kubelet reviews)
    "SelfSubjectReview": {1: ("metadata", "m:ObjectMeta"), 2: ("status", "x")},
    "TokenReview": {1: ("metadata", "m:ObjectMeta"), 2: ("spec", "m:TokenReviewSpec"), 3: ("status", "x")},
    "TokenReviewSpec": {1: ("token", "s"), 2: ("audiences", "*s")},
    "SelfSubjectAccessReview": {1: ("metadata", "m:ObjectMeta"), 2: ("spec", "m:SelfSubjectAccessReviewSpec"),
                                3: ("status", "x")},
    "SelfSubjectAccessReviewSpec": {1: ("resourceAttributes", "m:ResourceAttributes"),
                                    2: ("nonResourceAttributes", "m:NonResourceAttributes")},
    "ResourceAttributes": {1: ("namespace", "s"), 2: ("verb", "s"), 3: ("group", "s"), 4: ("version", "s"),
                           5: ("resource", "s"), 6: ("subresource", "s"), 7: ("name", "s"), 8: ("fieldSelector", "x"),
                           9: ("labelSelector", "x")},
    "NonResourceAttributes": {1: ("path", "s"), 2: ("verb", "s")},
    # rbac.authorization.k8s.io/v1 (kubectl create role/clusterrole/rolebinding/clusterrolebinding)
    "PolicyRule": {1: ("verbs", "*s"), 2: ("apiGroups", "*s"), 3: ("resources", "*s"), 4: ("resourceNames", "*s"),
                   5: ("nonResourceURLs", "*s")},
    "Role": {1: ("metadata", "m:ObjectMeta"), 2: ("rules", "*m:PolicyRule")},
    "ClusterRole": {1: ("metadata", "m:ObjectMeta"), 2: ("rules", "*m:PolicyRule"),
                    3: ("aggregationRule", "m:AggregationRule")},
    "AggregationRule": {1: ("clusterRoleSelectors", "*m:LabelSelector")},
    "RoleBinding": {1: ("metadata", "m:ObjectMeta"), 2: ("subjects", "*m:Subject"), 3: ("roleRef", "m:RoleRef")},
    "Subject": {1: ("kind", "s"), 2: ("apiGroup", "s"), 3: ("name", "s"), 4: ("namespace", "s")},
    "RoleRef": {1: ("apiGroup", "s"), 2: ("kind", "s"), 3: ("name", "s")},
    # authentication.k8s.io/v1 TokenRequest (kubectl create token)
    "TokenRequest": {1: ("metadata", "m:ObjectMeta"), 2: ("spec", "m:TokenRequestSpec"), 3: ("status", "x")},
    "TokenRequestSpec": {1: ("audiences", "*s"), 4: ("expirationSeconds", "i"),
                         3: ("boundObjectRef", "m:BoundObjectReference")},
    "BoundObjectReference": {1: ("kind", "s"), 2: ("apiVersion", "s"), 3: ("name", "s"), 4: ("uid", "s")},
    # authorization.k8s.io/v1 SelfSubjectRulesReview (kubectl auth can-i --list)
    "SelfSubjectRulesReview": {1: ("metadata", "m:ObjectMeta"), 2: ("spec", "m:SelfSubjectRulesReviewSpec"),
                               3: ("status", "x")},
    "SelfSubjectRulesReviewSpec": {1: ("namespace", "s")},
    "Empty": {},
}

_TOP = {("v1", "Namespace"): "Namespace", ("v1", "ConfigMap"): "ConfigMap", ("v1", "Secret"): "Secret",
        ("v1", "Service"): "Service", ("v1", "ServiceAccount"): "ServiceAccount",
        ("apps/v1", "Deployment"): "Deployment", ("batch/v1", "Job"): "Job",
        ("networking.k8s.io/v1", "Ingress"): "Ingress",
        ("authentication.k8s.io/v1", "SelfSubjectReview"): "SelfSubjectReview",
        ("authentication.k8s.io/v1", "TokenReview"): "TokenReview",
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): "SelfSubjectAccessReview",
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview"): "SelfSubjectRulesReview",
        ("authentication.k8s.io/v1", "TokenRequest"): "TokenRequest",
        ("rbac.authorization.k8s.io/v1", "Role"): "Role", ("rbac.authorization.k8s.io/v1", "ClusterRole"): "ClusterRole",
        ("rbac.authorization.k8s.io/v1", "RoleBinding"): "RoleBinding",
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "RoleBinding"}

# Go pointer fields: present on the wire only when set, so a zero value is meaningful.
_KEEP_ZERO = {
    "replicas", "revisionHistoryLimit", "progressDeadlineSeconds", "terminationGracePeriodSeconds",
    "activeDeadlineSeconds", "parallelism", "completions", "backoffLimit", "manualSelector", "suspend",
    "ttlSecondsAfterFinished", "automountServiceAccountToken", "enableServiceLinks", "priority",
    "shareProcessNamespace", "immutable", "defaultMode", "optional", "tolerationSeconds",
    "allocateLoadBalancerNodePorts", "deletionGracePeriodSeconds", "controller", "blockOwnerDeletion", "mode",
    "expirationSeconds",
}


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ProtobufError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 70:
            raise ProtobufError("varint too long")


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    out: list[tuple[int, int, Any]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
            out.append((num, wt, v))
        elif wt == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ProtobufError("truncated length-delimited field")
            out.append((num, wt, buf[i:i + n]))
            i += n
        elif wt == 1:
            out.append((num, wt, buf[i:i + 8]))
            i += 8
        elif wt == 5:
            out.append((num, wt, buf[i:i + 4]))
            i += 4
        else:
            raise ProtobufError(f"unsupported wire type {wt}")
    return out


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _scalar(kind: str, wt: int, v: Any) -> Any:
    if kind == "s":
        return bytes(v).decode("utf-8")
    if kind == "y":
        return base64.b64encode(bytes(v)).decode()
    if kind == "b":
        return bool(v)
    if kind == "i":
        return _signed(int(v))
    if kind == "q":  # resource.Quantity {1: string}
        return next((bytes(x).decode() for n, _, x in _fields(bytes(v)) if n == 1), "")
    if kind == "n":  # intstr.IntOrString {1: type, 2: intVal, 3: strVal}
        f = {n: x for n, _, x in _fields(bytes(v))}
        return bytes(f.get(3, b"")).decode() if f.get(1) == 1 else _signed(int(f.get(2, 0)))
    if kind == "t":  # meta.Time {1: seconds, 2: nanos}
        f = {n: x for n, _, x in _fields(bytes(v))}
        secs = _signed(int(f.get(1, 0)))
        if secs <= 0:
            return None
        return datetime.datetime.fromtimestamp(secs, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    raise ProtobufError(f"unknown field kind {kind}")


def _is_zero(v: Any) -> bool:
    return v is None or v == "" or v is False or v == 0 or v == [] or v == {}


def decode_message(name: str, buf: bytes, path: str = "") -> dict[str, Any]:
    schema = _SCHEMA.get(name)
    if schema is None:
        raise ProtobufError(f"message {name} at {path or '.'} is not supported")
    out: dict[str, Any] = {}
    for num, wt, v in _fields(buf):
        spec = schema.get(num)
        if spec is None:
            raise ProtobufError(f"field {num} of {name} at {path or '.'} is not supported")
        key, kind = spec
        repeated = kind.startswith("*")
        kind = kind.lstrip("*")
        inline = kind.endswith("^")
        kind = kind.rstrip("^")
        here = f"{path}.{key}" if key else path
        value: Any
        if kind == "x":
            continue
        if kind.startswith("m:"):
            value = decode_message(kind[2:], bytes(v), here)
        elif kind.startswith("M:"):
            entry = {n: x for n, _, x in _fields(bytes(v))}
            k = bytes(entry.get(1, b"")).decode()
            value = _scalar(kind[2:], 2, entry.get(2, b""))
            out.setdefault(key, {})[k] = value
            continue
        elif repeated and wt == 2 and kind in ("i", "b"):
            # packed repeated scalars
            packed, j = [], 0
            data = bytes(v)
            while j < len(data):
                x, j = _varint(data, j)
                packed.append(_scalar(kind, 0, x))
            out.setdefault(key, []).extend(packed)
            continue
        else:
            value = _scalar(kind, wt, v)
        if inline:
            out.update(value)
        elif repeated:
            out.setdefault(key, []).append(value)
        elif kind in ("s", "b", "i", "t", "q", "n", "y") and _is_zero(value) and key not in _KEEP_ZERO:
            continue  # a Go non-pointer zero value: JSON would omit it
        else:
            out[key] = value
    return out


def decode(body: bytes) -> dict[str, Any]:
    """The JSON object for a protobuf request body; raises ProtobufError."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf magic prefix")
    envelope = {n: x for n, _, x in _fields(body[len(MAGIC):])}
    tm = {n: bytes(x).decode() for n, _, x in _fields(bytes(envelope.get(1, b"")))}
    api_version, kind = tm.get(1, ""), tm.get(2, "")
    if envelope.get(3) or envelope.get(4):
        raise ProtobufError("encoded or nested content types are not supported")
    msg = _TOP.get((api_version, kind))
    if msg is None:
        raise ProtobufError(f"protobuf bodies for {api_version} {kind} are not supported")
    obj = decode_message(msg, bytes(envelope.get(2, b"")))
    return {"apiVersion": api_version, "kind": kind, **obj}
