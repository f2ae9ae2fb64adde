"""Smoke test of the real `nodeagent apiserver`: HTTPS, tokens, CRUD, list, watch, kubeconfig."""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers.api_kubectl import admin_token, kubectl
from tests.helpers.apiserver import ApiServerProcess


def _kubectl(server: ApiServerProcess, *args: str, kubeconfig: Path | None = None) -> str:
    return kubectl(server, *args, kubeconfig=kubeconfig).stdout




def _request(server: ApiServerProcess, path: str, token: str | None) -> tuple[int, dict[str, Any]]:
    ctx = ssl.create_default_context(cafile=str(server.data_dir / "pki" / "ca.crt"))
    req = urllib.request.Request(server.url + path)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_anonymous_gets_401_and_admin_sees_default_namespaces(apiserver: ApiServerProcess) -> None:
    code, body = _request(apiserver, "/api/v1/namespaces", None)
    assert code == 401 and body["kind"] == "Status" and body["reason"] == "Unauthorized"
    names = _kubectl(apiserver, "get", "namespaces", "-o", "name").split()
    assert {"namespace/default", "namespace/kube-system", "namespace/kube-public",
            "namespace/kube-node-lease"} <= set(names)
    svc = json.loads(_kubectl(apiserver, "get", "svc", "kubernetes", "-o", "json"))
    assert svc["spec"]["clusterIP"] == "10.96.0.1"


def test_kubectl_create_get_delete_pod(apiserver: ApiServerProcess, tmp_path: Path) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text("apiVersion: v1\nkind: Pod\nmetadata:\n  name: smoke\n  labels: {app: smoke}\n"
                        "spec:\n  containers:\n  - name: c\n    image: nodeagent.local/toolbox:1\n")
    _kubectl(apiserver, "apply", "-f", str(manifest))
    pod = json.loads(_kubectl(apiserver, "get", "pod", "smoke", "-o", "json"))
    assert pod["spec"]["restartPolicy"] == "Always" and pod["status"]["phase"] == "Pending"
    assert pod["metadata"]["resourceVersion"].isdigit()
    assert "smoke" in _kubectl(apiserver, "get", "pods", "-l", "app=smoke")
    _kubectl(apiserver, "delete", "pod", "smoke")
    assert _kubectl(apiserver, "get", "pods", "-o", "name").strip() == ""


def test_node_kubeconfig_is_a_node_identity(apiserver: ApiServerProcess) -> None:
    kc = apiserver.kubeconfig_for_node("node-a")
    # what upstream's Node authorizer lets a kubelet read (services), and not more (namespaces)
    assert "service/kubernetes" in _kubectl(apiserver, "get", "svc", "-o", "name", kubeconfig=kc)
    assert "forbidden" in kubectl(apiserver, "get", "ns", kubeconfig=kc, check=False).stderr.lower()
    denied = subprocess.run(["kubectl", "--kubeconfig", str(kc), "--cache-dir", str(apiserver.data_dir / "c2"),
                             "create", "namespace", "nope"], capture_output=True, text=True, timeout=60)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    assert 'system:node:node-a' in denied.stderr


def test_metrics_have_upstream_names(apiserver: ApiServerProcess) -> None:
    _kubectl(apiserver, "get", "pods")
    code, _ = _request(apiserver, "/metrics", None)
    assert code == 401
    ctx = ssl.create_default_context(cafile=str(apiserver.data_dir / "pki" / "ca.crt"))
    req = urllib.request.Request(apiserver.url + "/metrics")
    req.add_header("Authorization", f"Bearer {admin_token(apiserver)}")
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        text = r.read().decode()
    assert 'apiserver_request_total{code="200",component="apiserver",group="",resource="pods"' in text
    for name in ("apiserver_request_duration_seconds_bucket", "etcd_request_duration_seconds_bucket",
                 'apiserver_storage_objects{resource="namespaces"} 4.0', "apiserver_watch_events_total"):
        assert name in text, name
