"""What a local cluster may leave on the host: a snapshot to compare before/after `cluster down`."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HostTraces:
    netns: frozenset[str]       # `ip netns list` entries of the cluster
    mounts: frozenset[str]      # mount points under the cluster dir or in /run/netns
    processes: frozenset[str]   # "pid cmdline" of processes naming the cluster's dir or netns
    root_links: frozenset[str]  # links of the root namespace
    root_chains: frozenset[str]  # KUBE-/CNI- chains of the root namespace (both back ends)


def _netns_list() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _mounts() -> set[str]:
    out = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        out.add(line.split()[4])
    return out


def _chains(cmd: str) -> set[str]:
    p = subprocess.run([cmd], capture_output=True, text=True)
    return {line.split()[0] for line in p.stdout.splitlines()
            if line.startswith((":KUBE-", ":CNI-", ":NODEAGENT"))}


def host_traces(cluster: str, cluster_dir: Path, all_mounts_in_run_netns: bool = True) -> HostTraces:
    netns = {n for n in _netns_list() if n.startswith(f"na-{cluster}-")}
    mounts = {m for m in _mounts() if m.startswith(str(cluster_dir) + "/") or m == str(cluster_dir)}
    if all_mounts_in_run_netns:
        mounts |= {m for m in _mounts() if m.startswith("/run/netns/cni-")}
    procs = set()
    needles = [str(cluster_dir).encode(), f"na-{cluster}-".encode()]
    for e in Path("/proc").iterdir():
        if not e.name.isdigit() or int(e.name) == os.getpid():
            continue
        try:
            cmd = (e / "cmdline").read_bytes()
        except OSError:
            continue
        if any(n in cmd for n in needles):
            text = cmd.replace(b"\0", b" ").decode(errors="replace")
            procs.add(f"{e.name} {text}")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    root_links = {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()}
    chains = _chains("iptables-legacy-save") | _chains("iptables-nft-save")
    return HostTraces(frozenset(netns), frozenset(mounts), frozenset(procs), frozenset(root_links),
                      frozenset(chains))
