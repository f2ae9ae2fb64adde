"""Cluster DNS end to end (issue 9) on a 2-node local cluster: pods resolve Services by name through
the kube-dns Service (10.96.0.10, served by the proxy like any other), headless Services list their
ready pods, deletions reach answers, and replacing the DNS backend does not black-hole a client
that keeps its UDP source port (its conntrack entry must follow the new endpoint).

This cluster's proxies run in nftables mode (test_cluster.py's in iptables mode), so every Service
here, kube-dns included, goes through the `ip kube-proxy` table end to end.

Tests run in file order and build on each other. HTTP by name uses the toolbox's `wget` (busybox's,
behind a wrapper that enforces -T with `timeout`: Debian's busybox-static crashes on its own -T).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from dnslib import RCODE, DNSRecord

from nodeagent.cluster.lifecycle import stop_component
from nodeagent.netns import nsenter_argv, run_in_netns
from tests.helpers.cluster_e2e import E2ECluster, local_cluster, sleeper_pod, wait_for

pytestmark = [pytest.mark.root, pytest.mark.e2e, pytest.mark.timeout(420)]

D = "cluster.local"
MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: web, image: nodeagent.local/toolbox:1, command: ["web", "8080"],
         ports: [{name: http, containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web-headless}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 8080}]
"""



@pytest.fixture(scope="module")
def cluster() -> Iterator[E2ECluster]:
    with local_cluster("dns", nodes=2, extra=("--proxy-mode", "nftables")) as c:
        yield c


