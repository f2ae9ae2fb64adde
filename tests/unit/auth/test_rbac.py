"""RBAC over HTTP against a real in-process apiserver: the bootstrap roles, bindings granting them
per namespace, escalation prevention, impersonation, X.509 users and the review APIs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.api_inproc import InProcApi, Session, inproc_api

RBAC = "/apis/rbac.authorization.k8s.io/v1"


def _binding(name: str, role: str, user: str, kind: str = "ClusterRole") -> dict[str, Any]:
    return {"metadata": {"name": name}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}


def _deploy(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
        "metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[InProcApi]:
    async with inproc_api(tmp_path / "api") as a:
        admin = a.session()
        assert (await admin.call("POST", "/api/v1/namespaces", {"metadata": {"name": "team"}}))[0] == 201
        code, body = await admin.call("POST", f"{RBAC}/namespaces/team/rolebindings", _binding("bob-edit", "edit", "bob"))
        assert code == 201, body
        yield a


async def _bob(api: InProcApi) -> Session:
    return api.session("bob", ())


async def test_bootstrap_policy_is_there_with_aggregated_roles(api: InProcApi) -> None:
    admin = api.session()
    code, roles = await admin.call("GET", f"{RBAC}/clusterroles")
    names = {r["metadata"]["name"] for r in roles["items"]}
    assert {"cluster-admin", "admin", "edit", "view", "system:basic-user", "system:discovery",
            "system:public-info-viewer", "system:node-proxier", "system:kube-controller-manager",
            "system:kube-scheduler", "system:kube-dns", "system:node"} <= names
    edit = next(r for r in roles["items"] if r["metadata"]["name"] == "edit")
    assert any("deployments" in r.get("resources", []) and "create" in r["verbs"] for r in edit["rules"])
    admin_role = next(r for r in roles["items"] if r["metadata"]["name"] == "admin")
    assert any("rolebindings" in r.get("resources", []) for r in admin_role["rules"])  # admin <- edit <- view
    code, crbs = await admin.call("GET", f"{RBAC}/clusterrolebindings/cluster-admin")
    assert crbs["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}]


async def test_edit_in_one_namespace_deploys_there_and_nowhere_else(api: InProcApi) -> None:
    bob = await _bob(api)
    code, body = await bob.call("POST", "/apis/apps/v1/namespaces/team/deployments", _deploy("web"))
    assert code == 201, body
    code, body = await bob.call("POST", "/apis/apps/v1/namespaces/default/deployments", _deploy("web"))
    assert code == 403
    assert body["message"] == ('deployments.apps is forbidden: User "bob" cannot create resource "deployments" in '
                               'API group "apps" in the namespace "default"')
    code, _ = await bob.call("GET", "/api/v1/namespaces/team/secrets")
    assert code == 200
    code, _ = await bob.call("GET", "/api/v1/nodes")
    assert code == 403


async def test_edit_cannot_grant_itself_admin(api: InProcApi) -> None:
    admin, bob = api.session(), await _bob(api)
    # edit alone holds no rolebindings at all
    code, body = await bob.call("POST", f"{RBAC}/namespaces/team/rolebindings", _binding("bob-admin", "admin", "bob"))
    assert code == 403 and "cannot create resource \"rolebindings\"" in body["message"]
    # with the right to write rolebindings, binding a role bob does not hold is escalation
    role = {"metadata": {"name": "binder"}, "rules": [{"apiGroups": ["rbac.authorization.k8s.io"],
                                                        "resources": ["rolebindings"], "verbs": ["create"]}]}
    assert (await admin.call("POST", f"{RBAC}/namespaces/team/roles", role))[0] == 201
    code, _ = await admin.call("POST", f"{RBAC}/namespaces/team/rolebindings",
                               _binding("bob-binder", "binder", "bob", kind="Role"))
    assert code == 201
    code, body = await bob.call("POST", f"{RBAC}/namespaces/team/rolebindings", _binding("bob-admin", "admin", "bob"))
    assert code == 403, body
    assert body["message"].startswith('rolebindings.rbac.authorization.k8s.io "bob-admin" is forbidden: user "bob" '
                                      '(groups=["system:authenticated"]) is attempting to grant RBAC permissions not '
                                      "currently held:\n{APIGroups:[")
    # a role bob holds all of (view) may be bound
    code, body = await bob.call("POST", f"{RBAC}/namespaces/team/rolebindings", _binding("bob-view", "view", "carol"))
    assert code == 201, body
    # with `bind` on admin it may
    bind = {"metadata": {"name": "bind-admin"}, "rules": [{"apiGroups": ["rbac.authorization.k8s.io"],
                                                            "resources": ["clusterroles"], "verbs": ["bind"],
                                                            "resourceNames": ["admin"]}]}
    assert (await admin.call("POST", f"{RBAC}/namespaces/team/roles", bind))[0] == 201
    code, _ = await admin.call("POST", f"{RBAC}/namespaces/team/rolebindings",
                               _binding("bob-bind", "bind-admin", "bob", kind="Role"))
    code, body = await bob.call("POST", f"{RBAC}/namespaces/team/rolebindings", _binding("bob-admin", "admin", "bob"))
    assert code == 201, body


async def test_a_role_with_more_than_the_writer_holds_is_refused(api: InProcApi) -> None:
    admin, bob = api.session(), await _bob(api)
    writer = {"metadata": {"name": "role-writer"}, "rules": [{"apiGroups": ["rbac.authorization.k8s.io"],
                                                              "resources": ["roles"], "verbs": ["create"]}]}
    assert (await admin.call("POST", f"{RBAC}/namespaces/team/roles", writer))[0] == 201
    assert (await admin.call("POST", f"{RBAC}/namespaces/team/rolebindings",
                             _binding("w", "role-writer", "bob", kind="Role")))[0] == 201
    ok = {"metadata": {"name": "pods-reader"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}
    code, body = await bob.call("POST", f"{RBAC}/namespaces/team/roles", ok)
    assert code == 201, body
    nodes = {"metadata": {"name": "nodes"}, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}
    code, body = await bob.call("POST", f"{RBAC}/namespaces/team/roles", nodes)
    assert code == 403 and "attempting to grant RBAC permissions not currently held" in body["message"]


async def test_bad_rbac_objects_are_4xx(api: InProcApi) -> None:
    admin = api.session()
    cases = [
        ("POST", f"{RBAC}/namespaces/team/roles", {"metadata": {"name": "r"}, "rules": [{"apiGroups": [""],
                                                                                        "resources": ["pods"]}]}, 422),
        ("POST", f"{RBAC}/namespaces/team/roles", {"metadata": {"name": "r"}, "rules": [
            {"nonResourceURLs": ["/x"], "verbs": ["get"]}]}, 422),
        ("POST", f"{RBAC}/namespaces/team/rolebindings", {"metadata": {"name": "b"}, "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "Foo", "name": "x"}}, 422),
        ("POST", f"{RBAC}/clusterrolebindings", {"metadata": {"name": "b"}, "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "default"}]}, 422),
        ("POST", f"{RBAC}/clusterrolebindings", {"metadata": {"name": "b"}, "roleRef": "view"}, 422),
        ("PUT", f"{RBAC}/namespaces/team/rolebindings/bob-edit", _binding("bob-edit", "admin", "bob"), 422),
        ("POST", f"{RBAC}/namespaces/team/roles", {"metadata": {"name": "r"}, "rules": "all"}, 422),
    ]
    for method, path, body, want in cases:
        code, out = await admin.call(method, path, body)
        assert code == want, (path, out)
        assert out["kind"] == "Status"
    code, out = await admin.call("FOO", f"{RBAC}/namespaces/team/roles")
    assert 400 <= code < 500
    # a binding to a role that does not exist: stored for an admin, no grant, a 404 for others
    code, out = await admin.call("POST", f"{RBAC}/namespaces/team/rolebindings", _binding("ghost", "nope", "dan"))
    assert code == 201, out
    dan = api.session("dan", ())
    code, out = await dan.call("GET", "/api/v1/namespaces/team/pods")
    assert code == 403 and 'clusterrole.rbac.authorization.k8s.io "nope" not found' in out["message"]


async def test_impersonation(api: InProcApi) -> None:
    admin = api.session()
    code, out = await admin.call("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", {},
                                 headers={"Impersonate-User": "bob", "Impersonate-Group": "devs"})
    assert code == 201
    assert out["status"]["userInfo"] == {"username": "bob", "groups": ["devs", "system:authenticated"]}
    code, _ = await admin.call("GET", "/api/v1/namespaces/default/pods", headers={"Impersonate-User": "bob"})
    assert code == 403  # runs as bob, who holds nothing in default
    code, _ = await admin.call("GET", "/api/v1/namespaces/team/pods", headers={"Impersonate-User": "bob"})
    assert code == 200
    bob = await _bob(api)
    code, out = await bob.call("GET", "/api/v1/namespaces/team/pods", headers={"Impersonate-User": "admin"})
    assert code == 403 and out["message"].startswith('users "admin" is forbidden: User "bob" cannot impersonate '
                                                     'resource "users" in API group "" at the cluster scope')
    code, out = await admin.call("GET", "/api/v1/pods", headers={"Impersonate-Group": "system:masters"})
    assert code == 400
    code, out = await admin.call("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", {},
                                 headers={"Impersonate-User": "system:serviceaccount:team:builder"})
    assert out["status"]["userInfo"]["groups"] == ["system:serviceaccounts", "system:serviceaccounts:team",
                                                   "system:authenticated"]


async def test_x509_client_certificates_authenticate(api: InProcApi) -> None:
    s = api.cert_session("erin", ("devs", "qa"))
    code, out = await s.call("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", {})
    assert code == 201 and out["status"]["userInfo"] == {"username": "erin",
                                                         "groups": ["devs", "qa", "system:authenticated"]}
    code, _ = await s.call("GET", "/api/v1/namespaces/team/pods")
    assert code == 403


async def test_access_reviews(api: InProcApi) -> None:
    bob, admin = await _bob(api), api.session()
    code, out = await bob.call("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {
        "spec": {"resourceAttributes": {"verb": "create", "group": "apps", "resource": "deployments",
                                        "namespace": "team"}}})
    assert code == 201 and out["status"]["allowed"] is True
    code, out = await bob.call("POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
                               {"spec": {"namespace": "team"}})
    assert code == 201 and not out["status"]["incomplete"]
    assert any("deployments" in r["resources"] for r in out["status"]["resourceRules"])
    assert any("/version" in r["nonResourceURLs"] for r in out["status"]["nonResourceRules"])
    sar = {"spec": {"user": "bob", "resourceAttributes": {"verb": "delete", "resource": "pods", "namespace": "team"}}}
    code, out = await admin.call("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", sar)
    assert code == 201 and out["status"]["allowed"] is True
    code, out = await bob.call("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", sar)
    assert code == 403  # creating SubjectAccessReviews is for components (system:auth-delegator)
    code, out = await admin.call("POST", "/apis/authorization.k8s.io/v1/namespaces/team/localsubjectaccessreviews", {
        "spec": {"user": "bob", "resourceAttributes": {"verb": "get", "resource": "secrets"}}})
    assert code == 201 and out["status"]["allowed"] is True
    code, out = await admin.call("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", {"spec": {}})
    assert code == 422
