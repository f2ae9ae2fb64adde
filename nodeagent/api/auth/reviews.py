"""The review APIs: POST-only objects answered from the request and never stored.

  authentication.k8s.io/v1 TokenReview         who a token is (kubelets check callers with it)
  authentication.k8s.io/v1 SelfSubjectReview   who am I (kubectl auth whoami)
  authorization.k8s.io/v1  SubjectAccessReview may USER do X (kubelets authorize callers with it)
  authorization.k8s.io/v1  LocalSubjectAccessReview  the same, within the URL's namespace
  authorization.k8s.io/v1  SelfSubjectAccessReview   may I do X (kubectl auth can-i)
  authorization.k8s.io/v1  SelfSubjectRulesReview    what may I do in NS (kubectl auth can-i --list)
"""

from __future__ import annotations

from typing import Any

from nodeagent.api import errors
from nodeagent.api.auth.attributes import Attributes
from nodeagent.api.auth.guard import Guard
from nodeagent.api.auth.user import UserInfo

Obj = dict[str, Any]

REVIEWS = {  # qualified resource -> kind
    "tokenreviews.authentication.k8s.io": "TokenReview",
    "selfsubjectreviews.authentication.k8s.io": "SelfSubjectReview",
    "subjectaccessreviews.authorization.k8s.io": "SubjectAccessReview",
    "localsubjectaccessreviews.authorization.k8s.io": "LocalSubjectAccessReview",
    "selfsubjectaccessreviews.authorization.k8s.io": "SelfSubjectAccessReview",
    "selfsubjectrulesreviews.authorization.k8s.io": "SelfSubjectRulesReview",
}
NAMESPACED = {"localsubjectaccessreviews.authorization.k8s.io"}


def _spec(body: Obj) -> Obj:
    spec = body.get("spec")
    if not isinstance(spec, dict):
        raise errors.bad_request(f"a {body.get('kind') or 'review'} needs a spec")
    return spec


def _result(kind: str, group: str, spec: Obj, status: Obj) -> Obj:
    return {"kind": kind, "apiVersion": f"{group}/v1", "metadata": {"creationTimestamp": None},
            "spec": spec, "status": status}


def _access(guard: Guard, user: UserInfo, spec: Obj, namespace: str | None) -> Obj:
    ra = spec.get("resourceAttributes")
    nra = spec.get("nonResourceAttributes")
    if isinstance(ra, dict):
        if namespace is not None:
            if ra.get("namespace") not in (None, "", namespace):
                raise errors.bad_request(f"spec.resourceAttributes.namespace must match the URL's namespace "
                                         f"{namespace!r}")
            ra = {**ra, "namespace": namespace}
        attrs = Attributes(user=user, verb=str(ra.get("verb") or ""), namespace=str(ra.get("namespace") or ""),
                           api_group=str(ra.get("group") or ""), api_version=str(ra.get("version") or ""),
                           resource=str(ra.get("resource") or ""), subresource=str(ra.get("subresource") or ""),
                           name=str(ra.get("name") or ""))
    elif isinstance(nra, dict):
        attrs = Attributes(user=user, verb=str(nra.get("verb") or ""), resource_request=False,
                           path=str(nra.get("path") or ""))
    else:
        raise errors.invalid("SubjectAccessReview", "authorization.k8s.io", "", [
            ("spec.resourceAttributes", "FieldValueRequired",
             "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified")])
    d = guard.authorize(attrs)
    status: Obj = {"allowed": d.allowed}
    if d.reason:
        status["reason"] = d.reason
    return status


def _subject(spec: Obj) -> UserInfo:
    name = spec.get("user")
    groups = spec.get("groups") or []
    if not name and not groups:
        raise errors.invalid("SubjectAccessReview", "authorization.k8s.io", "", [
            ("spec.user", "FieldValueInvalid", "Invalid value: \"\": at least one of user or group must be "
                                               "specified")])
    extra = spec.get("extra") or {}
    return UserInfo(name=str(name or ""), uid=str(spec.get("uid") or ""),
                    groups=tuple(str(g) for g in groups if isinstance(g, str)),
                    extra=tuple((str(k), tuple(str(x) for x in v)) for k, v in extra.items()
                                if isinstance(v, list)))


def _rules(guard: Guard, user: UserInfo, namespace: str) -> Obj:
    rules, errs = guard.authorizer.rbac.rules_for(user, namespace)
    resource_rules, non_resource = [], []
    for r in rules:
        if r.get("nonResourceURLs"):
            non_resource.append({"verbs": r.get("verbs") or [], "nonResourceURLs": r.get("nonResourceURLs")})
        else:
            out = {"verbs": r.get("verbs") or [], "apiGroups": r.get("apiGroups") or [],
                   "resources": r.get("resources") or []}
            if r.get("resourceNames"):
                out["resourceNames"] = r["resourceNames"]
            resource_rules.append(out)
    status: Obj = {"resourceRules": resource_rules, "nonResourceRules": non_resource,
                   "incomplete": bool(errs) or user.is_node}
    if errs:
        status["evaluationError"] = "; ".join(errs)
    elif user.is_node:
        status["evaluationError"] = "node authorizer does not support user rule resolution"
    return status


async def review(guard: Guard, user: UserInfo, qualified: str, namespace: str | None, body: Any) -> Obj:
    """The answer to one POSTed review (the caller is already authorized to create it)."""
    kind = REVIEWS[qualified]
    group = qualified.split(".", 1)[1]
    if not isinstance(body, dict):
        raise errors.bad_request(f"the body must be a {kind} object")
    if body.get("kind") not in (None, kind):
        raise errors.bad_request(f"the kind in the data ({body.get('kind')}) does not match the expected kind "
                                 f"({kind})")
    if kind == "SelfSubjectReview":
        return {"kind": kind, "apiVersion": f"{group}/v1", "metadata": {"creationTimestamp": None},
                "status": {"userInfo": user.to_json()}}
    spec = _spec(body)
    if kind == "TokenReview":
        who = await guard.authenticate_token(str(spec.get("token") or ""))
        status: Obj = {"authenticated": who is not None}
        if who is not None:
            status["user"] = who.with_authenticated().to_json()
            status["audiences"] = spec.get("audiences") or []
        else:
            status["error"] = "invalid bearer token"
        return _result(kind, group, spec, status)
    if kind == "SelfSubjectRulesReview":
        ns = str(spec.get("namespace") or "")
        return _result(kind, group, spec, _rules(guard, user, ns))
    if kind == "SelfSubjectAccessReview":
        return _result(kind, group, spec, _access(guard, user, spec, None))
    subject = _subject(spec)
    return _result(kind, group, spec, _access(guard, subject, spec, namespace if kind.startswith("Local") else None))
