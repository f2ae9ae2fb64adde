"""What the host's path into a local cluster costs: the loopback forwarder vs a direct connection.

kubectl on the host reaches a local cluster's apiserver through `nodeagent cluster forward`
(nodeagent/cluster/forwarder.py), because the root namespace has no link to the cluster. This
measures, in the same run, a TCP connect + 1 request/response round trip to a server in the cluster's
control-plane namespace (1) through the forwarder from the host and (2) directly from inside the
namespace (the peer: what a process in the cluster pays). Root only. The last line is JSON.

    .venv/bin/python benchmarks/cluster_forwarder.py [ROUNDS]
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from nodeagent.cluster import lifecycle, procs, underlay
from nodeagent.cluster.forwarder import free_loopback_port
from nodeagent.cluster.topology import CONTROL_PLANE_IP, ClusterPlan
from nodeagent.netns import nsenter_argv, run_in_netns

SERVER = f"""
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{CONTROL_PLANE_IP}", 6443)); s.listen(128)
def serve(c):
    with c:
        while data := c.recv(4096):
            c.sendall(data)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def round_trip(addr: tuple[str, int]) -> float:
    t0 = time.perf_counter()
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(b"x" * 512)
        got = 0
        while got < 512:
            got += len(s.recv(4096))
    return (time.perf_counter() - t0) * 1000


def measure(addr: tuple[str, int], rounds: int) -> list[float]:
    return [round_trip(addr) for _ in range(rounds)]


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    base = Path(tempfile.mkdtemp(prefix="na-bench-"))
    plan = ClusterPlan(f"b{secrets.token_hex(3)}", 1, base)
    port = free_loopback_port()
    try:
        underlay.create(plan)
        procs.spawn([*nsenter_argv(plan.control_plane.netns), sys.executable, "-c", SERVER],
                    plan.log_dir / "cp-apiserver.log", plan.run_dir / "cp-apiserver.pid")
        _, fwd = lifecycle.forwarder_component(plan, port)
        procs.spawn(fwd, plan.log_dir / "host-forwarder.log", plan.run_dir / "host-forwarder.pid")
        deadline = time.monotonic() + 15
        while True:
            try:
                round_trip(("127.0.0.1", port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        measure(("127.0.0.1", port), 20)  # warm up both paths
        forwarded = measure(("127.0.0.1", port), rounds)
        direct = run_in_netns(plan.control_plane.netns, measure, (CONTROL_PLANE_IP, 6443), rounds)
    finally:
        lifecycle.down(plan.name, base, out=open("/dev/null", "w"))  # noqa: SIM115
        shutil.rmtree(base, ignore_errors=True)
    fwd_med, dir_med = statistics.median(forwarded), statistics.median(direct)
    print(f"connect + 512 B echo, median of {rounds}: via forwarder {fwd_med:.3f} ms, "
          f"direct in the namespace (peer) {dir_med:.3f} ms, overhead {fwd_med - dir_med:.3f} ms")
    print(json.dumps({"benchmark": "cluster_forwarder", "rounds": rounds,
                      "forwarder_median_ms": round(fwd_med, 3), "direct_median_ms": round(dir_med, 3),
                      "forwarder_p90_ms": round(statistics.quantiles(forwarded, n=10)[-1], 3),
                      "direct_p90_ms": round(statistics.quantiles(direct, n=10)[-1], 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
