"""`nodeagent demo`: a 2-node cluster, a 3-replica web Deployment behind a Service, 300 requests
from a pod on another node, how they spread, and the iptables rules that spread them."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from nodeagent.cluster.topology import BASE_DIR, DEFAULT_NAME

NAME = DEFAULT_NAME
APP = "web"
CLIENT = "client"
IMAGE = "nodeagent.local/toolbox:1"
REQUESTS = 300
WEB_PORT = 8080

# The toolbox's /bin/web answers with the pod's own name (its hostname, which the kubelet sets to the
# pod name) through busybox httpd (nodeagent/runtime/images.py).
MANIFEST = f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {APP}
  labels: {{app: {APP}}}
spec:
  replicas: 3
  selector:
    matchLabels: {{app: {APP}}}
  template:
    metadata:
      labels: {{app: {APP}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: {APP}
        image: {IMAGE}
        command: ["web", "{WEB_PORT}"]
        ports:
        - {{name: http, containerPort: {WEB_PORT}}}
        readinessProbe:
          tcpSocket: {{port: {WEB_PORT}}}
          periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata:
  name: {APP}
spec:
  type: NodePort
  selector: {{app: {APP}}}
  ports:
  - {{name: http, port: 80, targetPort: http}}
"""


def client_manifest(node: str) -> str:
    return f"""\
apiVersion: v1
kind: Pod
metadata:
  name: {CLIENT}
  labels: {{app: {CLIENT}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: {CLIENT}
    image: {IMAGE}
    command: ["sleep", "1000000"]
"""


def _wait(what: str, check: Any, timeout: float, out: Any) -> Any:
    out.write(f"- waiting for {what} ...")
    out.flush()
    t0 = time.monotonic()
    while True:
        result = check()
        if result:
            out.write(f" ok ({time.monotonic() - t0:.1f}s)\n")
            return result
        if time.monotonic() - t0 > timeout:
            out.write(" timed out\n")
            raise TimeoutError(f"{what}: not done after {timeout:.0f}s")
        time.sleep(1)


