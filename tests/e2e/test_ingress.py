"""Traffic from outside on a 2-node local cluster, driven with the real kubectl and curl from the
underlay (the switch namespace, where a VM's host would be): Ingress routing, TLS by SNI, the default
backend, scaling without a reload, a rule change within 2 s, a load through 3 reloads without a
failed request, bad input reported while the rest is served; a LoadBalancer Service reachable on its
pool address, the ARP announcement following its only endpoint to the other node, and the address
given back on delete."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodeagent.netns import nsenter_argv
from tests.helpers.cluster_e2e import E2ECluster, local_cluster, wait_for
from tests.helpers.ingress_objects import self_signed

pytestmark = [pytest.mark.root, pytest.mark.e2e]

# httpd answers only for files that exist: every path the test asks for answers with the pod's name
SERVE = ("mkdir -p /www/a; for f in /www/index.html /www/a/index.html /www/a/x /www/b /www/ab /www/c; "
         "do hostname > $f; done; exec httpd -f -p 8080 -h /www")

APPS = """\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{{name: web, image: nodeagent.local/toolbox:1, command: [sh, -c, "{serve}"],
                    readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"""

INGRESS = """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  tls: [{hosts: [web.test], secretName: web-tls}]
  defaultBackend: {service: {name: idf, port: {name: http}}}
  rules:
  - host: web.test
    http:
      paths:
      - {path: /a, pathType: Prefix, backend: {service: {name: ia, port: {number: 80}}}}
      - {path: /b, pathType: Prefix, backend: {service: {name: ib, port: {name: http}}}}
"""

BAD = """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bad}
spec:
  tls: [{hosts: [bad.test], secretName: nosuch-tls}]
  rules:
  - host: bad.test
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: nosuch, port: {number: 80}}}}]
"""

LB_POD = """\
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: lbone}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers: [{{name: web, image: nodeagent.local/toolbox:1, command: [web, "8080"],
                readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}}}]
"""

LB_SVC = """\
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  type: LoadBalancer
  selector: {{app: lbone}}
  ports: [{{port: 80, targetPort: 8080}}]
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[E2ECluster]:
    with local_cluster("ing") as c:
        yield c


def underlay(c: E2ECluster, *argv: str, timeout: float = 15) -> str:
    """A command in the switch namespace: the underlay's own host, outside every node."""
    return subprocess.run([*nsenter_argv(c.plan.switch_netns), *argv], capture_output=True, text=True,
                          timeout=timeout).stdout


def curl(c: E2ECluster, url: str, host: str = "web.test", ip: str = "192.168.56.11", *extra: str) -> tuple[int, str]:
    port = 443 if url.startswith("https") else 80
    out = underlay(c, "curl", "-sk", "-m", "3", "--resolve", f"{host}:{port}:{ip}", "-w", "\n%{http_code}",
                   *extra, url.replace("HOST", host))
    body, _, code = out.rpartition("\n")
    return int(code or 0), body.strip()


def metric(c: E2ECluster, node: str, name: str) -> float:
    out = subprocess.run([*nsenter_argv(c.plan.member(node).netns), "curl", "-s", "-m", "3",
                          "http://127.0.0.1:10254/metrics"], capture_output=True, text=True, timeout=10).stdout
    m = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", out, re.M)
    assert m, f"{name} not in the metrics of {node}"
    return float(m.group(1))


def served_by(c: E2ECluster, url: str, prefix: str, **kw: Any) -> bool:
    code, body = curl(c, url, **kw)
    return code == 200 and body.startswith(prefix)


def load(c: E2ECluster, url: str, host: str, rate: float, seconds: float) -> dict[str, Any]:
    out = underlay(c, sys.executable, "-m", "nodeagent.ingress.load", "--url", url, "--host", host,
                   "--rate", str(rate), "--seconds", str(seconds), timeout=seconds + 60)
    return dict(json.loads(out))


