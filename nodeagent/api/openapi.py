"""The slice of OpenAPI v3 kubectl needs: /openapi/v3 (the index) and one document per
group-version listing each kind's PATCH operation with its `fieldValidation` parameter.

kubectl 1.32 (cli-runtime query_param_verifier_v3.go) looks for that parameter to decide whether
the server validates fields itself; if it finds it, `kubectl apply/create` send
fieldValidation=Strict instead of downloading full schemas for client-side validation. We do
not publish component schemas, so kubectl computes strategic merge patches from its built-in
types (apply/patcher.go falls back to them).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from nodeagent.api import discovery
from nodeagent.machinery import kinds


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _doc(group: str, version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    params = [{"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
              for n in ("dryRun", "fieldManager", "fieldValidation", "force")]
    for k in discovery.served_kinds():
        if k.group != group or k.version != version:
            continue
        base = "/" + _gv_path(group, version)
        url = f"{base}/namespaces/{{namespace}}/{k.plural}/{{name}}" if k.namespaced else f"{base}/{k.plural}/{{name}}"
        gvk = {"group": k.group, "version": k.version, "kind": k.kind}
        op = {"operationId": f"patch{k.kind}", "parameters": params,
              "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk,
              "responses": {"200": {"description": "OK"}}}
        post = {"operationId": f"create{k.kind}", "parameters": params,
                "x-kubernetes-action": "post", "x-kubernetes-group-version-kind": gvk,
                "responses": {"201": {"description": "Created"}}}
        coll = url.rsplit("/", 1)[0]
        paths[url] = {"patch": op, "put": {**op, "operationId": f"replace{k.kind}", "x-kubernetes-action": "put"}}
        paths[coll] = {"post": post}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"}, "paths": paths,
            "components": {"schemas": {}}}


def _hash(doc: dict[str, Any]) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:64].upper()


def index() -> dict[str, Any]:
    out: dict[str, Any] = {}
    gvs = [("", "v1")] + [(g, "v1") for g in discovery.groups() if any(k.group == g for k in kinds.KINDS)]
    for g, v in gvs:
        p = _gv_path(g, v)
        out[p] = {"serverRelativeURL": f"/openapi/v3/{p}?hash={_hash(_doc(g, v))}"}
    return {"paths": out}


def document(path: str) -> dict[str, Any] | None:
    """The document for `api/v1` or `apis/G/V`, or None."""
    parts = [p for p in path.split("/") if p]
    if len(parts) == 2 and parts[0] == "api":
        g, v = "", parts[1]
    elif len(parts) == 3 and parts[0] == "apis":
        g, v = parts[1], parts[2]
    else:
        return None
    if not any(k.group == g and k.version == v for k in kinds.KINDS):
        return None
    return _doc(g, v)
