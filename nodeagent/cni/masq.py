"""ipMasq: masquerade pod traffic that leaves the cluster CIDR, in a chain of our own.

Per network one nat chain NODEAGENT-MASQ-<8 hex of the network name>, reached from POSTROUTING for
packets sourced in the pod subnet:
    -d <clusterCIDR> RETURN (pod to pod keeps its source address, seed 002)
    -d 224.0.0.0/4   RETURN (multicast is not NATed, as in the reference plugins)
    MASQUERADE
Written with the LEGACY iptables back end, as every nodeagent chain is (docs/components.md), and
rewritten whole with `iptables-legacy-restore --noflush`, which flushes only the chains it names.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess

from nodeagent.cni.config import IPNetwork

CHAIN_PREFIX = "NODEAGENT-MASQ-"
RESTORE = "iptables-legacy-restore"
IPTABLES = "iptables-legacy"


def chain_name(network: str) -> str:
    return CHAIN_PREFIX + hashlib.sha256(network.encode()).hexdigest()[:8].upper()


def render(network: str, cluster_cidr: IPNetwork) -> str:
    chain = chain_name(network)
    c = f"nodeagent-cni {network}"
    return "\n".join([
        "*nat",
        f":{chain} - [0:0]",
        f'-A {chain} -d {cluster_cidr} -m comment --comment "{c}: pod to pod keeps its source" -j RETURN',
        f'-A {chain} -d 224.0.0.0/4 -m comment --comment "{c}: multicast is not masqueraded" -j RETURN',
        f'-A {chain} -m comment --comment "{c}: leaving the cluster" -j MASQUERADE',
        "COMMIT",
        "",
    ])


def _jump(network: str, subnet: IPNetwork) -> list[str]:
    return ["-s", str(subnet), "-m", "comment", "--comment", f"nodeagent-cni {network}: masquerade",
            "-j", chain_name(network)]


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)


def ensure(network: str, subnet: IPNetwork, cluster_cidr: IPNetwork, lock_dir: str) -> None:
    """Idempotent; serialised across processes with a flock so two ADDs never append two jumps."""
    if subnet.version != 4:
        return  # ip6tables masquerade is not implemented; IPv6 pods are routed as they are
    os.makedirs(lock_dir, exist_ok=True)
    fd = os.open(os.path.join(lock_dir, "masq.lock"), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        r = _run([RESTORE, "-w", "--noflush"], render(network, cluster_cidr))
        if r.returncode != 0:
            raise RuntimeError(f"{RESTORE} failed for network {network}: {r.stderr.strip()}")
        jump = _jump(network, subnet)
        if _run([IPTABLES, "-w", "-t", "nat", "-C", "POSTROUTING", *jump]).returncode != 0:
            r = _run([IPTABLES, "-w", "-t", "nat", "-A", "POSTROUTING", *jump])
            if r.returncode != 0:
                raise RuntimeError(f"{IPTABLES} -A POSTROUTING failed for network {network}: {r.stderr.strip()}")
    finally:
        os.close(fd)

