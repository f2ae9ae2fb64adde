"""Cluster DNS throughput and latency: `nodeagent dns` beside dnsmasq, serving the same names.

Both servers run in one "server" network namespace (ours on 10.53.0.1:53 watching a real apiserver
through a relay; dnsmasq on 10.53.0.3:53 with the same names as --host-record and the cluster domain
as --local, so it answers NXDOMAIN for the rest itself), both free to use every core (or pinned to the
same --cpus). A load generator in a second namespace keeps a fixed number of UDP queries in flight
for a fixed time against each, with the same query mix: mostly Service names, some search-path
expansions of an outside name (NXDOMAIN). Rounds alternate ours and dnsmasq, so load from other work
on the machine falls on both; the table shows every round and the medians.

The client is dnsperf (Debian's dnsperf, in C; its per-query latencies from -v give p50/p99) when it
is installed, else a Python load generator, which saturates before either server does.

    sudo .venv/bin/python benchmarks/dns.py [--services 50] [--seconds 5] [--window 32] [--rounds 3]
        [--client dnsperf|python] [--workers N] [--cpus 0,1] [--from-pod]

Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dnslib import DNSRecord  # noqa: E402

from nodeagent.client import Client, ClientConfig  # noqa: E402
from nodeagent.machinery.kinds import SERVICES  # noqa: E402
from nodeagent.netns import netns_path, nsenter_argv, run_in_netns  # noqa: E402
from tests.helpers.apiserver import start_apiserver  # noqa: E402
from tests.helpers.dns_client import query_sync  # noqa: E402
from tests.helpers.dns_relay import (  # noqa: E402
    NetnsRelay,
    add_veth,
    kubeconfig_via,
    nodeagent_argv,
    start_in_netns,
    stop_process,
    wait_for,
)
from tests.helpers.netns import delete_netns, make_netns  # noqa: E402

D = "cluster.local"
OURS, PEER, CLIENT = "10.53.0.1", "10.53.0.3", "10.53.0.2"


def query_names(n_services: int, count: int = 1000, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        if i % 5 == 4:  # ndots:5 search expansions of www.example.com: NXDOMAIN
            out.append(rng.choice([f"www.example.com.default.svc.{D}", f"www.example.com.svc.{D}",
                                   f"www.example.com.{D}"]))
        else:
            out.append(f"svc-{rng.randrange(n_services)}.default.svc.{D}")
    return out


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return -1.0
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


def load(server: str, queries: list[bytes], seconds: float, window: int, port: int = 53) -> dict[str, Any]:
    """Keep `window` queries in flight for `seconds`; latency per answered query (runs in the client ns)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((server, port))
    s.setblocking(False)
    inflight: dict[int, int] = {}
    latencies: list[int] = []
    lost = 0
    qid = 0
    i = 0
    start = time.perf_counter_ns()
    end = start + int(seconds * 1e9)
    while True:
        now = time.perf_counter_ns()
        if now >= end:
            break
        while len(inflight) < window:
            qid = (qid + 1) & 0xFFFF
            if qid in inflight:
                continue
            q = queries[i % len(queries)]
            i += 1
            try:
                s.send(qid.to_bytes(2, "big") + q[2:])
            except BlockingIOError:
                break
            inflight[qid] = time.perf_counter_ns()
        ready, _, _ = select.select([s], [], [], 0.5)
        if not ready:
            # nothing came back for 0.5 s: count the oldest queries as lost and move on
            cutoff = time.perf_counter_ns() - 500_000_000
            for k in [k for k, t in inflight.items() if t < cutoff]:
                del inflight[k]
                lost += 1
            continue
        while True:
            try:
                data = s.recv(4096)
            except BlockingIOError:
                break
            t = inflight.pop(int.from_bytes(data[:2], "big"), None)
            if t is not None:
                latencies.append(time.perf_counter_ns() - t)
    elapsed = (time.perf_counter_ns() - start) / 1e9
    s.close()
    ms = sorted(v / 1e6 for v in latencies)
    return {"qps": round(len(ms) / elapsed), "p50_ms": round(percentile(ms, 0.50), 3),
            "p99_ms": round(percentile(ms, 0.99), 3), "answered": len(ms), "lost": lost}


