"""The official `kubernetes` Python client inside a pod, with in-cluster config (issue 14).

The pod image is assembled from this machine's Python and the venv's client
(tests/helpers/python_image.py): no registry can be reached and the toolbox image has no Python.
Everything the client uses is what a pod on upstream Kubernetes gets: the token, CA and namespace
from the projected volume the kubelet fills (a token bound to the pod, renewed by the kubelet),
KUBERNETES_SERVICE_HOST/PORT, and kube-proxy's rules for the `kubernetes` Service. The token here
lives 60 s (the apiserver's minimum lowered for the test) so that the run sees a rotation: the
kubelet writes a new token after 48 s and the client, which re-reads the file every minute, goes
on with it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.helpers.cluster_e2e import E2ECluster, local_cluster, wait_for
from tests.helpers.python_image import IMAGE, build_python_client_image

pytestmark = [pytest.mark.root, pytest.mark.e2e, pytest.mark.timeout(420)]

SCRIPT = r"""
import hashlib, os, time
from kubernetes import client, config
from kubernetes.client.rest import ApiException
config.load_incluster_config()
v1 = client.CoreV1Api()
ns = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
print("env", os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"], flush=True)
end = time.time() + float(os.environ["DURATION"])
while True:
    for where in (ns, "default"):
        try:
            n = len(v1.list_namespaced_pod(where).items)
            result = f"ok {n}"
        except ApiException as e:
            result = f"status {e.status}"
        used = "".join(v1.api_client.configuration.api_key.values()).split(" ")[-1]  # what it sends
        on_disk = open("/var/run/secrets/kubernetes.io/serviceaccount/token").read()
        print(where, result, hashlib.sha256(on_disk.encode()).hexdigest()[:12],
              hashlib.sha256(used.encode()).hexdigest()[:12], flush=True)
    if time.time() > end:
        break
    time.sleep(3)
"""


def _manifest(name: str, sa: str, duration: int) -> str:
    import json

    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "team"}, "spec": {
        "serviceAccountName": sa, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "client", "image": IMAGE, "args": ["-c", SCRIPT],
                        "env": [{"name": "DURATION", "value": str(duration)}],
                        "volumeMounts": [{"name": "api", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                                          "readOnly": True}]}],
        "volumes": [{"name": "api", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 60}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}],
    }}
    return json.dumps(pod)


@pytest.fixture(scope="module")
def cluster() -> Iterator[E2ECluster]:
    image = build_python_client_image()
    with local_cluster("icc", nodes=1,
                       extra=("--apiserver-arg=--service-account-min-token-expiration-seconds=60",)) as c:
        for m in c.plan.node_members:
            sock = m.data_dir / "containerd" / "containerd.sock"
            subprocess.run(["ctr", "--address", str(sock), "-n", "k8s.io", "images", "import", "--snapshotter",
                            "overlayfs", str(image.archive)], check=True, capture_output=True, timeout=120)
        yield c


def _logs(c: E2ECluster, pod: str) -> list[list[str]]:
    phase = wait_for(f"pod {pod} to finish", lambda: (p := c.kubectl.get_json(["pod", pod, "-n", "team"]))
                     ["status"].get("phase") in ("Succeeded", "Failed") and p["status"]["phase"], 240)
    out = c.kubectl.run("logs", pod, "-n", "team").stdout
    assert phase == "Succeeded", out
    return [line.split() for line in out.splitlines() if line.strip()]


def test_incluster_client_sees_what_rbac_grants_and_survives_token_rotation(cluster: E2ECluster) -> None:
    k = cluster.kubectl
    k.run("create", "namespace", "team")
    for sa in ("reader", "nobody"):
        wait_for("the default service account", lambda: k.run("get", "sa", "default", "-n", "team",
                                                               check=False).returncode == 0, 60)
        k.run("create", "serviceaccount", sa, "-n", "team")
    k.run("create", "rolebinding", "reader-view", "--clusterrole=view", "--serviceaccount=team:reader", "-n", "team")
    wait_for("kube-root-ca.crt in team", lambda: k.run("get", "cm", "kube-root-ca.crt", "-n", "team",
                                                       check=False).returncode == 0, 60)
    k.run("apply", "-f", "-", input=_manifest("reader", "reader", 75))
    k.run("apply", "-f", "-", input=_manifest("nobody", "nobody", 1))

    nobody = _logs(cluster, "nobody")
    assert nobody[0][:3] == ["env", "10.96.0.1", "443"]
    assert {tuple(r[1:3]) for r in nobody if r[0] == "team"} == {("status", "403")}

    reader = _logs(cluster, "reader")
    own = [r for r in reader if r[0] == "team"]
    other = [r for r in reader if r[0] == "default"]
    assert own and all(r[1] == "ok" for r in own), reader  # every call in its namespace worked...
    assert all(r[1:3] == ["status", "403"] for r in other), reader  # ...none in another
    files, used = [r[-2] for r in own], [r[-1] for r in own]
    assert len(set(files)) >= 2, f"the kubelet never renewed the token: {files}"
    assert len(set(used)) >= 2 and used[-1] != used[0], f"the client never used a renewed token: {used}"
    assert set(used) <= set(files)  # only tokens the kubelet wrote (it renews every ~50 s, the client reads
    # the file once a minute, so the two need not agree at the last call)
