"""Issue 14's holes, reproduced with one node's own credentials against a real apiserver in this
process: every request upstream's Node authorizer + NodeRestriction deny is a 403 here (or the
422 upstream's Node validation answers), and what they allow still works. Upstream:
plugin/pkg/auth/authorizer/node/node_authorizer.go, plugin/pkg/admission/noderestriction."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.api_inproc import InProcApi, inproc_api

MERGE = "application/merge-patch+json"
JSONP = "application/json-patch+json"


def _pod(name: str, node: str, ns: str = "default", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nodeagent.local/toolbox:1"}], **spec}}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[InProcApi]:
    async with inproc_api(tmp_path / "api") as a:
        admin = a.session()
        n1, n2 = a.node("n1"), a.node("n2")
        for s, name in ((n1, "n1"), (n2, "n2")):
            code, body = await s.call("POST", "/api/v1/nodes", {"metadata": {"name": name}})
            assert code == 201, body
        for ns, kind, name in (("default", "secrets", "used"), ("default", "secrets", "unused"),
                               ("kube-system", "secrets", "other"), ("default", "configmaps", "used-cm"),
                               ("default", "configmaps", "unused-cm")):
            code, body = await admin.call("POST", f"/api/v1/namespaces/{ns}/{kind}", {"metadata": {"name": name}})
            assert code == 201, body
        p1 = _pod("p1", "n1", volumes=[{"name": "s", "secret": {"secretName": "used"}}])
        p1["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "used-cm"}}]
        for pod in (p1, _pod("p2", "n2")):
            code, body = await admin.call("POST", "/api/v1/namespaces/default/pods", pod)
            assert code == 201, body
        code, body = await admin.call("PATCH", "/api/v1/nodes/n1", {
            "spec": {"taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}], "podCIDR": "10.244.1.0/24",
                     "podCIDRs": ["10.244.1.0/24"]}}, MERGE)
        assert code == 200, body
        yield a


ALLOWED = [
    ("GET", "/api/v1/namespaces/default/secrets/used", None, None),
    ("GET", "/api/v1/namespaces/default/configmaps/used-cm", None, None),
    ("GET", "/api/v1/namespaces/default/secrets?fieldSelector=metadata.name%3Dused", None, None),
    ("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1", None, None),
    ("GET", "/api/v1/namespaces/default/pods/p1", None, None),
    ("GET", "/api/v1/nodes/n1", None, None),
    ("GET", "/api/v1/nodes?fieldSelector=metadata.name%3Dn1", None, None),
    ("GET", "/api/v1/services", None, None),
    ("PATCH", "/api/v1/nodes/n1/status", {"status": {"capacity": {"pods": "110"}}}, MERGE),
    ("PATCH", "/api/v1/namespaces/default/pods/p1/status", {"status": {"phase": "Running"}}, MERGE),
    ("PATCH", "/api/v1/nodes/n1", {"metadata": {"labels": {"kubernetes.io/hostname": "n1",
                                                           "node.kubernetes.io/exclude-from-external-load-balancers":
                                                               "x"}}}, MERGE),
    ("POST", "/api/v1/namespaces/default/events", {"metadata": {"name": "e1"}, "involvedObject": {"kind": "Node",
                                                                                                 "name": "n1"},
                                                   "reason": "Starting", "message": "m"}, None),
    ("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {"metadata": {"name": "n1"}}, None),
    ("POST", "/apis/authentication.k8s.io/v1/tokenreviews", {"spec": {"token": "x"}}, None),
    ("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
     {"spec": {"user": "bob", "resourceAttributes": {"verb": "get", "resource": "nodes", "subresource": "proxy"}}},
     None),
]

DENIED = [
    # secrets and configmaps: only those of pods bound to the node, one at a time
    ("GET", "/api/v1/secrets", None, None, 403),
    ("GET", "/api/v1/namespaces/default/secrets", None, None, 403),
    ("GET", "/api/v1/namespaces/default/secrets?watch=1", None, None, 403),
    ("GET", "/api/v1/namespaces/default/secrets/unused", None, None, 403),
    ("GET", "/api/v1/namespaces/kube-system/secrets/other", None, None, 403),
    ("GET", "/api/v1/configmaps", None, None, 403),
    ("GET", "/api/v1/namespaces/default/configmaps/unused-cm", None, None, 403),
    ("PUT", "/api/v1/namespaces/default/secrets/used", {"metadata": {"name": "used"}}, None, 403),
    # pods: only its own, listed with its spec.nodeName selector
    ("GET", "/api/v1/pods", None, None, 403),
    ("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn2", None, None, 403),
    ("GET", "/api/v1/namespaces/default/pods/p2", None, None, 403),
    ("DELETE", "/api/v1/namespaces/default/pods/p2", None, None, 403),
    ("PATCH", "/api/v1/namespaces/default/pods/p2/status", {"status": {"phase": "Failed"}}, MERGE, 403),
    # its own pods' spec and labels (a label can put a pod behind a Service)
    ("PATCH", "/api/v1/namespaces/default/pods/p1", {"metadata": {"labels": {"app": "web"}}}, MERGE, 403),
    ("PATCH", "/api/v1/namespaces/default/pods/p1", {"spec": {"activeDeadlineSeconds": 5}}, MERGE, 403),
    ("PUT", "/api/v1/namespaces/default/pods/p1", _pod("p1", "n1"), None, 403),
    # pods it creates: mirror pods only, naming no other object; never privileged ones anywhere
    ("POST", "/api/v1/namespaces/kube-system/pods",
     _pod("root", "n1", "kube-system", volumes=[{"name": "host", "hostPath": {"path": "/"}}],
          containers=[{"name": "c", "image": "x", "securityContext": {"privileged": True}}]), None, 403),
    ("POST", "/api/v1/namespaces/default/pods", _pod("plain", "n1"), None, 403),
    ("POST", "/api/v1/namespaces/default/pods",
     {**_pod("mirror", "n1"), "metadata": {"name": "mirror", "annotations": {"kubernetes.io/config.mirror": "x"}}},
     None, 403),
    # nodes: only its own, and not its taints, restricted labels, owners or podCIDR
    ("GET", "/api/v1/nodes", None, None, 403),
    ("GET", "/api/v1/nodes/n2", None, None, 403),
    ("PATCH", "/api/v1/nodes/n2/status", {"status": {"capacity": {"pods": "1"}}}, MERGE, 403),
    ("PATCH", "/api/v1/nodes/n2", {"metadata": {"labels": {"a": "b"}}}, MERGE, 403),
    ("DELETE", "/api/v1/nodes/n1", None, None, 403),
    ("DELETE", "/api/v1/nodes/n2", None, None, 403),
    ("PATCH", "/api/v1/nodes/n1", {"spec": {"taints": None}}, MERGE, 403),
    ("PATCH", "/api/v1/nodes/n1", {"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}},
     MERGE, 403),
    ("PATCH", "/api/v1/nodes/n1", {"metadata": {"labels": {"node-restriction.kubernetes.io/pci": "true"}}},
     MERGE, 403),
    ("PATCH", "/api/v1/nodes/n1", {"metadata": {"labels": {"example.node-restriction.kubernetes.io/x": "y"}}},
     MERGE, 403),
    ("PATCH", "/api/v1/nodes/n1", {"metadata": {"ownerReferences": [
        {"apiVersion": "v1", "kind": "Namespace", "name": "gone", "uid": "0"}]}}, MERGE, 403),
    ("PATCH", "/api/v1/nodes/n1", {"spec": {"podCIDR": "10.244.9.0/24", "podCIDRs": ["10.244.9.0/24"]}},
     MERGE, 422),
    ("POST", "/api/v1/nodes", {"metadata": {"name": "n3"}}, None, 403),
    ("POST", "/api/v1/nodes", {"metadata": {"name": "n1b", "labels": {"node-role.kubernetes.io/master": ""}}},
     None, 403),
    # leases: only its own, only in kube-node-lease
    ("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {"metadata": {"name": "n2"}}, None, 403),
    ("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases", None, None, 403),
    # nothing else the kubelet does not read
    ("GET", "/api/v1/namespaces", None, None, 403),
    ("GET", "/api/v1/serviceaccounts", None, None, 403),
    ("GET", "/apis/discovery.k8s.io/v1/endpointslices", None, None, 403),
    ("GET", "/api/v1/events", None, None, 403),
    ("GET", "/apis/apps/v1/deployments", None, None, 403),
    ("POST", "/api/v1/namespaces/default/pods/p2/binding",
     {"metadata": {"name": "p2"}, "target": {"kind": "Node", "name": "n1"}}, None, 403),
    ("GET", "/metrics", None, None, 403),
]


@pytest.mark.parametrize(("method", "path", "body", "ctype"), ALLOWED)
async def test_what_upstream_allows_a_node_works(api: InProcApi, method: str, path: str, body: Any,
                                                 ctype: str | None) -> None:
    code, out = await api.node("n1").call(method, path, body, ctype or "application/json")
    assert code in (200, 201), out


@pytest.mark.parametrize(("method", "path", "body", "ctype", "want"), DENIED)
async def test_what_upstream_denies_a_node_is_denied(api: InProcApi, method: str, path: str, body: Any,
                                                     ctype: str | None, want: int) -> None:
    code, out = await api.node("n1").call(method, path, body, ctype or "application/json")
    assert code == want, out
    assert out["kind"] == "Status" and out["code"] == want


async def test_secret_access_follows_the_pods_bound_to_the_node(api: InProcApi) -> None:
    admin, n2 = api.session(), api.node("n2")
    code, _ = await n2.call("GET", "/api/v1/namespaces/default/secrets/used")
    assert code == 403
    p3 = _pod("p3", "n2", volumes=[{"name": "s", "secret": {"secretName": "used"}}])
    code, body = await admin.call("POST", "/api/v1/namespaces/default/pods", p3)
    assert code == 201, body
    code, _ = await n2.call("GET", "/api/v1/namespaces/default/secrets/used")
    assert code == 200
    code, _ = await admin.call("DELETE", "/api/v1/namespaces/default/pods/p3?gracePeriodSeconds=0")
    code, _ = await admin.call("DELETE", "/api/v1/namespaces/default/pods/p3?gracePeriodSeconds=0")
    code, _ = await n2.call("GET", "/api/v1/namespaces/default/secrets/used")
    assert code == 403


async def test_forbidden_messages_name_the_node_and_the_rule(api: InProcApi) -> None:
    n1 = api.node("n1")
    code, out = await n1.call("GET", "/api/v1/namespaces/default/secrets/unused")
    assert code == 403
    assert out["message"] == ('secrets "unused" is forbidden: User "system:node:n1" cannot get resource "secrets" '
                              'in API group "" in the namespace "default": no relationship found between node '
                              "'n1' and this object")
    code, out = await n1.call("PATCH", "/api/v1/nodes/n1", {"spec": {"taints": []}}, MERGE)
    assert code == 403 and 'node "n1" is not allowed to modify taints' in out["message"]


async def test_the_store_and_secrets_are_root_only(api: InProcApi) -> None:
    d = api.data_dir
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    for name in ("state.db", "tokens.csv", "pki/ca.key", "pki/apiserver.key", "pki/apiserver-kubelet-client.key"):
        assert stat.S_IMODE(os.stat(d / name).st_mode) == 0o600, name
    for p in d.glob("state.db*"):
        assert stat.S_IMODE(os.stat(p).st_mode) & 0o077 == 0, p