def run(args: argparse.Namespace, out: Any = sys.stdout) -> int:
    from nodeagent.cluster import httpget, lifecycle, natrules, podnet, stats
    from nodeagent.cluster.components import Options
    from nodeagent.cluster.kube import Kubectl, KubectlError, pod_ready

    name = args.name
    base_dir = Path(args.base_dir) if args.base_dir else BASE_DIR
    state = lifecycle.ClusterState.load(name, base_dir)
    if state is None:
        out.write(f"== starting a {args.nodes}-node cluster {name!r} in network namespaces\n")
        try:
            state = lifecycle.up(name, args.nodes, Options(), out=out, base_dir=base_dir)
        except (lifecycle.ClusterError, RuntimeError, ValueError) as e:
            out.write(f"error: {e}\n")
            return 1
    else:
        out.write(f"== using the running cluster {name!r} ({state.plan.dir})\n")
    plan = state.plan
    k = Kubectl(plan.kubeconfig, timeout=60)
    try:
        out.write(f"\n== deploying {APP} (3 replicas of {IMAGE}) and a NodePort Service\n")
        out.write(k.apply(MANIFEST))
        nodes = [n["metadata"]["name"] for n in k.items("/api/v1/nodes")]
        client_node = sorted(nodes)[-1]

        def backends() -> list[dict[str, Any]] | None:
            pods = [p for p in k.items(f"/api/v1/namespaces/default/pods?labelSelector=app%3D{APP}")
                    if not p["metadata"].get("deletionTimestamp")]
            ready = [p for p in pods if pod_ready(p)]
            return ready if len(ready) >= 3 else None

        pods = _wait("3 web pods Running and Ready", backends, 180, out)
        for p in pods:
            out.write(f"    {p['metadata']['name']:32} {p['status'].get('podIP', ''):14} on {p['spec'].get('nodeName')}\n")
        # the client on the node with the fewest backends: most requests cross the underlay
        per_node = {n: sum(p["spec"].get("nodeName") == n for p in pods) for n in nodes}
        client_node = min(sorted(per_node), key=lambda n: per_node[n])
        out.write(f"\n== starting pod {CLIENT} on {client_node}\n")
        out.write(k.apply(client_manifest(client_node)))
        client = _wait(f"pod {CLIENT} Running", lambda: next(
            (p for p in k.items("/api/v1/namespaces/default/pods?labelSelector=app%3Dclient") if pod_ready(p)),
            None), 120, out)
        svc = k.raw(f"/api/v1/namespaces/default/services/{APP}")
        cluster_ip = svc["spec"]["clusterIP"]
        node_port = svc["spec"]["ports"][0].get("nodePort")
        cnode = plan.member(client_node)

        def rules_ready() -> list[natrules.Rule] | None:
            rules = natrules.service_rules(natrules.parse_save(natrules.save_nat(cnode.netns)), cluster_ip, 80)
            seps = [r for r in rules if natrules.dnat_target(r)]
            return rules if len(seps) >= 3 else None

        _wait(f"kube-proxy on {client_node} to program 3 endpoints of {cluster_ip}:80", rules_ready, 90, out)
        cnet = podnet.lookup(plan, client)

        out.write(f"\n== {REQUESTS} requests to http://{cluster_ip}:80/ (ClusterIP of {APP}) from pod {CLIENT} "
                  f"({cnet.ip} on {client_node}), one TCP connection each\n")
        replies = httpget.get_many_in_netns(cnet.netns_path, cluster_ip, 80, REQUESTS)
        answers = [r.body if r.status == 200 else None for r in replies]
        errors = {r.error for r in replies if r.error}
        s = stats.spread(answers, [p["metadata"]["name"] for p in pods])
        out.write(stats.render(s) + "\n")
        if errors:
            out.write(f"  errors: {sorted(errors)[:3]}\n")
        out.write("  kube-proxy picks a backend at random per connection (statistic --mode random), "
                  "so the counts wander around 100 instead of being exactly equal.\n")

        rules = natrules.service_rules(natrules.parse_save(natrules.save_nat(cnode.netns)),
                                       cluster_ip, 80, node_port)
        out.write(f"\n== the NAT rules of Service default/{APP} on {client_node} "
                  f"(iptables-legacy-save -c -t nat; [packets:bytes])\n")
        for r in rules:
            out.write(f"  [{r.packets}:{r.bytes}] {r.text}\n")

        if node_port:
            other = plan.member(sorted(nodes)[0])
            reply = httpget.get_many_in_netns(plan.switch_netns, other.ip, node_port, 1)[0]
            out.write(f"\n== NodePort from the underlay (switch namespace {plan.switch_netns}): "
                      f"http://{other.ip}:{node_port}/ -> {reply.body or reply.error}\n")
        if not args.down:
            _next_steps(out, plan, client_node, cnet, cluster_ip)
        ok = s.failures == 0 and all(v > 0 for v in s.counts.values())
    except (KubectlError, TimeoutError, RuntimeError, OSError) as e:
        out.write(f"\nerror: {e}\nlogs: {plan.log_dir}; status: nodeagent cluster status --name {name}; "
                  f"start afresh: nodeagent cluster down --name {name} && nodeagent demo\n")
        ok = False
    if args.down:
        out.write(f"\n== removing cluster {name!r}\n")
        lifecycle.down(name, base_dir, out=out)
    return 0 if ok else 1


def _next_steps(out: Any, plan: Any, client_node: str, cnet: Any, cluster_ip: str) -> None:
    node = plan.member(client_node)
    out.write(f"""
== the cluster keeps running; carry on by hand
  export PATH={os.path.dirname(sys.executable)}:$PATH KUBECONFIG={plan.kubeconfig}
  kubectl get nodes,pods,svc,endpointslices -o wide
  kubectl scale deployment {APP} --replicas=5
  kubectl get events --watch

  # a request hop by hop (pod eth0 -> host veth -> cni0 -> DNAT rule -> backend veth)
  nodeagent trace {APP} --from {CLIENT} --name {plan.name}
  # a shell in the client pod's network namespace, or one command in it
  nodeagent netns {CLIENT} --name {plan.name} --exec sh
  nsenter --net={cnet.netns_path} tcpdump -ni eth0 tcp port 80
  # the node {client_node}: its routes, rules and connections
  nsenter --net={node.netns_path} ip route
  nsenter --net={node.netns_path} iptables-legacy-save -t nat | grep KUBE-SVC
  nsenter --net={node.netns_path} conntrack -L -d {cluster_ip}
  nsenter --net={node.netns_path} tcpdump -ni cni0 tcp port {WEB_PORT}

  nodeagent cluster down --name {plan.name}     # removes everything
""")


def main(args: argparse.Namespace) -> int:
    return run(args)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="a 2-node cluster, a web Deployment and a Service; "
                                           "shows how 300 requests spread over its pods")
    p.add_argument("--name", default=NAME, help=f"cluster name (default {NAME})")
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--down", action="store_true", help="remove the cluster at the end")
    p.add_argument("--base-dir", default=None, help="where clusters live (default /var/lib/nodeagent/clusters)")
    p.set_defaults(func=main)