def dnsperf_load(netns: str, server: str, datafile: Path, seconds: float, window: int,
                 port: int = 53) -> dict[str, Any]:
    """dnsperf from `netns` (a name or a path): `window` queries in flight (-q), one socket, for
    `seconds`; q/s and lost from its summary, p50/p99 from its per-query lines (-v: "> RCODE name type
    seconds")."""
    argv = [*nsenter_argv(netns_path(netns)), "dnsperf", "-s", server, "-p", str(port), "-d", str(datafile),
            "-l", str(seconds), "-q", str(window), "-t", "1", "-v"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    latencies: list[float] = []
    summary: dict[str, str] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("> "):
            latencies.append(float(line.rsplit(" ", 1)[1]) * 1000)
        elif ":" in line:
            k, _, v = line.strip().partition(":")
            summary[k] = v.strip()
    err = proc.stderr.read() if proc.stderr else ""
    if proc.wait() != 0 or "Queries per second" not in summary:
        raise RuntimeError(f"dnsperf failed rc={proc.returncode}: {err[-2000:]}")
    latencies.sort()
    return {"qps": round(float(summary["Queries per second"])), "p50_ms": round(percentile(latencies, 0.50), 3),
            "p99_ms": round(percentile(latencies, 0.99), 3), "answered": len(latencies),
            "lost": int(summary.get("Queries lost", "0").split()[0])}


class LoadClient:
    """One of the two load generators, run from a client namespace against a server."""

    def __init__(self, kind: str, names: list[str], work: Path) -> None:
        self.kind = kind
        self.queries = [DNSRecord.question(n, "A").pack() for n in names]
        self.datafile = work / "queries.txt"
        self.datafile.write_text("".join(f"{n} A\n" for n in names))

    @property
    def label(self) -> str:
        if self.kind == "dnsperf":
            out = subprocess.run(["dnsperf", "-h"], capture_output=True, text=True)
            version = next((ln.split()[-1] for ln in (out.stdout + out.stderr).splitlines()
                            if ln.startswith("Version")), "?")
            return f"dnsperf {version} (C)"
        return "Python load generator (select loop)"

    def run(self, netns: str, server: str, seconds: float, window: int, port: int = 53) -> dict[str, Any]:
        if self.kind == "dnsperf":
            return dnsperf_load(netns, server, self.datafile, seconds, window, port)
        return run_in_netns(netns, load, server, self.queries, seconds, window, port)


def pinned(argv: list[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else argv




POD = """\
apiVersion: v1
kind: Pod
metadata: {name: dns-bench}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: nodeagent.local/toolbox:1, command: ["sleep", "100000"]}]
"""


def from_pod(args: argparse.Namespace, client: LoadClient) -> dict[str, Any]:
    """The same load from a pod: ours at 10.96.0.10 (proxy DNAT to the cp), dnsmasq on the cp's
    underlay address port 5353 serving the same names."""
    from tests.helpers.cluster_e2e import local_cluster

    with local_cluster("dnsb", nodes=1) as cluster:
        ips = asyncio.run(create_services(cluster.plan.kubeconfig, args.services))
        cluster.kubectl.apply(POD)
        (pod,) = cluster.wait_ready_pods("", 1, 180)
        net = cluster.pod_net(pod).netns_path
        cp = cluster.plan.control_plane
        peer_log = cluster.base_dir / cluster.name / "logs" / "dnsmasq-bench.log"
        peer = start_in_netns(cp.netns, [
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            f"--listen-address={cp.ip}", "--bind-interfaces", "--port=5353", f"--local=/{D}/",
            "--pid-file=", "--user=root", *[f"--host-record={n},{ip}" for n, ip in ips.items()]], peer_log)
        try:
            probe = f"svc-0.default.svc.{D}"
            for server, port in (("10.96.0.10", 53), (cp.ip, 5353)):
                wait_for(lambda s=server, p=port: [str(r.rdata) for r in run_in_netns(
                    net, query_sync, s, p, probe, "A", False, None, 1.0).rr] == [ips[probe]],
                    f"{server}:{port} answers {probe} from the pod", timeout=60)
            res: dict[str, Any] = {}
            for label, server, port in (("nodeagent", "10.96.0.10", 53), ("dnsmasq", cp.ip, 5353)):
                client.run(net, server, 0.5, args.window, port)
                res[label] = r = client.run(net, server, args.seconds, args.window, port)
                print(f"pod->{label:10s} {r['qps']:>8d} q/s  p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
                      f"lost {r['lost']}", flush=True)
        finally:
            stop_process(peer)
    return {"pod_nodeagent_qps": res["nodeagent"]["qps"], "pod_nodeagent_p99_ms": res["nodeagent"]["p99_ms"],
            "pod_dnsmasq_qps": res["dnsmasq"]["qps"], "pod_dnsmasq_p99_ms": res["dnsmasq"]["p99_ms"]}


async def create_services(kubeconfig: Path, n: int, prefix: str = "svc") -> dict[str, str]:
    ips: dict[str, str] = {}
    async with Client(ClientConfig.from_kubeconfig(kubeconfig)) as c:
        for i in range(n):
            svc = await c.create(SERVICES, {"apiVersion": "v1", "kind": "Service",
                                            "metadata": {"name": f"{prefix}-{i}", "namespace": "default"},
                                            "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
            ips[f"{prefix}-{i}.default.svc.{D}"] = svc["spec"]["clusterIP"]
    return ips


class Churn:
    """Watch events for ours while it is measured: `rate` updates a second of Services outside the
    query mix (churn-0..9, an annotation each time), from a thread of this process."""

    COUNT = 10

    def __init__(self, kubeconfig: Path, rate: float) -> None:
        self.kubeconfig = kubeconfig
        self.rate = rate
        self.updates = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Churn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    async def _run(self) -> None:
        async with Client(ClientConfig.from_kubeconfig(self.kubeconfig)) as c:
            due = time.monotonic()
            while not self._stop.is_set():
                patch = {"metadata": {"annotations": {"bench/churn": str(self.updates)}}}
                await c.patch(SERVICES, f"churn-{self.updates % self.COUNT}", patch, namespace="default")
                self.updates += 1
                due += 1 / self.rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))


async def _create_delete(kubeconfig: Path, name: str, delete: bool) -> None:
    async with Client(ClientConfig.from_kubeconfig(kubeconfig)) as c:
        if delete:
            await c.delete(SERVICES, name, namespace="default")
        else:
            await c.create(SERVICES, {"apiVersion": "v1", "kind": "Service",
                                      "metadata": {"name": name, "namespace": "default"},
                                      "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})


def delete_to_nxdomain(kubeconfig: Path, client_ns: str, server: str, rounds: int = 5) -> list[float]:
    """ms from the DELETE call's return until the server answers NXDOMAIN for the Service (polled
    every millisecond from the client namespace)."""
    out = []
    for i in range(rounds):
        name = f"gone-{i}"
        fqdn = f"{name}.default.svc.{D}"
        asyncio.run(_create_delete(kubeconfig, name, delete=False))
        wait_for(lambda f=fqdn: bool(run_in_netns(client_ns, query_sync, server, 53, f, "A", False, None, 1.0).rr),
                 f"{fqdn} resolves", timeout=30)
        asyncio.run(_create_delete(kubeconfig, name, delete=True))
        out.append(run_in_netns(client_ns, _poll_nxdomain, server, fqdn))
    return out


def _poll_nxdomain(server: str, fqdn: str, timeout: float = 10.0) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        r = query_sync(server, 53, fqdn, "A", False, None, 1.0)
        if r.header.rcode == 3:  # NXDOMAIN
            return round((time.perf_counter() - t0) * 1000, 1)
        time.sleep(0.001)
    return -1.0


def print_table(rounds: list[dict[str, dict[str, Any]]]) -> None:
    print(f"{'round':>5s}  {'nodeagent q/s':>13s} {'p50 ms':>7s} {'p99 ms':>7s} {'lost':>5s}   "
          f"{'dnsmasq q/s':>11s} {'p50 ms':>7s} {'p99 ms':>7s} {'lost':>5s}")
    for i, r in enumerate(rounds, 1):
        a, b = r["nodeagent"], r["dnsmasq"]
        print(f"{i:>5d}  {a['qps']:>13d} {a['p50_ms']:>7.3f} {a['p99_ms']:>7.3f} {a['lost']:>5d}   "
              f"{b['qps']:>11d} {b['p50_ms']:>7.3f} {b['p99_ms']:>7.3f} {b['lost']:>5d}", flush=True)


def median_of(rounds: list[dict[str, dict[str, Any]]], server: str, key: str) -> float:
    return float(statistics.median(r[server][key] for r in rounds))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=5.0, help="length of one measured run")
    ap.add_argument("--window", type=int, default=32, help="queries in flight")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, each measuring ours then dnsmasq")
    ap.add_argument("--client", choices=["dnsperf", "python"], default=None,
                    help="load generator (default: dnsperf when installed, else python)")
    ap.add_argument("--workers", type=int, default=None, help="`nodeagent dns --workers` (default: its own)")
    ap.add_argument("--churn", type=float, default=0.0, metavar="RATE",
                    help="also measure ours while RATE Service updates a second (outside the mix) reach its watch")
    ap.add_argument("--cpus", default=None, help="pin both servers to these CPUs (taskset -c), e.g. 1")
    ap.add_argument("--from-pod", action="store_true",
                    help="also measure from a pod of a fresh 1-node local cluster (`nodeagent cluster up`): "
                         "ours through the kube-dns ClusterIP, dnsmasq in the control-plane namespace")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    kind = args.client or ("dnsperf" if shutil.which("dnsperf") else "python")
    if kind == "dnsperf" and not shutil.which("dnsperf"):
        print("--client dnsperf: dnsperf is not installed (apt-get install dnsperf; scripts/setup.sh does)",
              file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    tag = secrets.token_hex(3)
    server_ns, client_ns = f"na-bdnss-{tag}", f"na-bdnsc-{tag}"
    procs: list[subprocess.Popen[bytes]] = []
    relay: NetnsRelay | None = None
    with tempfile.TemporaryDirectory(prefix="dns-bench-") as tmp:
        work = Path(tmp)
        client = LoadClient(kind, query_names(args.services), work)
        print(f"client: {client.label}, {args.window} in flight, {args.seconds:g} s a run, {args.rounds} rounds; "
              f"mix: {len(client.queries)} queries, 80% Service A, 20% search-path NXDOMAIN; "
              f"servers on cpus {args.cpus or 'all'}; load average {load_before[0]:.2f}", flush=True)
        pod_figures: dict[str, Any] = from_pod(args, client) if args.from_pod else {}
        api = start_apiserver(work)
        try:
            make_netns(server_ns)
            make_netns(client_ns)
            add_veth(server_ns, client_ns, OURS, CLIENT)
            subprocess.run(["ip", "-n", server_ns, "addr", "add", f"{PEER}/24", "dev", "veth-a"], check=True)
            ips = asyncio.run(create_services(api.kubeconfig, args.services))
            if args.churn:
                asyncio.run(create_services(api.kubeconfig, Churn.COUNT, prefix="churn"))
            relay = NetnsRelay(server_ns, ("127.0.0.1", api.port))
            kc = kubeconfig_via(api.kubeconfig, relay.port, work / "kubeconfig-dns")
            ours_log = work / "dns.log"
            workers = ["--workers", str(args.workers)] if args.workers is not None else []
            ours = start_in_netns(server_ns, pinned(nodeagent_argv(
                "dns", "--kubeconfig", str(kc), "--bind", OURS, "--port", "53", "--no-register",
                "--metrics-port", "0", *workers), args.cpus), ours_log)
            procs.append(ours)
            hosts = [f"--host-record={name},{ip}" for name, ip in ips.items()]
            peer_log = work / "dnsmasq.log"
            procs.append(start_in_netns(server_ns, pinned([
                "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                f"--listen-address={PEER}", "--bind-interfaces", "--port=53", f"--local=/{D}/",
                "--pid-file=", "--user=root", *hosts], args.cpus), peer_log))
            probe = f"svc-0.default.svc.{D}"
            for server, proc, log in ((OURS, ours, ours_log), (PEER, procs[-1], peer_log)):
                wait_for(lambda s=server: [str(r.rdata) for r in run_in_netns(
                    client_ns, query_sync, s, 53, probe, "A", False, None, 1.0).rr] == [ips[probe]],
                    f"{server} answers {probe}", timeout=30, proc=proc, log=log)
            rounds: list[dict[str, dict[str, Any]]] = []
            for _ in range(args.rounds):
                r: dict[str, dict[str, Any]] = {}
                for label, server in (("nodeagent", OURS), ("dnsmasq", PEER)):
                    client.run(client_ns, server, 0.5, args.window)  # warm up (our answer cache too)
                    r[label] = client.run(client_ns, server, args.seconds, args.window)
                if args.churn:
                    with Churn(api.kubeconfig, args.churn) as churn:
                        r["nodeagent_churn"] = client.run(client_ns, OURS, args.seconds, args.window)
                    r["nodeagent_churn"]["updates_per_s"] = round(churn.updates / args.seconds)
                rounds.append(r)
            print_table(rounds)
            if args.churn:
                for i, r in enumerate(rounds, 1):
                    c = r["nodeagent_churn"]
                    print(f"round {i}: nodeagent with {c['updates_per_s']} Service updates/s: {c['qps']} q/s  "
                          f"p50 {c['p50_ms']:.3f} ms  p99 {c['p99_ms']:.3f} ms  lost {c['lost']}", flush=True)
            gone = delete_to_nxdomain(api.kubeconfig, client_ns, OURS)
            print(f"delete -> NXDOMAIN ms: {gone}", flush=True)
        finally:
            for p in reversed(procs):
                stop_process(p)
            if relay is not None:
                relay.close()
            for ns in (client_ns, server_ns):
                delete_netns(ns)
            api.stop()
    servers = ("nodeagent", "dnsmasq", *(("nodeagent_churn",) if args.churn else ()))
    fig = {f"{srv}_{k}": median_of(rounds, srv, k) for srv in servers for k in ("qps", "p50_ms", "p99_ms")}
    qps_ratio = fig["nodeagent_qps"] / fig["dnsmasq_qps"]
    p99_ratio = fig["nodeagent_p99_ms"] / fig["dnsmasq_p99_ms"]
    print(f"median of {args.rounds}: nodeagent {fig['nodeagent_qps']:.0f} q/s p99 {fig['nodeagent_p99_ms']:.3f} ms, "
          f"dnsmasq {fig['dnsmasq_qps']:.0f} q/s p99 {fig['dnsmasq_p99_ms']:.3f} ms: "
          f"q/s x{qps_ratio:.2f} (target >= 1.0), p99 x{p99_ratio:.2f} (target <= 1.5); "
          f"load average {load_before[0]:.2f} -> {os.getloadavg()[0]:.2f}", flush=True)
    print(json.dumps({
        "benchmark": "dns", "services": args.services, "seconds": args.seconds, "window": args.window,
        "rounds": args.rounds, "client": client.label, "cpus": args.cpus or "all", "workers": args.workers,
        "churn_per_s": args.churn,
        **fig, "qps_ratio": round(qps_ratio, 3), "p99_ratio": round(p99_ratio, 3),
        "nodeagent_qps_rounds": [r["nodeagent"]["qps"] for r in rounds],
        "dnsmasq_qps_rounds": [r["dnsmasq"]["qps"] for r in rounds],
        "nodeagent_p99_ms_rounds": [r["nodeagent"]["p99_ms"] for r in rounds],
        "dnsmasq_p99_ms_rounds": [r["dnsmasq"]["p99_ms"] for r in rounds],
        "delete_to_nxdomain_ms_median": sorted(gone)[len(gone) // 2],
        "load_average_1m": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        **pod_figures,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