def test_ingress_routes_tls_scaling_reloads_and_bad_input(cluster: E2ECluster) -> None:
    c, k = cluster, cluster.kubectl
    k.apply(APPS.format(name="ia", replicas=2, serve=SERVE) + "---\n" + APPS.format(name="ib", replicas=1, serve=SERVE) + "---\n"
            + APPS.format(name="idf", replicas=1, serve=SERVE))
    crt, key = self_signed("web.test")
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "tls.crt").write_bytes(crt)
        (Path(d) / "tls.key").write_bytes(key)
        k.run("create", "secret", "tls", "web-tls", f"--cert={d}/tls.crt", f"--key={d}/tls.key")
    k.apply(INGRESS)
    for app, n in (("ia", 2), ("ib", 1), ("idf", 1)):
        c.wait_ready_pods(f"app={app}", n, timeout=120)
    ing = k.get_json(["ingress", "web"])
    assert ing["spec"]["ingressClassName"] == "nodeagent"  # the default class, by admission
    wait_for("status.loadBalancer of the Ingress", lambda: (k.get_json(["ingress", "web"]).get("status") or {})
             .get("loadBalancer", {}).get("ingress"), 30)
    table = k.run("get", "ingress", "web").stdout
    assert re.search(r"web\s+nodeagent\s+web.test\s+192.168.56.11,192.168.56.12\s+80, 443", table), table

    wait_for("/a/x served by ia", lambda: served_by(c, "https://HOST/a/x", "ia-"), 30)
    assert served_by(c, "https://HOST/b", "ib-")
    assert served_by(c, "https://HOST/ab", "idf-"), "/ab is not under Prefix /a: the default backend"
    assert served_by(c, "https://HOST/a/x", "ia-", ip="192.168.56.12")  # every node serves
    assert curl(c, "http://HOST/a/x")[0] == 308  # TLS host: HTTP -> HTTPS
    assert served_by(c, "http://HOST/", "idf-", host="unknown.test")
    verbose = subprocess.run([*nsenter_argv(c.plan.switch_netns), "sh", "-c",
                              "curl -skv --resolve web.test:443:192.168.56.11 https://web.test/a 2>&1 >/dev/null"],
                             capture_output=True, text=True, timeout=10).stdout
    assert "CN=web.test" in verbose, verbose

    # scale: the new pod gets traffic within 2 s of being ready, without a reload
    reloads = metric(c, c.plan.node(1).name, "ingress_controller_success_total")
    before = {p["metadata"]["name"] for p in c.ready_pods("app=ia")}
    k.run("scale", "deployment", "ia", "--replicas=3")
    pods = c.wait_ready_pods("app=ia", 3, timeout=90)
    new = ({p["metadata"]["name"] for p in pods} - before).pop()
    ready_at = time.monotonic()
    seen: set[str] = set()
    while new not in seen and time.monotonic() - ready_at < 2.5:
        seen.add(curl(c, "https://HOST/a/")[1])
    assert new in seen, f"new pod {new} not served within 2 s (saw {seen})"
    assert metric(c, c.plan.node(1).name, "ingress_controller_success_total") == reloads

    # a changed rule applies within 2 s
    t0 = time.monotonic()
    k.run("patch", "ingress", "web", "--type=json", "-p", json.dumps([{"op": "add", "path": "/spec/rules/0/http/paths/-",
          "value": {"path": "/c", "pathType": "Exact", "backend": {"service": {"name": "ib", "port": {"number": 80}}}}}]))
    while not served_by(c, "https://HOST/c", "ib-") and time.monotonic() - t0 < 5:
        time.sleep(0.05)
    took = time.monotonic() - t0
    assert served_by(c, "https://HOST/c", "ib-") and took < 2.0, f"rule applied after {took:.2f}s"

    # load through reloads: no request fails (the shorter version; benchmarks/ingress_reload.py runs 60 s)
    result: dict[str, Any] = {}
    t = threading.Thread(target=lambda: result.update(load(c, "http://192.168.56.11/a/", "plain.test", 100, 12)))
    k.apply(INGRESS.replace("  tls: [{hosts: [web.test], secretName: web-tls}]\n", "") +
            "  - host: plain.test\n    http:\n      paths: [{path: /a, pathType: Prefix, backend: "
            "{service: {name: ia, port: {number: 80}}}}]\n")
    wait_for("plain.test served", lambda: served_by(c, "http://HOST/a/", "ia-", host="plain.test"), 10)
    r0 = metric(c, c.plan.node(1).name, "ingress_controller_success_total")
    t.start()
    for i in range(3):
        time.sleep(3)
        k.run("patch", "ingress", "web", "--type=json", "-p", json.dumps([{"op": "add",
              "path": "/spec/rules/0/http/paths/-", "value": {"path": f"/r{i}", "pathType": "Prefix",
                                                              "backend": {"service": {"name": "ib", "port": {"number": 80}}}}}]))
    t.join(90)
    assert result and result["failed"] == 0 and result["requests"] == 1200, result
    assert metric(c, c.plan.node(1).name, "ingress_controller_success_total") >= r0 + 3

    # bad input: Events on the bad Ingress, the rest still served
    k.apply(BAD)
    def reasons() -> set[str]:
        evs = k.items("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dbad")
        return {e["reason"] for e in evs}
    wait_for("ServiceNotFound and SecretNotFound events", lambda: {"ServiceNotFound", "SecretNotFound"} <= reasons(), 20)
    assert curl(c, "https://HOST/", host="bad.test")[0] == 503
    assert served_by(c, "https://HOST/a/", "ia-")


