"""Benchmark of `nodeagent ingress` (issue 21): requests/s and p99 latency through the ingress
(HAProxy on the node, host network) and straight to the backend pod's IP, in the same run, with the
same client (wrk, keep-alive, from the control-plane namespace on the underlay) and the same pod
(busybox httpd, pinned to the node). Target: the ingress keeps >= 0.8x the direct throughput.

Run (root): .venv/bin/python benchmarks/ingress.py [--seconds 10] [--connections 16]
The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodeagent.netns import nsenter_argv  # noqa: E402
from tests.helpers.cluster_e2e import local_cluster, wait_for  # noqa: E402

TARGET_RATIO = 0.8
MANIFEST = """\
apiVersion: v1
kind: Pod
metadata: {{name: bweb, labels: {{app: bweb}}}}
spec:
  nodeName: {node}
  containers: [{{name: web, image: nodeagent.local/toolbox:1, command: [web, "8080"],
                readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: bweb}}
spec:
  selector: {{app: bweb}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: bweb}}
spec:
  rules:
  - host: bench.test
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: bweb, port: {{name: http}}}}}}}}]}}
"""


def _ms(v: str, unit: str) -> float:
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(netns: str, url: str, seconds: int, connections: int, host: str | None = None) -> dict[str, float]:
    argv = [*nsenter_argv(netns), "wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if host:
        argv[-1:-1] = ["-H", f"Host: {host}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    p99 = re.search(r"99%\s+([0-9.]+)(us|ms|s)\b", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if not rps or not p99:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    return {"rps": float(rps.group(1)), "p99_ms": _ms(p99.group(1), p99.group(2)),
            "non_2xx": float(errors.group(1)) if errors else 0.0,
            "socket_errors": float(sum(int(x) for x in sock.groups())) if sock else 0.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    a = ap.parse_args()
    with local_cluster("bing", nodes=1) as c:
        node = c.plan.node(1)
        c.kubectl.apply(MANIFEST.format(node=node.name))
        pod = c.wait_ready_pods("app=bweb", 1, timeout=120)[0]
        pod_url = f"http://{pod['status']['podIP']}:8080/"
        ingress_url = f"http://{node.ip}/"
        cp = c.plan.control_plane.netns

        def served() -> bool:
            out = subprocess.run([*nsenter_argv(cp), "curl", "-s", "-m", "2", "-H", "Host: bench.test", ingress_url],
                                 capture_output=True, text=True).stdout
            return out.strip() == "bweb"
        wait_for("the ingress serving bench.test", served, 60)
        wrk(cp, ingress_url, 2, a.connections, "bench.test")  # warm-up
        results: dict[str, Any] = {}
        # alternate, so that a noisy neighbour on the shared cores hits both alike
        for label, url, host in (("direct", pod_url, None), ("ingress", ingress_url, "bench.test"),
                                 ("direct2", pod_url, None), ("ingress2", ingress_url, "bench.test")):
            results[label] = wrk(cp, url, a.seconds, a.connections, host)
            time.sleep(1)
    direct = max(results["direct"]["rps"], results["direct2"]["rps"])
    ingress = max(results["ingress"]["rps"], results["ingress2"]["rps"])
    p99_direct = min(results["direct"]["p99_ms"], results["direct2"]["p99_ms"])
    p99_ingress = min(results["ingress"]["p99_ms"], results["ingress2"]["p99_ms"])
    ratio = ingress / direct if direct else 0.0
    print(f"through the ingress: {ingress:8.0f} req/s  p99 {p99_ingress:6.2f} ms")
    print(f"straight to the pod: {direct:8.0f} req/s  p99 {p99_direct:6.2f} ms")
    print(f"ratio {ratio:.2f}x (target >= {TARGET_RATIO}x)  {'OK' if ratio >= TARGET_RATIO else 'BELOW TARGET'}")
    print(json.dumps({"ingress_rps": ingress, "direct_rps": direct, "ratio": round(ratio, 3),
                      "ingress_p99_ms": p99_ingress, "direct_p99_ms": p99_direct, "runs": results}))
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
