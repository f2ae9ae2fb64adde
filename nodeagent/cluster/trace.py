"""`nodeagent trace SERVICE` and `nodeagent netns POD` on a local cluster, or on a real host that runs
`nodeagent up` (a Vagrant VM: `--kubeconfig`, or $KUBECONFIG / ~/.kube/config when no local cluster of
that name exists), where the hops are the ones this host sees: the client pod must run here.

trace sends one request from a client pod to a Service and shows where it went, hop by hop (seed
002's picture, and seed 003's `nsenter -t PID -n tcpdump`): tcpdump on the client pod's eth0, on its
host-side veth and on cni0 in the client's node, the NAT rule whose packet counter moved (the
KUBE-SVC random pick and the KUBE-SEP DNAT; in nftables mode the Service's map entry, its chain and
each endpoint's share of the chain's key range, nftpath.py), the conntrack entry, and tcpdump on the
backend's veth.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodeagent.cluster.topology import BASE_DIR, DEFAULT_NAME
from nodeagent.netns import nsenter_argv


@dataclass
class Capture:
    label: str
    netns: str
    iface: str
    proc: subprocess.Popen[str] | None = None
    lines: list[str] | None = None
    err: Any = None

    def argv(self, bpf: str) -> list[str]:
        return [*nsenter_argv(self.netns), "tcpdump", "-l", "-n", "-nn", "-q", "-i", self.iface, bpf]

    def start(self, bpf: str) -> None:
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.argv(bpf), stdout=subprocess.PIPE, stderr=self.err, text=True)

    def wait_listening(self, timeout: float = 5.0) -> None:
        """tcpdump prints "listening on IFACE" on stderr once its socket is attached."""
        assert self.proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.err.seek(0)
            if b"listening on" in self.err.read() or self.proc.poll() is not None:
                return
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            stdout, _ = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            stdout, _ = self.proc.communicate()
        self.lines = [ln for ln in stdout.splitlines() if ln.strip()]
        self.err.close()


def _pick_client(k: Any, namespace: str, selector: dict[str, str], name: str | None) -> dict[str, Any]:
    from nodeagent.cluster.kube import pod_ready
    if name:
        return k.raw(f"/api/v1/namespaces/{namespace}/pods/{name}")  # type: ignore[no-any-return]
    pods = [p for p in k.items(f"/api/v1/namespaces/{namespace}/pods") if pod_ready(p)]
    others = [p for p in pods if not all((p["metadata"].get("labels") or {}).get(a) == b
                                         for a, b in selector.items())]
    if not (others or pods):
        raise RuntimeError(f"no Running pod in namespace {namespace} to send from; give --from POD")
    return (others or pods)[0]


def trace(args: argparse.Namespace, out: Any = sys.stdout) -> int:
    from nodeagent.cluster.kube import KubectlError
    from nodeagent.cluster.podnet import PodNetError
    try:
        return _trace(args, out)
    except BrokenPipeError:  # `nodeagent trace ... | head`
        return 0
    except (KubectlError, PodNetError, RuntimeError) as e:
        out.write(f"error: {e}\n")
        return 1


def _default_kubeconfig() -> Path | None:
    for cand in (os.environ.get("KUBECONFIG", "").split(":")[0], str(Path.home() / ".kube" / "config")):
        if cand and Path(cand).is_file():
            return Path(cand)
    return None


def target(args: argparse.Namespace) -> tuple[Path, Any]:
    """(kubeconfig, nodes): a local cluster by --name, else this host as a node of a real cluster."""
    from nodeagent.cluster import lifecycle, podnet
    from nodeagent.cluster.kube import Kubectl
    kubeconfig = Path(args.kubeconfig) if args.kubeconfig else None
    if kubeconfig is None:
        state = lifecycle.ClusterState.load(args.name, Path(args.base_dir) if args.base_dir else BASE_DIR)
        if state is not None:
            return state.plan.kubeconfig, state.plan
        kubeconfig = _default_kubeconfig()
        if kubeconfig is None:
            raise RuntimeError(f"cluster {args.name!r} not found, and no kubeconfig for a real cluster "
                               "(give --kubeconfig on a host that runs `nodeagent up`)")
    name = args.node_name or socket.gethostname().split(".")[0]
    node = Kubectl(kubeconfig).raw(f"/api/v1/nodes/{name}")
    ips = [a["address"] for a in (node.get("status") or {}).get("addresses") or [] if a.get("type") == "InternalIP"]
    if not ips:
        raise RuntimeError(f"node {name} has no InternalIP address yet")
    return kubeconfig, podnet.HostNodes(name, ips[0])


def _trace(args: argparse.Namespace, out: Any) -> int:
    from nodeagent.cluster import httpget, natrules, podnet
    from nodeagent.cluster.kube import Kubectl

    kubeconfig, plan = target(args)
    k = Kubectl(kubeconfig)
    ns = args.namespace
    svc = k.raw(f"/api/v1/namespaces/{ns}/services/{args.service}")
    cluster_ip = svc["spec"].get("clusterIP")
    port_spec = svc["spec"]["ports"][0]
    port = int(port_spec["port"])
    client = podnet.lookup(plan, _pick_client(k, ns, svc["spec"].get("selector") or {}, args.from_pod))
    selector = ",".join(f"{a}={b}" for a, b in (svc["spec"].get("selector") or {}).items())
    backends = [p for p in k.items(f"/api/v1/namespaces/{ns}/pods?labelSelector={selector}")
                if (p.get("status") or {}).get("podIP")] if selector else []
    bnets: list[podnet.PodNet] = []
    for b in backends:
        try:
            bnets.append(podnet.lookup(plan, b))
        except podnet.PodNetError as e:
            out.write(f"  (backend {b['metadata']['name']}: {e})\n")

    out.write(f"trace: pod {ns}/{client.name} ({client.ip} on {client.node.name}) -> "
              f"Service {ns}/{args.service} {cluster_ip}:{port}\n\n")
    caps = [Capture(f"1. client pod {client.name} eth0", client.netns_path, "eth0")]
    if client.host_veth:
        caps.append(Capture(f"2. its host-side veth {client.host_veth} on {client.node.name}",
                            client.node.netns_path, client.host_veth))
    caps.append(Capture(f"4. bridge cni0 on {client.node.name} (after DNAT)", client.node.netns_path, "cni0"))
    underlay = podnet.underlay_iface(client.node)
    caps.append(Capture(f"5. underlay {underlay} of {client.node.name} (host-gw to the backend's node)",
                        client.node.netns_path, underlay))
    for bn in bnets:
        if bn.host_veth:
            caps.append(Capture(f"6. backend {bn.name} ({bn.ip}) veth {bn.host_veth} on {bn.node.name}",
                                bn.node.netns_path, bn.host_veth))
    bpf = f"tcp and host {client.ip}"
    def nat() -> list[natrules.Rule]:
        return natrules.service_rules(natrules.parse_save(natrules.save_nat(client.node.netns)), cluster_ip, port)

    # kube-proxy's restores zero the counters of the chains they rewrite; a sync that lands between
    # the two reads hides our packet, so read right around the request and retry if nothing moved
    for attempt in range(3):
        for c in caps:
            c.start(bpf)
        try:
            for c in caps:
                c.wait_listening()
            before = nat()
            reply = httpget.get_many_in_netns(client.netns_path, cluster_ip, port, 1)[0]
            after = nat()
            time.sleep(0.3)
        finally:
            for c in caps:
                c.stop()
        if natrules.changed(before, after) or not before or reply.status != 200 or attempt == 2:
            break  # (no KUBE-* rules for it: the node runs nftables mode, nothing to retry for)
    ct_filter = ["--sport", str(reply.local_port)] if reply.local_port else []
    conntrack = subprocess.run([*nsenter_argv(client.node.netns_path), "conntrack", "-L", "-p", "tcp",
                                "-s", client.ip, "-d", cluster_ip, *ct_filter],
                               capture_output=True, text=True).stdout

    out.write(f"reply: {reply.status} {reply.body[:60]!r}{' ' + reply.error if reply.error else ''}\n\n")
    for c in caps:
        if c.label.startswith(("5.", "6.")) and not c.lines:
            continue  # the backend was local, or not this one
        if c.label.startswith("4."):
            if before or after:
                _write_nat(out, client.node.name, before, after)
            else:
                _write_nft(out, client.node.name, client.node.netns_path, cluster_ip, port_spec)
        out.write(f"{c.label}\n   $ {shlex.join(c.argv(bpf))}\n")
        for line in (c.lines or ["(no packets)"])[:4]:
            out.write(f"     {line}\n")
        out.write("\n")
    out.write(f"7. conntrack on {client.node.name}: the original direction and the DNATed reply direction\n"
              f"   $ {shlex.join([*nsenter_argv(client.node.netns_path), 'conntrack', '-L', '-s', client.ip, *ct_filter])}\n")
    for line in conntrack.splitlines()[:3] or ["(none)"]:
        out.write(f"     {line}\n")
    return 0 if reply.status == 200 else 1


def _write_nat(out: Any, node: str, before: list[Any], after: list[Any]) -> None:
    from nodeagent.cluster import natrules
    out.write(f"3. NAT rules on {node} whose packet counter moved (iptables-legacy-save -c -t nat), "
              "in the order the packet met them:\n")
    moved = natrules.changed(before, after)
    for r, _grew in moved:
        old = next((b.packets for b in before if b.text == r.text), 0)
        dest = natrules.dnat_target(r)
        out.write(f"     [{old} -> {r.packets}] {r.text}{'   <== DNAT to ' + dest if dest else ''}\n")
    if not moved:
        out.write("     (none moved: is the Service's chain programmed on this node?)\n")
    out.write("\n")


def _write_nft(out: Any, node: str, netns: str, cluster_ip: str, port_spec: dict[str, Any]) -> None:
    from nodeagent.cluster import nftpath
    proto = (port_spec.get("protocol") or "TCP").lower()
    path = nftpath.service_path(netns, cluster_ip, proto, int(port_spec["port"]))
    if path is None:
        out.write(f"3. no KUBE-* iptables rules and no nftables entry for {cluster_ip} on {node}: "
                  "is the Service programmed on this node?\n\n")
        return
    out.write(f"3. nftables on {node} (the proxy's nftables mode; `nft list table ip kube-proxy`):\n"
              f"     services: ip daddr . meta l4proto . th dport vmap @service-ips -> {path.entry}\n")
    for rule in path.rules:
        out.write(f"     {path.chain}: {rule}\n")
    for lo, hi, target in path.shares:
        out.write(f"     key {lo}-{hi} ({(hi - lo + 1) / path.span:.1%} of draws) -> DNAT to {target.replace(' . ', ':')}\n")
    out.write("     (nftables keeps no per-endpoint counters: the endpoint this packet got is in conntrack, 7.)\n\n")


def netns_main(args: argparse.Namespace, out: Any = sys.stdout) -> int:
    from nodeagent.cluster import podnet
    from nodeagent.cluster.kube import Kubectl, KubectlError
    try:
        kubeconfig, plan = target(args)
        pod = Kubectl(kubeconfig).raw(f"/api/v1/namespaces/{args.namespace}/pods/{args.pod}")
        net = podnet.lookup(plan, pod)
    except (KubectlError, podnet.PodNetError, RuntimeError) as e:
        out.write(f"error: {e}\n")
        return 1
    if args.exec is None:
        out.write(f"pod {net.namespace}/{net.name} ip={net.ip} node={net.node.name} pid={net.pid}\n"
                  f"netns {net.netns_path}\n"
                  f"host veth {net.host_veth or '-'} in {net.node.netns_path}\n"
                  f"enter: nsenter --net={net.netns_path} sh\n")
        return 0
    cmd = args.exec if args.exec else [os.environ.get("SHELL", "/bin/sh")]
    return subprocess.call([*nsenter_argv(net.netns_path), *cmd])


def _add_host_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", default=None, help="a real cluster: this host runs `nodeagent up` and the "
                   "client pod (default when no local cluster --name exists: $KUBECONFIG, ~/.kube/config)")
    p.add_argument("--node-name", default=None, help="this host's node name on a real cluster (default: the "
                   "host name, as `nodeagent up`)")


def register(subparsers: Any) -> None:
    t = subparsers.add_parser("trace", help="follow one request to a Service hop by hop (local cluster, or this host)")
    t.add_argument("service")
    t.add_argument("--from", dest="from_pod", default=None, help="client pod (default: any Running pod "
                   "that is not a backend)")
    t.add_argument("-n", "--namespace", default="default")
    t.add_argument("--name", default=DEFAULT_NAME, help=f"cluster name (default {DEFAULT_NAME})")
    t.add_argument("--base-dir", default=None, help="where clusters live (default /var/lib/nodeagent/clusters)")
    _add_host_flags(t)
    t.set_defaults(func=trace)

    n = subparsers.add_parser("netns", help="print a pod's network namespace, or run a command in it")
    n.add_argument("pod")
    n.add_argument("-n", "--namespace", default="default")
    n.add_argument("--name", default=DEFAULT_NAME, help=f"cluster name (default {DEFAULT_NAME})")
    n.add_argument("--base-dir", default=None, help="where clusters live (default /var/lib/nodeagent/clusters)")
    _add_host_flags(n)
    n.add_argument("--exec", nargs=argparse.REMAINDER, default=None,
                   help="command to run in the pod's netns (no command: a shell)")
    n.set_defaults(func=netns_main)
