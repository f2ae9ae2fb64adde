"""API discovery documents: legacy (/api, /api/v1, /apis, /apis/G, /apis/G/V) and aggregated
(apidiscovery.k8s.io/v2, what kubectl 1.32 asks for first through its Accept header).
"""

from __future__ import annotations

from typing import Any

from nodeagent.machinery import kinds
from nodeagent.machinery.kinds import Kind

AGGREGATED_CT = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"

# Resources that are not stored objects, only POSTed (review APIs served by handlers of their own):
# (group, plural, kind).
REVIEWS = (
    ("authentication.k8s.io", "tokenreviews", "TokenReview"),
    ("authentication.k8s.io", "selfsubjectreviews", "SelfSubjectReview"),
    ("authorization.k8s.io", "subjectaccessreviews", "SubjectAccessReview"),
    ("authorization.k8s.io", "localsubjectaccessreviews", "LocalSubjectAccessReview"),
    ("authorization.k8s.io", "selfsubjectaccessreviews", "SelfSubjectAccessReview"),
    ("authorization.k8s.io", "selfsubjectrulesreviews", "SelfSubjectRulesReview"),
)
_NAMESPACED_REVIEWS = {"localsubjectaccessreviews"}

# `kubectl get all` expands the "all" category (upstream lists these kinds in it).
_ALL = {"pods", "services", "deployments", "replicasets", "daemonsets", "jobs"}

_SUB_VERBS = {
    "status": ["get", "patch", "update"], "scale": ["get", "patch", "update"], "binding": ["create"],
    "log": ["get"], "exec": ["create", "get"], "attach": ["create", "get"], "portforward": ["create", "get"], "eviction": ["create"], "token": ["create"],
    "proxy": ["get"], "finalize": ["update"],
}


# the group, version and kind a subresource takes or returns (status and the like: the resource's own)
_SUB_KINDS: dict[str, tuple[str, str, str]] = {
    "scale": ("autoscaling", "v1", "Scale"),
    "binding": ("", "v1", "Binding"),
    "eviction": ("policy", "v1", "Eviction"),
    "token": ("authentication.k8s.io", "v1", "TokenRequest"),
    "exec": ("", "v1", "PodExecOptions"),
    "attach": ("", "v1", "PodAttachOptions"),
    "portforward": ("", "v1", "PodPortForwardOptions"),
    "log": ("", "v1", "Pod"),
    "proxy": ("", "v1", "NodeProxyOptions"),
}


def _sub_kind(kind: Kind, sub: str) -> tuple[str, str, str]:
    return _SUB_KINDS.get(sub, (kind.group, kind.version, kind.kind))


def served_kinds() -> list[Kind]:
    return [k for k in kinds.KINDS if k is not kinds.BINDINGS]


def groups() -> list[str]:
    out: list[str] = []
    for k in served_kinds():
        if k.group and k.group not in out:
            out.append(k.group)
    for g, _, _ in REVIEWS:
        if g not in out:
            out.append(g)
    return out


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    resources: list[dict[str, Any]] = []
    for k in kinds.KINDS:
        if k.group != group or k.version != version:
            continue
        resources.append({"name": k.plural, "singularName": k.singular, "namespaced": k.namespaced,
                          "kind": k.kind, "verbs": list(k.verbs),
                          **({"shortNames": list(k.short_names)} if k.short_names else {}),
                          **({"categories": ["all"]} if k.plural in _ALL else {})})
        for sub in k.subresources:
            g, v, kk = _sub_kind(k, sub)
            entry: dict[str, Any] = {"name": f"{k.plural}/{sub}", "singularName": "", "namespaced": k.namespaced,
                                     "kind": kk, "verbs": _SUB_VERBS.get(sub, ["get"])}
            if g != k.group or v != k.version:
                entry["group"], entry["version"] = g, v
            resources.append(entry)
    for g, plural, kind in REVIEWS:
        if group == g and version == "v1":
            resources.append({"name": plural, "singularName": kind.lower(),
                              "namespaced": plural in _NAMESPACED_REVIEWS, "kind": kind, "verbs": ["create"]})
    if not resources:
        return None
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


def api_versions(server_address: str) -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def api_group(group: str) -> dict[str, Any] | None:
    if group not in groups():
        return None
    gv = {"groupVersion": f"{group}/v1", "version": "v1"}
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [gv], "preferredVersion": gv}


def api_group_list() -> dict[str, Any]:
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [{k: v for k, v in (api_group(g) or {}).items() if k not in ("kind", "apiVersion")}
                       for g in groups()]}


def _aggregated_group(group: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for k in kinds.KINDS:
        if k.group != group or k is kinds.BINDINGS:
            continue
        subs = []
        for sub in k.subresources:
            g, v, kk = _sub_kind(k, sub)
            subs.append({"subresource": sub, "responseKind": {"group": g, "version": v, "kind": kk},
                         "verbs": _SUB_VERBS.get(sub, ["get"])})
        r: dict[str, Any] = {
            "resource": k.plural, "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
            "scope": "Namespaced" if k.namespaced else "Cluster", "singularResource": k.singular,
            "verbs": list(k.verbs),
        }
        if k.short_names:
            r["shortNames"] = list(k.short_names)
        if k.plural in _ALL:
            r["categories"] = ["all"]
        if subs:
            r["subresources"] = subs
        resources.append(r)
    if group == kinds.BINDINGS.group:
        resources.append({"resource": "bindings", "responseKind": {"group": "", "version": "v1", "kind": "Binding"},
                          "scope": "Namespaced", "singularResource": "binding", "verbs": ["create"]})
    for g, plural, kind in REVIEWS:
        if group == g:
            resources.append({"resource": plural, "responseKind": {"group": group, "version": "v1", "kind": kind},
                              "scope": "Namespaced" if plural in _NAMESPACED_REVIEWS else "Cluster",
                              "singularResource": kind.lower(), "verbs": ["create"]})
    return {"metadata": {"name": group, "creationTimestamp": None},
            "versions": [{"version": "v1", "resources": resources, "freshness": "Current"}]}


def aggregated(legacy: bool) -> dict[str, Any]:
    items = [_aggregated_group("")] if legacy else [_aggregated_group(g) for g in groups()]
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {}, "items": items}


def wants_aggregated(accept: str) -> bool:
    """kubectl sends `application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,...`."""
    for part in accept.split(","):
        params = {p.strip().split("=", 1)[0]: p.strip().split("=", 1)[1] for p in part.split(";")[1:]
                  if "=" in p}
        if params.get("g") == "apidiscovery.k8s.io" and params.get("v") == "v2" and \
                params.get("as") == "APIGroupDiscoveryList":
            return True
    return False
