"""Reloads under load (issue 21): 200 requests/s for 60 s through `nodeagent ingress` (each on a new
connection, from the underlay) while its config is changed 10 times, each change a graceful HAProxy
reload; prints the failed requests (target 0), p50/p99 and the reloads the controller counted.
`make test` runs a 12 s version of this (tests/e2e/test_ingress.py).

Run (root): .venv/bin/python benchmarks/ingress_reload.py [--rate 200] [--seconds 60] [--reloads 10]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodeagent.netns import nsenter_argv  # noqa: E402
from tests.helpers.cluster_e2e import local_cluster, wait_for  # noqa: E402

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: rweb}
spec:
  replicas: 2
  selector: {matchLabels: {app: rweb}}
  template:
    metadata: {labels: {app: rweb}}
    spec:
      containers: [{name: web, image: nodeagent.local/toolbox:1, command: [web, "8080"],
                    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}}]
---
apiVersion: v1
kind: Service
metadata: {name: rweb}
spec:
  selector: {app: rweb}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: rweb}
spec:
  rules:
  - host: reload.test
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: rweb, port: {name: http}}}}]}
"""


def reloads(netns: str) -> float:
    out = subprocess.run([*nsenter_argv(netns), "curl", "-s", "-m", "3", "http://127.0.0.1:10254/metrics"],
                         capture_output=True, text=True).stdout
    m = re.search(r"^ingress_controller_success_total ([0-9.e+]+)$", out, re.M)
    return float(m.group(1)) if m else -1.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--reloads", type=int, default=10)
    a = ap.parse_args()
    with local_cluster("brel", nodes=1) as c:
        node, sw = c.plan.node(1), c.plan.switch_netns
        k = c.kubectl
        k.apply(MANIFEST)
        c.wait_ready_pods("app=rweb", 2, timeout=120)
        url = f"http://{node.ip}/"
        wait_for("reload.test served", lambda: subprocess.run(
            [*nsenter_argv(sw), "curl", "-sf", "-m", "2", "-H", "Host: reload.test", url],
            capture_output=True).returncode == 0, 60)
        before = reloads(node.netns)
        result: dict[str, Any] = {}

        def run_load() -> None:
            out = subprocess.run([*nsenter_argv(sw), sys.executable, "-m", "nodeagent.ingress.load", "--url", url,
                                  "--host", "reload.test", "--rate", str(a.rate), "--seconds", str(a.seconds)],
                                 capture_output=True, text=True, timeout=a.seconds + 120).stdout
            result.update(json.loads(out))
        t = threading.Thread(target=run_load)
        t.start()
        gap = a.seconds / (a.reloads + 1)
        for i in range(a.reloads):
            time.sleep(gap)
            patch = [{"op": "add", "path": "/spec/rules/0/http/paths/-", "value": {
                "path": f"/v{i}", "pathType": "Prefix", "backend": {"service": {"name": "rweb", "port": {"name": "http"}}}}}]
            k.run("patch", "ingress", "rweb", "--type=json", "-p", json.dumps(patch))
        t.join()
        time.sleep(1)
        done = reloads(node.netns) - before
    print(f"{result.get('requests')} requests at {a.rate:.0f}/s over {result.get('seconds')} s, "
          f"{done:.0f} reloads: {result.get('failed')} failed (target 0); p50 {result.get('p50_ms')} ms, "
          f"p99 {result.get('p99_ms')} ms")
    print(json.dumps({**result, "reloads": done}))
    return 0 if result.get("failed") == 0 and done >= a.reloads else 1


if __name__ == "__main__":
    sys.exit(main())
