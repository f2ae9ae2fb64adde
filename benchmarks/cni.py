"""CNI ADD/DEL latency: nodeagent-bridge (exec'd shim + CNI daemon) beside the reference Go
/usr/lib/cni/bridge + host-local, on the same network config, in the same run.

Each plugin gets its own "node" network namespace and N pod namespaces. The timing loop runs
inside the node's namespace (this script re-executes itself under `nsenter --net`), so what is
measured is exactly containerd's view: exec the plugin with CNI_* env and the config on stdin,
wait for it to exit. Calls alternate between the two plugins pod by pod (one worker per node
namespace, driven in lock step), first all VERSIONs, then the ADDs, then the DELs. The
config is the same for both (bridge, isGateway, isDefaultGateway, hairpinMode, host-local over a
/24; ipMasq off, since the reference adds a per-container iptables chain and that would flatter us).

    sudo .venv/bin/python benchmarks/cni.py [--pods 50]

Last line: one JSON object with the figures (milliseconds; ratio = ours / reference, <= 1.0 wins).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodeagent.cni import install  # noqa: E402
from nodeagent.netns import nsenter_argv  # noqa: E402

REF_BIN = "/usr/lib/cni"


def conf(name: str, plugin_type: str, data_dir: str, bridge: str) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0", "name": name, "type": plugin_type, "bridge": bridge,
        "isGateway": True, "isDefaultGateway": True, "ipMasq": False, "hairpinMode": True,
        "daemonSocket": os.path.join(data_dir, "daemon.sock"),
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.250.0.0/24"}]],
                 "dataDir": os.path.join(data_dir, "ipam")},
    }


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def inner(spec_path: str, which: str) -> int:
    """Runs inside one node's namespace: for each "COMMAND index" line on stdin, exec the plugin
    once and answer with the wall time in ms (or "ERR ..."). The parent alternates between the two
    plugins' workers call by call, so both see the same machine load."""
    spec = json.loads(Path(spec_path).read_text())
    p = spec[which]
    stdin = json.dumps(p["conf"]).encode()
    for line in sys.stdin:
        command, index = line.split()
        i = int(index)
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": f"bench-{i}", "CNI_IFNAME": "eth0",
               "CNI_NETNS": f"/var/run/netns/{p['pods'][i]}", "CNI_PATH": p["cni_path"],
               "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        t0 = time.perf_counter()
        r = subprocess.run([p["plugin"]], input=stdin, env=env, capture_output=True)
        dt = (time.perf_counter() - t0) * 1000
        if r.returncode != 0:
            print(f"ERR {which} {command} bench-{i}: {r.stdout!r} {r.stderr!r}", flush=True)
        else:
            print(f"{dt:.4f}", flush=True)
    return 0


