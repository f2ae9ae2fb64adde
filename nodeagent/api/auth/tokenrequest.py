"""serviceaccounts/NAME/token (upstream pkg/registry/core/serviceaccount/storage/token.go): a
TokenRequest (authentication.k8s.io/v1) asks for a token of the service account for some
audiences and a duration, optionally bound to a Pod, Secret or Node that must exist (a token bound
to a pod is also bound to the pod's node)."""

from __future__ import annotations

import datetime
from typing import Any

from nodeagent.api import errors
from nodeagent.api.auth.serviceaccount import Getter, ServiceAccountTokens

Obj = dict[str, Any]
DEFAULT_EXPIRATION = 3600
MAX_EXPIRATION = 1 << 32
_BINDABLE = {"Pod": ("pods", True), "Secret": ("secrets", True), "Node": ("nodes", False)}


def _invalid(name: str, field: str, reason: str, msg: str) -> errors.ApiError:
    return errors.invalid("TokenRequest", "authentication.k8s.io", name, [(field, reason, msg)])


async def create_token(tokens: ServiceAccountTokens, get: Getter, sa: Obj, body: Any,
                       min_expiration: int = 600) -> Obj:
    meta = sa.get("metadata") or {}
    name, ns = str(meta.get("name") or ""), str(meta.get("namespace") or "")
    if not isinstance(body, dict):
        raise errors.bad_request("the body must be a TokenRequest object")
    if body.get("kind") not in (None, "TokenRequest"):
        raise errors.bad_request(f"the kind in the data ({body.get('kind')}) does not match the expected kind "
                                 "(TokenRequest)")
    spec = body.get("spec") if body.get("spec") is not None else {}
    if not isinstance(spec, dict):
        raise errors.bad_request("TokenRequest.spec: expected an object")
    audiences = spec.get("audiences") or list(tokens.audiences)
    if not isinstance(audiences, list) or not all(isinstance(a, str) and a for a in audiences):
        raise _invalid(name, "spec.audiences", "FieldValueInvalid", "Invalid value: must be a list of strings")
    seconds = spec.get("expirationSeconds", DEFAULT_EXPIRATION)
    if seconds is None:
        seconds = DEFAULT_EXPIRATION
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise _invalid(name, "spec.expirationSeconds", "FieldValueInvalid", "Invalid value: must be an integer")
    if seconds < min_expiration:
        raise _invalid(name, "spec.expirationSeconds", "FieldValueInvalid",
                       f"Invalid value: {seconds}: may not specify a duration less than {min_expiration} seconds")
    if seconds > MAX_EXPIRATION:
        raise _invalid(name, "spec.expirationSeconds", "FieldValueTooLong",
                       f"Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds")
    bound: dict[str, Obj] = {}
    ref = spec.get("boundObjectRef")
    if ref is not None:
        if not isinstance(ref, dict):
            raise errors.bad_request("spec.boundObjectRef: expected an object")
        kind = ref.get("kind")
        if kind not in _BINDABLE or ref.get("apiVersion", "v1") != "v1":
            raise errors.bad_request(f"cannot bind token for object of type {kind}: want a v1 Pod, Secret or Node")
        resource, namespaced = _BINDABLE[str(kind)]
        obj = await get(resource, ns if namespaced else "", str(ref.get("name") or ""))
        if obj is None:
            raise errors.not_found(resource, "", str(ref.get("name") or ""))
        uid = (obj.get("metadata") or {}).get("uid")
        if ref.get("uid") and ref["uid"] != uid:
            raise errors.conflict(resource, "", str(ref.get("name")),
                                  f"the UID in the bound object reference ({ref['uid']}) does not match the UID in "
                                  "record. The object might have been deleted and then recreated")
        bound[str(kind).lower()] = obj
        node_name = (obj.get("spec") or {}).get("nodeName") if kind == "Pod" else None
        if node_name:
            node = await get("nodes", "", str(node_name))
            if node is not None:
                bound["node"] = node
        spec = {**spec, "boundObjectRef": {**ref, "apiVersion": "v1", "uid": uid}}
    token, exp = tokens.issue(sa, audiences, seconds, bound)
    ts = datetime.datetime.fromtimestamp(exp, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": None},
            "spec": {**spec, "audiences": audiences, "expirationSeconds": seconds},
            "status": {"token": token, "expirationTimestamp": ts}}
