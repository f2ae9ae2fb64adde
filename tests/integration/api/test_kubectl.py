"""The real kubectl 1.32 against `nodeagent apiserver` (issue 2, "How it is checked")."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import yaml

from tests.helpers.api_kubectl import kubectl, request
from tests.helpers.apiserver import ApiServerProcess

MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nodeagent.local/toolbox:1
        ports: [{containerPort: 8080}]
        env: [{name: MODE, value: one}]
      - name: side
        image: nodeagent.local/toolbox:1
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


def test_apply_then_reapply_changes(apiserver: ApiServerProcess, tmp_path: Path) -> None:
    f = tmp_path / "web.yaml"
    f.write_text(MANIFEST)
    out = kubectl(apiserver, "apply", "-f", str(f)).stdout
    assert "deployment.apps/web created" in out and "service/web created" in out
    assert "unchanged" in kubectl(apiserver, "apply", "-f", str(f)).stdout
    f.write_text(MANIFEST.replace("replicas: 2", "replicas: 3").replace("value: one", "value: two"))
    assert "deployment.apps/web configured" in kubectl(apiserver, "apply", "-f", str(f)).stdout
    dep = json.loads(kubectl(apiserver, "get", "deploy", "web", "-o", "json").stdout)
    assert dep["spec"]["replicas"] == 3 and dep["metadata"]["generation"] == 2
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["web", "side"]
    assert containers[0]["env"] == [{"name": "MODE", "value": "two"}]
    assert "kubectl.kubernetes.io/last-applied-configuration" in dep["metadata"]["annotations"]
    svc = yaml.safe_load(kubectl(apiserver, "get", "svc", "web", "-o", "yaml").stdout)
    port = svc["spec"]["ports"][0]
    assert port["targetPort"] == 8080 and 30000 <= port["nodePort"] <= 32767 and port["protocol"] == "TCP"
    assert svc["spec"]["clusterIP"].startswith("10.")


def test_scale_set_image_label_patch(apiserver: ApiServerProcess, tmp_path: Path) -> None:
    f = tmp_path / "web.yaml"
    f.write_text(MANIFEST)
    kubectl(apiserver, "apply", "-f", str(f))
    kubectl(apiserver, "scale", "deploy/web", "--replicas=5")
    kubectl(apiserver, "set", "image", "deploy/web", "web=nodeagent.local/toolbox:2")
    kubectl(apiserver, "label", "deploy", "web", "tier=front")
    kubectl(apiserver, "annotate", "deploy", "web", "note=hello")
    kubectl(apiserver, "patch", "deploy", "web", "--type=json", "-p",
            '[{"op":"replace","path":"/spec/minReadySeconds","value":3}]')
    kubectl(apiserver, "patch", "deploy", "web", "--type=merge", "-p", '{"spec":{"paused":true}}')
    kubectl(apiserver, "patch", "deploy", "web", "-p",
            '{"spec":{"template":{"spec":{"containers":[{"name":"side","image":"nodeagent.local/side:9"}]}}}}')
    dep = json.loads(kubectl(apiserver, "get", "deploy", "web", "-o", "json").stdout)
    spec = dep["spec"]
    images = {c["name"]: c["image"] for c in spec["template"]["spec"]["containers"]}
    assert spec["replicas"] == 5 and spec["minReadySeconds"] == 3 and spec["paused"] is True
    assert images == {"web": "nodeagent.local/toolbox:2", "side": "nodeagent.local/side:9"}
    assert dep["metadata"]["labels"]["tier"] == "front" and dep["metadata"]["annotations"]["note"] == "hello"
    table = kubectl(apiserver, "get", "deploy", "web").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table[1].split()[:2] == ["web", "0/5"]


def test_get_watch_sees_changes_and_delete(apiserver: ApiServerProcess, tmp_path: Path) -> None:
    kubectl(apiserver, "run", "w1", "--image=nodeagent.local/toolbox:1", "--labels=app=w")
    watch = subprocess.Popen(
        ["kubectl", "--kubeconfig", str(apiserver.kubeconfig), "--cache-dir", str(apiserver.data_dir / "kubectl-cache"),
         "get", "pods", "-l", "app=w", "-w", "--output-watch-events"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert watch.stdout is not None
        assert watch.stdout.readline().split()[:3] == ["EVENT", "NAME", "READY"]
        assert watch.stdout.readline().split()[:2] == ["ADDED", "w1"]
        kubectl(apiserver, "label", "pod", "w1", "x=1")
        assert watch.stdout.readline().split()[:2] == ["MODIFIED", "w1"]
        kubectl(apiserver, "label", "pod", "w1", "app-")  # leaves the selector: DELETED
        assert watch.stdout.readline().split()[:2] == ["DELETED", "w1"]
        kubectl(apiserver, "label", "pod", "w1", "app=w")  # and back: ADDED
        assert watch.stdout.readline().split()[:2] == ["ADDED", "w1"]
        kubectl(apiserver, "delete", "pod", "w1", "--wait=false")
        assert watch.stdout.readline().split()[:2] == ["DELETED", "w1"]
    finally:
        watch.kill()
        watch.wait()


def test_get_pods_table_and_events(apiserver: ApiServerProcess) -> None:
    kubectl(apiserver, "run", "t1", "--image=nodeagent.local/toolbox:1")
    body = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "t1.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "t1", "namespace": "default"}, "reason": "Testing",
            "message": "hello from the test", "type": "Normal", "count": 1, "source": {"component": "pytest"}}
    code, _ = request(apiserver, "POST", "/api/v1/namespaces/default/events", json.dumps(body).encode())
    assert code == 201
    lines = kubectl(apiserver, "get", "pods", "-o", "wide").stdout.splitlines()
    assert lines[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert lines[1].split()[:4] == ["t1", "0/1", "Pending", "0"]
    ev = kubectl(apiserver, "get", "events").stdout
    assert "Testing" in ev and "pod/t1" in ev and "hello from the test" in ev
    sel = kubectl(apiserver, "get", "events", "--field-selector", "involvedObject.name=t1", "-o", "name").stdout
    assert sel.split() == ["event/t1.1"]


def test_graceful_delete_waits_for_the_kubelet(apiserver: ApiServerProcess, tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: g1}\nspec:\n  nodeName: node-a\n"
                 "  containers: [{name: c, image: nodeagent.local/toolbox:1}]\n")
    kubectl(apiserver, "create", "-f", str(f))
    kubectl(apiserver, "delete", "pod", "g1", "--wait=false")
    pod = json.loads(kubectl(apiserver, "get", "pod", "g1", "-o", "json").stdout)
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 30
    assert "Terminating" in kubectl(apiserver, "get", "pod", "g1").stdout
    node_kc = apiserver.kubeconfig_for_node("node-a")
    kubectl(apiserver, "delete", "pod", "g1", "--grace-period=0", "--force", kubeconfig=node_kc)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if kubectl(apiserver, "get", "pod", "g1", check=False).returncode != 0:
            break
        time.sleep(0.2)
    missing = kubectl(apiserver, "get", "pod", "g1", check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_node_identity_is_restricted(apiserver: ApiServerProcess) -> None:
    kc = apiserver.kubeconfig_for_node("node-b")
    kubectl(apiserver, "run", "mine", "--image=nodeagent.local/toolbox:1", "--overrides",
            '{"spec":{"nodeName":"node-b"}}')
    kubectl(apiserver, "run", "theirs", "--image=nodeagent.local/toolbox:1", "--overrides",
            '{"spec":{"nodeName":"node-c"}}')
    # upstream's Node authorizer: a kubelet lists pods only with its own spec.nodeName selector
    assert "mine" in kubectl(apiserver, "get", "pods", "--field-selector", "spec.nodeName=node-b",
                             kubeconfig=kc).stdout
    assert "forbidden" in kubectl(apiserver, "get", "pods", kubeconfig=kc, check=False).stderr.lower()
    ok = kubectl(apiserver, "delete", "pod", "mine", "--grace-period=0", "--force", kubeconfig=kc, check=False)
    assert ok.returncode == 0, ok.stderr
    denied = kubectl(apiserver, "delete", "pod", "theirs", kubeconfig=kc, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-b"}}
    other = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-z"}}
    assert kubectl(apiserver, "create", "-f", "-", kubeconfig=kc, stdin=json.dumps(node), check=False).returncode == 0
    bad = kubectl(apiserver, "create", "-f", "-", kubeconfig=kc, stdin=json.dumps(other), check=False)
    assert bad.returncode != 0 and "forbidden" in bad.stderr.lower()


def test_create_generators_send_protobuf(apiserver: ApiServerProcess) -> None:
    """kubectl's typed `create` commands post application/vnd.kubernetes.protobuf bodies."""
    kubectl(apiserver, "create", "deployment", "gen", "--image=nodeagent.local/toolbox:1", "--replicas=0",
            "--port=8080", "--", "sleep", "60")
    kubectl(apiserver, "create", "namespace", "gen-ns")
    kubectl(apiserver, "create", "configmap", "gen-cm", "--from-literal=a=b")
    kubectl(apiserver, "create", "secret", "generic", "gen-s", "--from-literal=k=v")
    kubectl(apiserver, "create", "service", "nodeport", "gen-svc", "--tcp=81:8081")
    kubectl(apiserver, "create", "job", "gen-job", "--image=nodeagent.local/toolbox:1")
    dep = json.loads(kubectl(apiserver, "get", "deploy", "gen", "-o", "json").stdout)
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert dep["spec"]["replicas"] == 0 and dep["spec"]["selector"] == {"matchLabels": {"app": "gen"}}
    assert (c["image"], c["command"], c["ports"][0]["containerPort"]) == \
        ("nodeagent.local/toolbox:1", ["sleep", "60"], 8080)
    assert json.loads(kubectl(apiserver, "get", "cm", "gen-cm", "-o", "json").stdout)["data"] == {"a": "b"}
    assert json.loads(kubectl(apiserver, "get", "secret", "gen-s", "-o", "json").stdout)["data"] == {"k": "dg=="}
    svc = json.loads(kubectl(apiserver, "get", "svc", "gen-svc", "-o", "json").stdout)
    assert svc["spec"]["type"] == "NodePort" and svc["spec"]["ports"][0]["targetPort"] == 8081
    job = json.loads(kubectl(apiserver, "get", "job", "gen-job", "-o", "json").stdout)
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert "namespace/gen-ns" in kubectl(apiserver, "get", "ns", "-o", "name").stdout


