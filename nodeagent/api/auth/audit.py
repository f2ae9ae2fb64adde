"""The audit log (upstream k8s.io/apiserver/pkg/audit): an audit.k8s.io/v1 Policy decides per
request at which level it is recorded (None, Metadata, Request, RequestResponse: the first rule
that matches wins, none is None), and each recorded request becomes one audit.k8s.io/v1 Event,
one JSON line, at stage ResponseComplete: who (and whom they impersonated), what, the
authorization decision, the response code; the request body from level Request, the response body
from RequestResponse. Off unless --audit-policy-file and --audit-log-path are given."""

from __future__ import annotations

import datetime
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from nodeagent.api.auth.user import UserInfo

Obj = dict[str, Any]
LEVELS = ("None", "Metadata", "Request", "RequestResponse")


class PolicyError(ValueError):
    pass


def _strs(rule: Obj, key: str) -> list[str]:
    v = rule.get(key)
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise PolicyError(f"{key}: expected a list of strings")
    return v


@dataclass
class Policy:
    rules: list[Obj]
    omit_stages: list[str]

    @classmethod
    def load(cls, path: str) -> Policy:
        try:
            doc = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as e:
            raise PolicyError(f"cannot read audit policy {path}: {e}") from None
        if not isinstance(doc, dict) or doc.get("kind") != "Policy" or \
                doc.get("apiVersion") not in ("audit.k8s.io/v1",):
            raise PolicyError(f"{path}: want an audit.k8s.io/v1 Policy")
        rules = doc.get("rules") or []
        if not isinstance(rules, list):
            raise PolicyError(f"{path}: rules: expected a list")
        for i, r in enumerate(rules):
            if not isinstance(r, dict) or r.get("level") not in LEVELS:
                raise PolicyError(f"{path}: rules[{i}].level: want one of {', '.join(LEVELS)}")
            for key in ("users", "userGroups", "verbs", "namespaces", "nonResourceURLs", "omitStages"):
                _strs(r, key)
        return cls(rules, _strs(doc, "omitStages"))

    def level(self, user: UserInfo, verb: str, info: Any, path: str) -> str:
        for r in self.rules:
            if _matches(r, user, verb, info, path):
                return str(r["level"])
        return "None"


def _matches(rule: Obj, user: UserInfo, verb: str, info: Any, path: str) -> bool:
    if rule.get("users") and user.name not in rule["users"]:
        return False
    if rule.get("userGroups") and not set(rule["userGroups"]) & set(user.groups):
        return False
    if rule.get("verbs") and verb not in rule["verbs"]:
        return False
    if not info.is_resource:
        urls = rule.get("nonResourceURLs")
        if rule.get("resources") or rule.get("namespaces"):
            return False
        return not urls or any(u == path or (u.endswith("*") and path.startswith(u[:-1])) for u in urls)
    if rule.get("nonResourceURLs"):
        return False
    if rule.get("namespaces") and (info.namespace or "") not in rule["namespaces"]:
        return False
    groups = rule.get("resources")
    if not groups:
        return True
    res = f"{info.resource}/{info.subresource}" if info.subresource else info.resource
    for g in groups:
        if not isinstance(g, dict) or g.get("group", "") != info.group:
            continue
        names = g.get("resources") or []
        if names and res not in names and info.resource not in names and \
                not any(n.startswith("*/") and info.subresource == n[2:] for n in names):
            continue
        if g.get("resourceNames") and (info.name or "") not in g["resourceNames"]:
            continue
        return True
    return False


def _micro(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AuditLog:
    def __init__(self, policy: Policy, path: str) -> None:
        self.policy = policy
        if path == "-":
            self._out: TextIO = sys.stdout
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._out = os.fdopen(fd, "a", buffering=1)

    def close(self) -> None:
        if self._out is not sys.stdout:
            self._out.close()

    def record(self, *, user: UserInfo | None, impersonated: UserInfo | None, info: Any, method: str, uri: str,
               source_ip: str, user_agent: str, code: int, received: datetime.datetime,
               decision: tuple[str, str] | None, request_body: Any, response: Any) -> None:
        if user is None or "ResponseComplete" in self.policy.omit_stages:
            return
        level = self.policy.level(impersonated or user, info.verb if info.is_resource else method.lower(), info,
                                  info.path)
        if level == "None":
            return
        ev: Obj = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": level, "auditID": str(uuid.uuid4()),
                   "stage": "ResponseComplete", "requestURI": uri,
                   "verb": info.verb if info.is_resource else method.lower(), "user": user.to_json(),
                   "sourceIPs": [source_ip] if source_ip else [], "userAgent": user_agent}
        if impersonated is not None:
            ev["impersonatedUser"] = impersonated.to_json()
        if info.is_resource:
            ref = {"resource": info.resource, "namespace": info.namespace, "name": info.name,
                   "apiGroup": info.group, "apiVersion": info.version, "subresource": info.subresource}
            ev["objectRef"] = {k: v for k, v in ref.items() if v}
        status: Obj = {"metadata": {}, "code": code}
        if code >= 400 and isinstance(response, dict) and response.get("kind") == "Status":
            status.update({k: response[k] for k in ("status", "message", "reason") if k in response})
        ev["responseStatus"] = status
        if level in ("Request", "RequestResponse") and request_body is not None:
            ev["requestObject"] = request_body
        if level == "RequestResponse" and response is not None:
            ev["responseObject"] = response
        ev["requestReceivedTimestamp"] = _micro(received)
        ev["stageTimestamp"] = _micro(datetime.datetime.now(datetime.UTC))
        if decision is not None:
            ev["annotations"] = {"authorization.k8s.io/decision": decision[0],
                                 "authorization.k8s.io/reason": decision[1]}
        self._out.write(json.dumps(ev, separators=(",", ":")) + "\n")
