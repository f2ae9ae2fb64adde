"""CRI latency through nodeagent's runtime layer, beside containerd's own client in the same run.

A managed containerd runs in a fresh network namespace with the reference CNI bridge plugin. For N
pods (default 20), one after another, we time through nodeagent.runtime.cri.RuntimeClient:
  - RunPodSandbox (pause container + CNI ADD on the bridge), and
  - CreateContainer + StartContainer of a toolbox container (`sleep 3600`) in it.
The peer is containerd's own Go client on the same daemon and image: `ctr run -d` (create and start
a task, no CRI, no sandbox; it also pays ctr's process start-up), in its own containerd namespace.

    sudo .venv/bin/python benchmarks/runtime.py [--pods 20]

Prints the machine (cores, kernel, containerd version), p50/p99 of each figure, and as its last
line one JSON object with the figures. Everything it creates is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodeagent.runtime import images, podconfig  # noqa: E402
from nodeagent.runtime.containerd import ManagedContainerd  # noqa: E402
from nodeagent.runtime.cri import RuntimeClient  # noqa: E402

CNI_BIN = "/usr/lib/cni"
PEER_NAMESPACE = "bench"


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(values, 50) * 1000, 1), "p99_ms": round(percentile(values, 99) * 1000, 1)}


def write_conflist(conf_dir: Path, ipam_dir: Path) -> None:
    conf_dir.mkdir(parents=True, exist_ok=True)
    conf = {"cniVersion": "1.0.0", "name": "bench", "plugins": [{
        "type": "bridge", "bridge": "benchbr0", "isGateway": True, "ipMasq": False,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.196.0.0/24"}]], "dataDir": str(ipam_dir)}}]}
    (conf_dir / "10-bench.conflist").write_text(json.dumps(conf))


def pod(i: int) -> dict:
    return {"metadata": {"name": f"bench-{i}", "namespace": "bench", "uid": f"bench-uid-{i}"},
            "spec": {"containers": [{"name": "app", "image": images.TOOLBOX_IMAGE, "command": ["sleep", "3600"]}]}}


async def cri_round(rt: RuntimeClient, log_root: Path, i: int) -> tuple[float, float]:
    p = pod(i)
    log_dir = podconfig.pod_log_directory(str(log_root), p)
    os.makedirs(log_dir, exist_ok=True)
    sc = podconfig.sandbox_config(p, log_directory=log_dir)
    t0 = time.perf_counter()
    sid = await rt.run_pod_sandbox(sc)
    t1 = time.perf_counter()
    cid = await rt.create_container(sid, podconfig.container_config(p, p["spec"]["containers"][0]), sc)
    await rt.start_container(cid)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


async def ctr(socket: str, *args: str) -> None:
    proc = await asyncio.create_subprocess_exec("ctr", "--address", socket, "--namespace", PEER_NAMESPACE, *args,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(args)}: {err.decode().strip()}")


async def run(n: int, ns: str, base: Path) -> dict:
    write_conflist(base / "cni" / "net.d", base / "ipam")
    c = ManagedContainerd(base, netns=ns, cni_bin_dir=CNI_BIN)
    peer_ids: list[str] = []
    try:
        await c.start()
        socket = str(c.socket)
        built = images.built_images()
        assert built is not None
        await ctr(socket, "images", "import", str(built[images.TOOLBOX_IMAGE].archive))
        async with RuntimeClient(c.endpoint) as rt:
            version = (await rt.version()).runtime_version
            await cri_round(rt, base / "logs", 1000)  # warm-up: first CNI ADD, page cache
            sandbox, create_start = [], []
            for i in range(n):
                s, cs = await cri_round(rt, base / "logs", i)
                sandbox.append(s)
                create_start.append(cs)
        peer = []
        for i in range(n + 1):
            cid = f"peer-{i}"
            t0 = time.perf_counter()
            await ctr(socket, "run", "-d", "--net-host", images.TOOLBOX_IMAGE, cid, "sleep", "3600")
            if i:  # the first is the warm-up
                peer.append(time.perf_counter() - t0)
            peer_ids.append(cid)
    finally:
        for cid in peer_ids:
            try:
                await ctr(str(c.socket), "tasks", "kill", "-s", "SIGKILL", cid)
            except RuntimeError:
                pass
        for cid in peer_ids:
            for _ in range(50):
                try:
                    await ctr(str(c.socket), "containers", "rm", cid)
                    break
                except RuntimeError:
                    try:
                        await ctr(str(c.socket), "tasks", "rm", "-f", cid)
                    except RuntimeError:
                        await asyncio.sleep(0.1)
        await c.stop()
    return {"containerd": version, "sandbox": sandbox, "create_start": create_start, "peer": peer}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=20)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("benchmarks/runtime.py needs root (network namespaces, containerd)", file=sys.stderr)
        return 2
    images.build_all()
    ns = f"na-bench-{secrets.token_hex(3)}"
    base = Path(tempfile.mkdtemp(prefix="na-bench-", dir="/tmp"))
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        r = asyncio.run(run(args.pods, ns, base))
    finally:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    cores = os.cpu_count()
    print(f"machine: {cores} cores, kernel {platform.release()}, containerd {r['containerd']}, runc "
          f"{subprocess.run(['runc', '--version'], capture_output=True, text=True).stdout.split()[2]}")
    rows = [("RunPodSandbox (CRI, CNI bridge)", r["sandbox"]),
            ("CreateContainer+StartContainer (CRI)", r["create_start"]),
            ("peer: ctr run -d (create+start, no CRI)", r["peer"])]
    for label, values in rows:
        s = summary(values)
        print(f"{label:42s} n={len(values):3d}  p50 {s['p50_ms']:8.1f} ms  p99 {s['p99_ms']:8.1f} ms")
    sb, cs, peer = summary(r["sandbox"]), summary(r["create_start"]), summary(r["peer"])
    print(json.dumps({
        "benchmark": "runtime", "pods": args.pods, "cores": cores, "kernel": platform.release(),
        "containerd": r["containerd"],
        "run_pod_sandbox_p50_ms": sb["p50_ms"], "run_pod_sandbox_p99_ms": sb["p99_ms"],
        "create_start_p50_ms": cs["p50_ms"], "create_start_p99_ms": cs["p99_ms"],
        "peer_ctr_run_p50_ms": peer["p50_ms"], "peer_ctr_run_p99_ms": peer["p99_ms"],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
