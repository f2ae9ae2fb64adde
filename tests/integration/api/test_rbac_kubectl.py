"""RBAC, service account tokens, impersonation and X.509 users driven with the real kubectl
against a real `nodeagent apiserver`."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers.api_kubectl import kubectl
from tests.helpers.apiserver import ApiServerProcess

ROLE = """apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: config-reader, namespace: team}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list]
"""


def test_roles_bindings_and_can_i(apiserver: ApiServerProcess) -> None:
    k = lambda *a, **kw: kubectl(apiserver, *a, **kw)  # noqa: E731
    k("create", "namespace", "team")
    k("create", "role", "pod-reader", "--verb=get,list,watch", "--resource=pods", "-n", "team")
    k("create", "rolebinding", "bob-edit", "--clusterrole=edit", "--user=bob", "-n", "team")
    k("create", "clusterrole", "node-reader", "--verb=get,list", "--resource=nodes")
    k("create", "clusterrolebinding", "carol-nodes", "--clusterrole=node-reader", "--user=carol", "--group=ops")
    out = k("get", "rolebindings", "-n", "team", "-o", "wide").stdout
    assert out.split("\n")[0].split() == ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]
    assert "ClusterRole/edit" in out and "bob" in out
    assert "node-reader" in k("get", "clusterroles").stdout
    assert "ClusterRole/node-reader" in k("get", "clusterrolebinding", "carol-nodes").stdout
    assert k("get", "roles", "-n", "team").stdout.split("\n")[0].split() == ["NAME", "CREATED", "AT"]

    assert k("auth", "can-i", "create", "deployments", "-n", "team", "--as", "bob").stdout.strip() == "yes"
    no = k("auth", "can-i", "create", "deployments", "-n", "default", "--as", "bob", check=False)
    assert no.returncode == 1 and no.stdout.strip() == "no"
    assert k("auth", "can-i", "list", "nodes", "--as", "dave", "--as-group", "ops").stdout.strip() == "yes"
    listing = k("auth", "can-i", "--list", "-n", "team", "--as", "bob").stdout
    assert "deployments.apps" in listing and "selfsubjectaccessreviews.authorization.k8s.io" in listing
    who = k("auth", "whoami", "--as", "bob", "--as-group", "devs").stdout
    assert "bob" in who and "devs" in who

    k("--as", "bob", "create", "deployment", "web", "--image=nodeagent.local/toolbox:1", "-n", "team")
    denied = k("--as", "bob", "create", "deployment", "web", "--image=nodeagent.local/toolbox:1", check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    esc = k("--as", "bob", "create", "rolebinding", "bob-admin", "--clusterrole=admin", "--user=bob", "-n", "team",
            check=False)
    assert esc.returncode != 0 and "forbidden" in esc.stderr.lower()

    k("auth", "reconcile", "-f", "-", stdin=ROLE)
    assert k("auth", "can-i", "list", "configmaps", "-n", "team", "--as", "system:serviceaccount:team:x",
             check=False).stdout.strip() == "no"
    k("create", "rolebinding", "x-config", "--role=config-reader", "--serviceaccount=team:x", "-n", "team")
    assert k("auth", "can-i", "list", "configmaps", "-n", "team", "--as", "system:serviceaccount:team:x").stdout \
        .strip() == "yes"


def test_tokens_and_certificates(apiserver: ApiServerProcess) -> None:
    k = lambda *a, **kw: kubectl(apiserver, *a, **kw)  # noqa: E731
    k("create", "serviceaccount", "builder")
    token = k("create", "token", "builder", "--duration", "10m").stdout.strip()
    base = ["kubectl", "--server", apiserver.url, "--certificate-authority", str(apiserver.data_dir / "pki" / "ca.crt"),
            "--cache-dir", str(apiserver.data_dir / "kubectl-cache-tok")]
    who = subprocess.run([*base, "--token", token, "auth", "whoami"], capture_output=True, text=True, timeout=30)
    assert who.returncode == 0 and "system:serviceaccount:default:builder" in who.stdout, who.stderr
    bad = subprocess.run([*base, "--token", token[:-4] + "AAAA", "get", "pods"], capture_output=True, text=True,
                         timeout=30)
    assert bad.returncode != 0 and "You must be logged in to the server" in bad.stderr  # a 401
    kc = apiserver.data_dir / "erin.kubeconfig"
    subprocess.run([sys.executable, "-m", "nodeagent", "kubeconfig", "--data-dir", str(apiserver.data_dir),
                    "--server", apiserver.url, "--user", "erin", "--group", "devs", "-o", str(kc)], check=True)
    who = k("auth", "whoami", kubeconfig=kc).stdout
    assert "erin" in who and "devs" in who
    denied = k("get", "pods", kubeconfig=kc, check=False)
    assert denied.returncode != 0 and 'User "erin" cannot list resource "pods"' in denied.stderr