def test_load_balancer_address_follows_its_endpoint_and_is_freed(cluster: E2ECluster) -> None:
    c, k = cluster, cluster.kubectl
    n1, n2 = c.plan.node(1), c.plan.node(2)
    k.apply(LB_POD.format(name="lb-a", node=n1.name) + "---\n" + LB_SVC.format(name="lb"))
    c.wait_ready_pods("app=lbone", 1, timeout=90)

    def lb_ip(name: str) -> str | None:
        ing = (k.get_json(["svc", name]).get("status") or {}).get("loadBalancer", {}).get("ingress") or []
        return ing[0]["ip"] if ing else None
    ip = wait_for("an address from the pool", lambda: lb_ip("lb"), 30)
    assert ip.startswith("192.168.56.22") or ip.startswith("192.168.56.23"), ip
    assert ip in k.run("get", "svc", "lb").stdout  # kubectl's EXTERNAL-IP column

    def mac(netns: str) -> str:
        out = subprocess.run(["ip", "-n", netns, "-j", "link", "show", "eth0"], capture_output=True, text=True).stdout
        return str(json.loads(out)[0]["address"])

    def answered_by(pod: str) -> bool:
        out = underlay(c, "curl", "-s", "-m", "2", f"http://{ip}/")
        return out.strip() == pod

    def neighbour() -> str:
        out = underlay(c, "ip", "-j", "neigh", "show", ip)
        entries = json.loads(out or "[]")
        return str(entries[0].get("lladdr", "")) if entries else ""

    wait_for("the LB address answered by lb-a", lambda: answered_by("lb-a"), 30)
    assert neighbour() == mac(n1.netns)
    # move the only endpoint to the other node: the announcement follows it
    k.run("delete", "pod", "lb-a", "--wait=false")
    k.apply(LB_POD.format(name="lb-b", node=n2.name))
    wait_for("the LB address answered by lb-b", lambda: answered_by("lb-b"), 60)
    assert neighbour() == mac(n2.netns)
    events = k.items("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dlb")
    assert {"IPAllocated", "nodeAssigned"} <= {e["reason"] for e in events}
    # deleting the Service frees the address: the next one gets it; a Service of another class gets none
    k.run("delete", "svc", "lb")
    k.apply(LB_SVC.format(name="lb2"))
    assert wait_for("lb2's address", lambda: lb_ip("lb2"), 30) == ip
    k.apply(LB_SVC.format(name="other").replace("type: LoadBalancer", "type: LoadBalancer\n  loadBalancerClass: "
                                                "example.com/other"))
    time.sleep(2)
    assert lb_ip("other") is None
