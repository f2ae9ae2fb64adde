"""Build and remove a cluster's namespaces and its underlay switch (see topology.py).

Uses iproute2 (`ip -n NS ...`, a set-up.sh package): each step is one short command, runs inside
the named namespace only, and the root namespace is never given a link, address or route.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Sequence

from nodeagent.cluster.topology import BRIDGE, SWITCH_IP, UNDERLAY, UNDERLAY_IF, ClusterPlan, Member
from nodeagent.netns import NETNS_RUN_DIR, nsenter_argv

log = logging.getLogger(__name__)


class UnderlayError(RuntimeError):
    pass


def _run(argv: Sequence[str], input: str | None = None) -> str:
    p = subprocess.run(list(argv), input=input, capture_output=True, text=True)
    if p.returncode != 0:
        raise UnderlayError(f"`{' '.join(argv)}` failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


def ip_batch(netns: str, commands: Sequence[str]) -> None:
    """Run iproute2 commands in one process inside netns (`ip -n NS -batch -`)."""
    _run(["ip", "-n", netns, "-batch", "-"], input="\n".join(commands) + "\n")


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_RUN_DIR, name))


def switch_commands() -> list[str]:
    prefix = UNDERLAY.prefixlen
    return [
        "link set lo up",
        f"link add {BRIDGE} type bridge",
        f"addr add {SWITCH_IP}/{prefix} dev {BRIDGE}",
        f"link set {BRIDGE} up",
    ]


def member_switch_commands(m: Member) -> list[str]:
    """Run in the switch namespace: the member's veth, its far end moved into the member's netns."""
    return [
        f"link add {m.switch_port} type veth peer name {UNDERLAY_IF} netns {m.netns}",
        f"link set {m.switch_port} master {BRIDGE}",
        f"link set {m.switch_port} up",
    ]


def member_commands(m: Member) -> list[str]:
    """Run in the member's namespace: its underlay address; nodes route everything else to the
    switch's address (like a VM's host-only gateway), so NodePorts answer the underlay."""
    cmds = [
        "link set lo up",
        f"addr add {m.ip}/{UNDERLAY.prefixlen} dev {UNDERLAY_IF}",
        f"link set {UNDERLAY_IF} up",
    ]
    if m.role == "node":
        cmds.append(f"route add default via {SWITCH_IP}")
    return cmds


def sysctl(netns: str, settings: dict[str, str]) -> None:
    """Per-namespace sysctls (net.* is per network namespace)."""
    _run([*nsenter_argv(netns), "sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings.items())])


def create(plan: ClusterPlan) -> None:
    """Create every namespace and link of the plan; on any failure remove what was made."""
    existing = [n for n in plan.netns_names if netns_exists(n)]
    if existing:
        raise UnderlayError(
            f"cluster {plan.name!r}: network namespaces {existing} already exist; "
            f"run `nodeagent cluster down --name {plan.name}` first"
        )
    try:
        for name in plan.netns_names:
            _run(["ip", "netns", "add", name])
        ip_batch(plan.switch_netns, switch_commands())
        for m in plan.members:
            ip_batch(plan.switch_netns, member_switch_commands(m))
            ip_batch(m.netns, member_commands(m))
            # routers: pods' traffic crosses nodes (host-gw) and reaches the cp (DNS, apiserver)
            sysctl(m.netns, {"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.rp_filter": "0"})
    except BaseException:
        destroy(plan.netns_names)
        raise
    log.debug("underlay created cluster=%s netns=%s", plan.name, ",".join(plan.netns_names))


def add_pod_cidr_routes(netns: str, routes: dict[str, str]) -> None:
    """`routes` maps pod CIDR -> node underlay IP (host-gw). The control plane is not a node, so no
    CNI daemon keeps its routes: the cluster command does, once nodes have their podCIDR."""
    if routes:
        ip_batch(netns, [f"route replace {cidr} via {via}" for cidr, via in sorted(routes.items())])


def destroy(netns_names: Sequence[str]) -> list[str]:
    """Delete the namespaces (their links go with them). Returns those that could not be deleted."""
    failed = []
    for name in netns_names:
        if not netns_exists(name):
            continue
        p = subprocess.run(["ip", "netns", "delete", name], capture_output=True, text=True)
        if p.returncode != 0:
            log.warning("netns delete failed netns=%s err=%s", name, p.stderr.strip())
            failed.append(name)
    return failed
