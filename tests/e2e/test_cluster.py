"""End to end on a 2-node local cluster with the real kubectl (seed 002, "How controllers cooperate").

One cluster for the module, with short node-failure timings so that a stopped kubelet's pods move
within the test. The tests run in file order and build on each other: apply -> spread -> traffic ->
scale down -> node failure -> `cluster down`.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from nodeagent.cluster import httpget, natrules
from nodeagent.cluster.lifecycle import stop_component
from tests.helpers.cluster_e2e import E2ECluster, local_cluster, sleeper_pod, wait_for
from tests.helpers.cluster_host import host_traces

pytestmark = [pytest.mark.root, pytest.mark.e2e, pytest.mark.timeout(420)]

APP = "echo"
MANIFEST = f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {APP}
spec:
  replicas: 4
  selector:
    matchLabels: {{app: {APP}}}
  template:
    metadata:
      labels: {{app: {APP}}}
    spec:
      terminationGracePeriodSeconds: 1
      # short stays on a failed node (the apiserver adds 300 s otherwise, as upstream's
      # DefaultTolerationSeconds admission does)
      tolerations:
      - {{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}}
      - {{key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 2}}
      containers:
      - name: web
        image: nodeagent.local/toolbox:1
        command: ["web", "8080"]
        ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata:
  name: {APP}
spec:
  type: NodePort
  selector: {{app: {APP}}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"""



@pytest.fixture(scope="module")
def cluster() -> Iterator[E2ECluster]:
    with local_cluster("e2e", nodes=2, extra=("--node-monitor-grace-period", "8",
                                                "--default-toleration-seconds", "4")) as c:
        yield c


def _tail(c: E2ECluster, component: str, lines: int = 30) -> str:
    log = c.plan.log_dir / f"{component}.log"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def _nodes(c: E2ECluster) -> list[str]:
    return sorted(m.name for m in c.plan.node_members)


def _service(c: E2ECluster) -> dict[str, Any]:
    return c.kubectl.raw(f"/api/v1/namespaces/default/services/{APP}")


def _sep_targets(c: E2ECluster, node: str, svc: dict[str, Any]) -> set[str]:
    rules = natrules.service_rules(c.nat_rules(node), svc["spec"]["clusterIP"], 80)
    return {t.split(":")[0] for r in rules if (t := natrules.dnat_target(r))}