def test_auth_can_i_and_whoami(apiserver: ApiServerProcess) -> None:
    assert kubectl(apiserver, "auth", "can-i", "delete", "nodes").stdout.strip() == "yes"
    kc = apiserver.kubeconfig_for_node("who")
    assert "system:node:who" in kubectl(apiserver, "auth", "whoami", kubeconfig=kc).stdout
    no = kubectl(apiserver, "auth", "can-i", "create", "namespaces", kubeconfig=kc, check=False)
    assert no.returncode != 0 and no.stdout.startswith("no")
    yes = kubectl(apiserver, "auth", "can-i", "update", "leases/who", "-n", "kube-node-lease", kubeconfig=kc)
    assert yes.stdout.strip() == "yes"


def test_replace_pod_with_its_original_manifest(apiserver: ApiServerProcess, tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: rp, labels: {v: '1'}}\n"
                 "spec:\n  containers: [{name: c, image: nodeagent.local/toolbox:1}]\n")
    kubectl(apiserver, "create", "-f", str(f))
    f.write_text(f.read_text().replace("v: '1'", "v: '2'").replace("toolbox:1", "toolbox:2"))
    kubectl(apiserver, "replace", "-f", str(f))
    pod = json.loads(kubectl(apiserver, "get", "pod", "rp", "-o", "json").stdout)
    assert pod["metadata"]["labels"] == {"v": "2"}
    assert pod["spec"]["containers"][0]["image"] == "nodeagent.local/toolbox:2"
    f.write_text(f.read_text().replace("name: c,", "name: other,"))
    bad = kubectl(apiserver, "replace", "-f", str(f), check=False)
    assert bad.returncode != 0 and "Forbidden: pod updates may not change fields" in bad.stderr