def ns_add(name: str) -> None:
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=50)
    ap.add_argument("--inner", help=argparse.SUPPRESS)
    ap.add_argument("--which", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        return inner(args.inner, args.which)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    tag = secrets.token_hex(3)
    tmp = tempfile.mkdtemp(prefix="na-cni-bench-")
    made: list[str] = []
    daemon = None
    try:
        nodes = {"ours": f"na-bn-o-{tag}", "reference": f"na-bn-r-{tag}"}
        for n in nodes.values():
            ns_add(n)
            made.append(n)
        spec: dict[str, Any] = {"pods": args.pods}
        for which, node in nodes.items():
            d = os.path.join(tmp, which)
            os.makedirs(d)
            pods = []
            for i in range(args.pods):
                pods.append(f"na-bp-{which[0]}{i}-{tag}")
                ns_add(pods[-1])
                made.append(pods[-1])
            if which == "ours":
                bin_dir = os.path.join(d, "bin")
                plugin = install.install(bin_dir)
                c = conf("bench", "nodeagent-bridge", d, "cni0")
                cni_path = bin_dir
            else:
                plugin = os.path.join(REF_BIN, "bridge")
                c = conf("bench", "bridge", d, "cni0")
                cni_path = REF_BIN
            spec[which] = {"node": node, "pods": pods, "plugin": plugin, "conf": c, "cni_path": cni_path}
        log = open(os.path.join(tmp, "daemon.log"), "wb")
        daemon = subprocess.Popen(nsenter_argv(nodes["ours"]) + [
            sys.executable, "-m", "nodeagent", "cni-daemon", "--node-name", "bench", "--data-dir",
            os.path.join(tmp, "ours", "node"), "--socket", spec["ours"]["conf"]["daemonSocket"]],
            stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while not os.path.exists(spec["ours"]["conf"]["daemonSocket"]):
            if daemon.poll() is not None or time.monotonic() > deadline:
                print("cni daemon did not start", file=sys.stderr)
                return 1
            time.sleep(0.05)
        spec_path = os.path.join(tmp, "spec.json")
        Path(spec_path).write_text(json.dumps(spec))
        workers = {which: subprocess.Popen(nsenter_argv(node) + [sys.executable, __file__, "--inner", spec_path,
                                                                 "--which", which],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                   for which, node in nodes.items()}
        results: dict[str, dict[str, list[float]]] = {w: {"ADD": [], "DEL": [], "VERSION": []} for w in workers}
        try:
            for command in ("VERSION", "ADD", "DEL"):
                for i in range(args.pods):
                    # alternate which plugin goes first, so neither always follows the other
                    order = ("ours", "reference") if i % 2 == 0 else ("reference", "ours")
                    for which in order:
                        w = workers[which]
                        assert w.stdin is not None and w.stdout is not None
                        w.stdin.write(f"{command} {i}\n")
                        w.stdin.flush()
                        answer = w.stdout.readline().strip()
                        if not answer or answer.startswith("ERR"):
                            print(answer or f"{which} worker died", file=sys.stderr)
                            return 1
                        results[which][command].append(float(answer))
        finally:
            for w in workers.values():
                if w.stdin:
                    w.stdin.close()
                w.wait(30)
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(10)
        for n in reversed(made):
            subprocess.run(["ip", "netns", "delete", n], capture_output=True)
        if os.environ.get("NODEAGENT_BENCH_KEEP_LOG"):
            shutil.copy(os.path.join(tmp, "daemon.log"), "/tmp/na-cni-bench-daemon.log")
        shutil.rmtree(tmp, ignore_errors=True)

    figures: dict[str, Any] = {"pods": args.pods}
    print(f"{'':10} {'ADD p50':>9} {'ADD p99':>9} {'DEL p50':>9} {'DEL p99':>9} {'VERSION p50':>12}   (ms, {args.pods} pods)")
    for which in ("ours", "reference"):
        t = results[which]
        f = {"add_p50": pct(t["ADD"], 50), "add_p99": pct(t["ADD"], 99), "del_p50": pct(t["DEL"], 50),
             "del_p99": pct(t["DEL"], 99), "version_p50": pct(t["VERSION"], 50),
             "add_mean": statistics.mean(t["ADD"]), "del_mean": statistics.mean(t["DEL"])}
        figures[which] = {k: round(v, 2) for k, v in f.items()}
        label = "nodeagent" if which == "ours" else "reference"
        print(f"{label:10} {f['add_p50']:9.2f} {f['add_p99']:9.2f} {f['del_p50']:9.2f} {f['del_p99']:9.2f} {f['version_p50']:12.2f}")
    for k in ("add_p50", "add_p99", "del_p50", "del_p99"):
        figures[f"ratio_{k}"] = round(figures["ours"][k] / figures["reference"][k], 3)
    print(f"ratio ours/reference: ADD p50 {figures['ratio_add_p50']}  ADD p99 {figures['ratio_add_p99']}  "
          f"DEL p50 {figures['ratio_del_p50']}  DEL p99 {figures['ratio_del_p99']}  (target <= 1.0)")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