def exec_in(cluster: E2ECluster, pod: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl.run("exec", pod, "--", *cmd, check=False, timeout=30)


def nslookup(cluster: E2ECluster, pod: str, name: str) -> str:
    p = exec_in(cluster, pod, "nslookup", name)
    return p.stdout + p.stderr


def addresses(out: str) -> set[str]:
    """The answer addresses in busybox nslookup output (after the Server/Address header)."""
    lines = out.splitlines()
    return {ln.split()[-1] for ln in lines[2:] if ln.startswith("Address")}


def test_kube_dns_service_is_registered(cluster: E2ECluster) -> None:
    svc = cluster.kubectl.get_json(["service", "kube-dns", "-n", "kube-system"])
    assert svc["spec"]["clusterIP"] == "10.96.0.10"
    assert "selector" not in svc["spec"]
    assert svc["metadata"]["labels"]["k8s-app"] == "kube-dns"
    slices = cluster.kubectl.items("/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices"
                                   "?labelSelector=kubernetes.io/service-name%3Dkube-dns")
    assert [e["addresses"] for s in slices for e in s["endpoints"]] == [[cluster.plan.control_plane.ip]]
    # and every node's nftables proxy serves it (none of them writes KUBE-* iptables chains)
    for m in cluster.plan.node_members:
        def listed(m: Any = m) -> str:
            return subprocess.run([*nsenter_argv(m.netns), "nft", "list", "map", "ip", "kube-proxy", "service-ips"],
                                  capture_output=True, text=True).stdout

        wait_for(f"kube-dns in {m.name}'s service-ips map",
                 lambda: "10.96.0.10 . udp . 53 : goto service-" in listed(), 30)
        legacy = subprocess.run([*nsenter_argv(m.netns), "iptables-legacy-save", "-t", "nat"],
                                capture_output=True, text=True).stdout
        assert "KUBE-SERVICES" not in legacy


def test_pods_resolve_and_reach_services_by_name(cluster: E2ECluster) -> None:
    cluster.kubectl.apply(MANIFEST)
    nodes = [m.name for m in cluster.plan.node_members]
    for i, node in enumerate(nodes):
        cluster.kubectl.apply(sleeper_pod(f"dns-client{i}", node, "dns-client"))
    cluster.wait_ready_pods("role=dns-client", len(nodes), 180)
    backends = {p["metadata"]["name"] for p in cluster.wait_ready_pods("app=web", 2, 180)}
    web_ip = cluster.kubectl.get_json(["service", "web"])["spec"]["clusterIP"]
    for i in range(len(nodes)):
        pod = f"dns-client{i}"
        resolv = exec_in(cluster, pod, "cat", "/etc/resolv.conf").stdout
        assert "nameserver 10.96.0.10" in resolv and f"search default.svc.{D}" in resolv, resolv
        # the short name through the search path, as `nslookup web` in a pod
        def resolved(p: str = pod) -> str | None:
            out = nslookup(cluster, p, "web")
            return out if web_ip in addresses(out) else None

        out = wait_for(f"nslookup web from {pod}", resolved, 30)
        assert f"Name:\tweb.default.svc.{D}" in out, out
        assert addresses(nslookup(cluster, pod, f"web.default.svc.{D}")) == {web_ip}
        # web.default goes through the C library's search path (getaddrinfo): `wget http://web.default`
        def http_get(p: str = pod) -> str | None:
            # the proxy may still be writing the Service's rules (connection refused until then)
            r = exec_in(cluster, p, "wget", "-T", "5", "-qO-", "http://web.default")
            return r.stdout if r.returncode == 0 and r.stdout.strip() else None

        body = wait_for(f"GET http://web.default from {pod}", http_get, 90)
        assert body.strip().splitlines()[-1] in backends, body


def test_trace_shows_the_nftables_path(cluster: E2ECluster) -> None:
    """`nodeagent trace` in nftables mode: the map entry, the chain's one dnat rule, each
    endpoint's share of its key range, and the conntrack entry naming the endpoint it got."""
    base = ("--name", cluster.name, "--base-dir", str(cluster.base_dir))
    p = cluster.nodeagent("trace", "web", "--from", "dns-client0", *base, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    web_ip = cluster.kubectl.get_json(["service", "web"])["spec"]["clusterIP"]
    assert f"@service-ips -> {web_ip} . tcp . 80 : goto service-" in p.stdout, p.stdout
    shares = re.findall(r"\((\d+\.\d)% of draws\) -> DNAT to ([\d.]+):8080", p.stdout)
    assert sorted(ip for _, ip in shares) == sorted(b["status"]["podIP"] for b in cluster.ready_pods("app=web"))
    assert all(share == "50.0" for share, _ in shares), p.stdout
    assert "reply: 200" in p.stdout and "KUBE-" not in p.stdout


def test_headless_service_returns_each_ready_pod(cluster: E2ECluster) -> None:
    pod_ips = {p["status"]["podIP"] for p in cluster.ready_pods("app=web")}
    assert len(pod_ips) == 2
    wait_for("web-headless lists both pods",
             lambda: addresses(nslookup(cluster, "dns-client0", f"web-headless.default.svc.{D}")) == pod_ips, 60)


def test_deleted_service_stops_resolving(cluster: E2ECluster) -> None:
    name = f"web.default.svc.{D}"
    assert addresses(nslookup(cluster, "dns-client0", name))
    cluster.kubectl.run("delete", "service", "web")
    t0 = time.monotonic()
    wait_for("deleted web answers NXDOMAIN",
             lambda: "NXDOMAIN" in nslookup(cluster, "dns-client0", name), 30, interval=0.1)
    # reported, not asserted (no timed assertions): benchmarks/dns.py measures delete -> NXDOMAIN
    print(f"deleted Service stopped resolving after {time.monotonic() - t0:.2f}s (incl. kubectl round trips)")


def _udp_socket(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    s.settimeout(1.0)
    return s


def _ask(s: socket.socket, name: str) -> Any:
    s.sendto(DNSRecord.question(name).pack(), ("10.96.0.10", 53))
    try:
        while True:
            r = DNSRecord.parse(s.recv(4096))
            if str(r.q.qname).rstrip(".") == name:
                return r
    except TimeoutError:
        return None


def test_replaced_dns_backend_does_not_black_hole_a_fixed_source_port(cluster: E2ECluster) -> None:
    client = cluster.kubectl.get_json(["pod", "dns-client0"])
    net = cluster.pod_net(client)
    node = cluster.plan.member(client["spec"]["nodeName"])
    name = f"web-headless.default.svc.{D}"
    sock = run_in_netns(net.netns_path, _udp_socket, 40053)  # one source port: one conntrack entry
    log = open(cluster.base_dir / cluster.name / "logs" / "dns-b.log", "wb")  # noqa: SIM115
    second = subprocess.Popen([*nsenter_argv(node.netns), sys.executable, "-m", "nodeagent", "dns",
                               "--kubeconfig", str(cluster.plan.internal_kubeconfig), "--bind", node.ip,
                               "--advertise-address", node.ip, "--lameduck", "0"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        r = _ask(sock, name)
        assert r is not None and r.header.rcode == RCODE.NOERROR  # through the first backend (cp)
        wait_for("second DNS backend registered", lambda: len(cluster.kubectl.items(
            "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices")) == 2, 60)
        stop_component(cluster.plan, "cp-dns")  # the first backend leaves; its slice goes at SIGTERM
        # the same 5-tuple keeps asking: the proxy must move (or flush) its conntrack entry
        answered = wait_for("an answer from the remaining backend on the same source port",
                            lambda: _ask(sock, name), 90, interval=0)
        assert answered.header.rcode == RCODE.NOERROR and len(answered.rr) == 2
        ct = subprocess.run([*nsenter_argv(node.netns), "conntrack", "-L", "-p", "udp", "--sport", "40053"],
                            capture_output=True, text=True).stdout
        assert f"src={node.ip} dst={client['status']['podIP']} sport=53 dport=40053" in ct, ct
    finally:
        sock.close()
        second.terminate()
        try:
            second.wait(10)
        except subprocess.TimeoutExpired:
            second.kill()
            second.wait()
        log.close()
