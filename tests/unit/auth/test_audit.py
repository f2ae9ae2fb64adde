"""The audit log: an audit.k8s.io/v1 Policy picks each request's level; events are JSON lines
naming the user (and whom they impersonated), the verb, the object, the decision and the code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodeagent.api.auth.audit import Policy, PolicyError
from tests.helpers.api_inproc import inproc_api

POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None
  nonResourceURLs: ["/api*", "/version"]
- level: RequestResponse
  resources: [{group: "", resources: [configmaps]}]
- level: Metadata
"""


async def test_audit_events(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    log = tmp_path / "audit.log"
    async with inproc_api(tmp_path / "api", audit_policy_file=str(tmp_path / "policy.yaml"),
                          audit_log_path=str(log)) as api:
        admin = api.session()
        code, _ = await admin.call("POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "c"},
                                                                                      "data": {"k": "v"}})
        assert code == 201
        code, _ = await admin.call("GET", "/api/v1/namespaces/default/secrets/nope",
                                   headers={"Impersonate-User": "bob"})
        assert code == 403
        await admin.call("GET", "/api")
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert stat_mode(log) == 0o600
    created = next(e for e in events if e["verb"] == "create")
    assert created["level"] == "RequestResponse" and created["stage"] == "ResponseComplete"
    assert created["user"]["username"] == "admin" and created["responseStatus"]["code"] == 201
    assert created["objectRef"] == {"resource": "configmaps", "namespace": "default", "apiVersion": "v1"}
    assert created["requestObject"]["data"] == {"k": "v"} and created["responseObject"]["metadata"]["name"] == "c"
    assert created["annotations"]["authorization.k8s.io/decision"] == "allow"
    denied = next(e for e in events if e["verb"] == "get")
    assert denied["level"] == "Metadata" and "requestObject" not in denied
    assert denied["impersonatedUser"]["username"] == "bob" and denied["user"]["username"] == "admin"
    assert denied["responseStatus"]["code"] == 403 and denied["annotations"]["authorization.k8s.io/decision"] == "forbid"
    assert denied["objectRef"] == {"resource": "secrets", "namespace": "default", "name": "nope", "apiVersion": "v1"}
    assert not any(e["requestURI"] == "/api" for e in events)


def stat_mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


def test_bad_policies_are_refused(tmp_path: Path) -> None:
    for text in ("kind: Policy\n", "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Loud}]\n", "[1"):
        (tmp_path / "p.yaml").write_text(text)
        with pytest.raises(PolicyError):
            Policy.load(str(tmp_path / "p.yaml"))