def test_server_side_apply_removes_what_the_manager_dropped(apiserver: ApiServerProcess, tmp_path: Path) -> None:
    f = tmp_path / "ssa.yaml"
    f.write_text(MANIFEST.split("---")[0].replace("labels: {app: web}", "labels: {app: web, extra: 'yes'}"))
    assert "serverside-applied" in kubectl(apiserver, "apply", "--server-side", "-f", str(f)).stdout
    kubectl(apiserver, "label", "deploy", "web", "other=kept")
    f.write_text(f.read_text().replace(", extra: 'yes'", "").replace("replicas: 2", "replicas: 4")
                 .replace("      - name: side\n        image: nodeagent.local/toolbox:1\n", ""))
    kubectl(apiserver, "apply", "--server-side", "-f", str(f))
    dep = json.loads(kubectl(apiserver, "get", "deploy", "web", "-o", "json", "--show-managed-fields").stdout)
    assert dep["metadata"]["labels"] == {"app": "web", "other": "kept"}
    assert dep["spec"]["replicas"] == 4
    assert [c["name"] for c in dep["spec"]["template"]["spec"]["containers"]] == ["web"]
    managers = [(m["manager"], m["operation"]) for m in dep["metadata"]["managedFields"]]
    assert managers == [("kubectl", "Apply")]