def _slice_ips(c: E2ECluster) -> set[str]:
    slices = c.kubectl.items(
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3D" + APP)
    return {a for s in slices for e in s.get("endpoints") or []
            if (e.get("conditions") or {}).get("ready", True) for a in e.get("addresses") or []}


def test_cluster_up_reports_progress_and_nodes_ready(cluster: E2ECluster) -> None:
    assert "waiting for nodes to be Ready" in cluster.up_output
    assert re.search(r"Ready 2/2", cluster.up_output)
    out = cluster.nodeagent("cluster", "kubeconfig", "--name", cluster.name, "--base-dir",
                            str(cluster.base_dir)).stdout.strip()
    assert out == str(cluster.plan.kubeconfig)
    nodes = cluster.kubectl.get_json(["nodes"])["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == _nodes(cluster)
    assert all(n["spec"].get("podCIDR") for n in nodes)
    st = cluster.nodeagent("cluster", "status", "--name", cluster.name, "--base-dir", str(cluster.base_dir))
    assert st.returncode == 0, st.stdout


def test_deployment_to_rules_on_both_nodes(cluster: E2ECluster) -> None:
    cluster.kubectl.apply(MANIFEST)
    pods = cluster.wait_ready_pods(f"app={APP}", 4, 180)
    assert {p["spec"]["nodeName"] for p in pods} == set(_nodes(cluster)), "pods not spread over both nodes"
    ips = {p["status"]["podIP"] for p in pods}
    for p in pods:  # each pod's IP is in its node's podCIDR
        cidr = cluster.kubectl.raw(f"/api/v1/nodes/{p['spec']['nodeName']}")["spec"]["podCIDR"]
        assert ipaddress.ip_address(p["status"]["podIP"]) in ipaddress.ip_network(cidr)
    wait_for("EndpointSlice with the 4 pod IPs", lambda: _slice_ips(cluster) == ips, 60)
    svc = _service(cluster)
    for node in _nodes(cluster):
        wait_for(f"KUBE-SEP DNAT to the 4 pods on {node}", lambda n=node: _sep_targets(cluster, n, svc) == ips, 60)  # type: ignore[misc]


def test_service_reachable_from_pods_on_both_nodes_and_nodeport_from_underlay(cluster: E2ECluster) -> None:
    nodes = _nodes(cluster)
    for i, node in enumerate(nodes):
        cluster.kubectl.apply(sleeper_pod(f"client{i}", node, "client"))
    clients = cluster.wait_ready_pods("role=client", 2, 120)
    backends = {p["metadata"]["name"] for p in cluster.ready_pods(f"app={APP}")}
    svc = _service(cluster)
    for pod in clients:
        net = cluster.pod_net(pod)
        replies = httpget.get_many_in_netns(net.netns_path, svc["spec"]["clusterIP"], 80, 40)
        assert all(r.status == 200 for r in replies), [r.error for r in replies if r.status != 200][:3]
        answered = {r.body for r in replies}
        assert answered <= backends and len(answered) >= 2, (pod["spec"]["nodeName"], answered)
    node_port = svc["spec"]["ports"][0]["nodePort"]
    for m in cluster.plan.node_members:
        r = httpget.get_many_in_netns(cluster.plan.switch_netns, m.ip, node_port, 1)[0]
        assert r.status == 200 and r.body in backends, (m.ip, node_port, r)


def test_scale_down_removed_backends_get_no_traffic(cluster: E2ECluster) -> None:
    before = {p["metadata"]["name"] for p in cluster.ready_pods(f"app={APP}")}
    cluster.kubectl.run("scale", "deployment", APP, "--replicas=2")
    kept = cluster.wait_ready_pods(f"app={APP}", 2, 60, ready=False)
    kept_names = {p["metadata"]["name"] for p in kept}
    kept_ips = {p["status"]["podIP"] for p in kept}
    assert kept_names < before
    svc = _service(cluster)
    wait_for("EndpointSlice with 2 addresses", lambda: _slice_ips(cluster) == kept_ips, 60)
    for node in _nodes(cluster):
        wait_for(f"rules on {node} with the 2 kept pods", lambda n=node: _sep_targets(cluster, n, svc) == kept_ips, 60)  # type: ignore[misc]
    client = cluster.ready_pods("role=client")[0]
    replies = httpget.get_many_in_netns(cluster.pod_net(client).netns_path, svc["spec"]["clusterIP"], 80, 60)
    assert {r.body for r in replies if r.status == 200} <= kept_names
    assert sum(r.status == 200 for r in replies) == 60


def test_trace_and_netns_show_the_path_of_a_request(cluster: E2ECluster) -> None:
    client = cluster.ready_pods("role=client")[0]
    base = ("--name", cluster.name, "--base-dir", str(cluster.base_dir))
    p = cluster.nodeagent("trace", APP, "--from", client["metadata"]["name"], *base, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    backends = {b["status"]["podIP"]: b["metadata"]["name"] for b in cluster.ready_pods(f"app={APP}")}
    reply = re.search(r"reply: 200 '([^']+)'", p.stdout)
    assert reply and reply.group(1) in backends.values(), p.stdout
    # the DNAT rule that moved points at the backend that answered, whose veth saw the packets
    dnat = re.search(r"<== DNAT to ([\d.]+):8080", p.stdout)
    assert dnat and backends[dnat.group(1)] == reply.group(1), p.stdout
    assert re.search(rf"6\. backend {reply.group(1)} .*\n.*\n\s+\S+ IP {client['status']['podIP']}\.\d+ > "
                     rf"{dnat.group(1)}\.8080", p.stdout), p.stdout
    info = cluster.nodeagent("netns", client["metadata"]["name"], *base)
    assert f"ip={client['status']['podIP']}" in info.stdout and "host veth veth" in info.stdout
    addr = cluster.nodeagent("netns", client["metadata"]["name"], *base, "--exec", "ip", "-4", "-o", "addr")
    assert f"eth0    inet {client['status']['podIP']}/" in addr.stdout


def test_port_forward_to_a_deployment(cluster: E2ECluster) -> None:
    """`kubectl port-forward deploy/echo :8080` (kubectl picks a pod) through the cluster's
    forwarder, the apiserver and that pod's kubelet."""
    proc = subprocess.Popen(cluster.kubectl.argv("port-forward", f"deploy/{APP}", ":8080"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> 8080"
        m = re.search(r"Forwarding from 127\.0\.0\.1:(\d+) -> 8080", line)
        assert m, line + (proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/", timeout=10) as r:
            body = r.read().decode().strip()
        assert body in {p["metadata"]["name"] for p in cluster.ready_pods(f"app={APP}")}, body
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_second_cluster_coexists(cluster: E2ECluster) -> None:
    with local_cluster("e2eb", nodes=1, extra=("--no-images",)) as other:
        assert other.state.api_port != cluster.state.api_port
        assert not set(other.plan.netns_names) & set(cluster.plan.netns_names)
        theirs = {n["metadata"]["name"] for n in other.kubectl.items("/api/v1/nodes")}
        ours = {n["metadata"]["name"] for n in cluster.kubectl.items("/api/v1/nodes")}
        assert theirs == {f"{other.name}-n1"} and ours == set(_nodes(cluster))
        # the same underlay addresses in both, each answering in its own namespaces
        svc = _service(cluster)
        r = httpget.get_many_in_netns(cluster.plan.switch_netns, "192.168.56.11", svc["spec"]["ports"][0]["nodePort"], 1)[0]
        assert r.status == 200
    # removing it left ours alone
    assert cluster.nodeagent("cluster", "status", "--name", cluster.name, "--base-dir",
                             str(cluster.base_dir)).returncode == 0


def test_stopped_kubelet_makes_node_not_ready_and_pods_move(cluster: E2ECluster) -> None:
    nodes = _nodes(cluster)
    victim, survivor = nodes[1], nodes[0]
    on_victim = [p for p in cluster.ready_pods(f"app={APP}") if p["spec"]["nodeName"] == victim]
    if not on_victim:  # make sure the failing node holds a backend
        cluster.kubectl.run("scale", "deployment", APP, "--replicas=4")
        wait_for(f"an echo pod on {victim}", lambda: [p for p in cluster.ready_pods(f"app={APP}")
                                                      if p["spec"]["nodeName"] == victim], 120)
    want = len(cluster.pods(f"app={APP}"))
    stop_component(cluster.plan, f"{victim}-kubelet")

    def node_not_ready() -> bool:
        node = cluster.kubectl.raw(f"/api/v1/nodes/{victim}")
        ready = [c for c in node["status"].get("conditions", []) if c["type"] == "Ready"]
        return bool(ready) and ready[0].get("status") in ("False", "Unknown")

    wait_for(f"{victim} NotReady", node_not_ready, 60)
    try:
        moved = cluster.wait_ready_pods(f"app={APP}", want, 150, node=survivor)
    except AssertionError as e:
        state = cluster.kubectl.run("get", "nodes,pods", "-o", "wide", check=False).stdout
        raise AssertionError(f"{e}\n{state}\n{_tail(cluster, 'cp-controllers')}") from None
    assert all(p["spec"]["nodeName"] == survivor for p in moved)
    # the pods of the failed node are gone from the API (evicted, then force-deleted or replaced)
    wait_for(f"no echo pod left on {victim}", lambda: not [p for p in cluster.pods(f"app={APP}")
                                                       if p["spec"].get("nodeName") == victim], 60)


def test_cluster_down_leaves_the_host_as_it_was(cluster: E2ECluster) -> None:
    plan = cluster.plan
    during = host_traces(cluster.name, plan.dir, all_mounts_in_run_netns=False)
    assert during.netns and during.processes  # the probe sees a running cluster
    p = cluster.nodeagent("cluster", "down", "--name", cluster.name, "--base-dir", str(cluster.base_dir),
                          timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    after, before = host_traces(cluster.name, plan.dir, all_mounts_in_run_netns=False), cluster.before
    assert after.netns == before.netns == frozenset()
    assert after.processes == before.processes == frozenset()
    assert after.mounts == before.mounts == frozenset()  # nothing mounted under the cluster dir
    assert not plan.dir.exists()
    assert after.root_links <= before.root_links  # no bridge or veth left in the root namespace
    assert after.root_chains <= before.root_chains
