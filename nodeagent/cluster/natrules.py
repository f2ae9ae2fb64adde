"""Read a node's NAT rules for one Service (kube-proxy writes them with the legacy back end,
docs/components.md "Conventions"), with packet counters."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from nodeagent.netns import nsenter_argv

# chains every Service shares; following them would pull in the whole table
SHARED = {"KUBE-MARK-MASQ", "KUBE-MARK-DROP", "KUBE-POSTROUTING", "KUBE-SERVICES", "KUBE-NODEPORTS",
          "RETURN", "ACCEPT", "DROP", "DNAT", "SNAT", "MASQUERADE", "MARK", "REJECT"}
_RULE = re.compile(r"^(?:\[(\d+):(\d+)\] )?-A (\S+)(.*)$")
_JUMP = re.compile(r"-[jg] (\S+)")


@dataclass(frozen=True)
class Rule:
    chain: str
    spec: str          # everything after "-A CHAIN"
    packets: int
    bytes: int

    @property
    def target(self) -> str | None:
        m = _JUMP.search(self.spec)
        return m.group(1) if m else None

    @property
    def text(self) -> str:
        return f"-A {self.chain}{self.spec}"


def parse_save(text: str) -> list[Rule]:
    """Rules of an `iptables-save [-c]` dump (one table)."""
    rules = []
    for line in text.splitlines():
        m = _RULE.match(line)
        if m:
            rules.append(Rule(m.group(3), m.group(4), int(m.group(1) or 0), int(m.group(2) or 0)))
    return rules


def save_nat(netns: str) -> str:
    p = subprocess.run([*nsenter_argv(netns), "iptables-legacy-save", "-c", "-t", "nat"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"iptables-legacy-save in {netns} failed: {p.stderr.strip()}")
    return p.stdout


def service_entry_rules(rules: list[Rule], cluster_ip: str | None, port: int | None,
                        node_port: int | None) -> list[Rule]:
    """The KUBE-SERVICES rule for clusterIP:port and the KUBE-NODEPORTS rule for the nodePort."""
    out = []
    for r in rules:
        if r.chain == "KUBE-SERVICES" and cluster_ip and f"-d {cluster_ip}/32" in r.spec and (
                port is None or f"--dport {port}" in r.spec):
            out.append(r)
        elif r.chain == "KUBE-NODEPORTS" and node_port and f"--dport {node_port}" in r.spec:
            out.append(r)
    return out


def service_rules(rules: list[Rule], cluster_ip: str | None, port: int | None = None,
                  node_port: int | None = None) -> list[Rule]:
    """The entry rules plus every rule of the chains they lead to (KUBE-SVC-, KUBE-EXT-, KUBE-SEP-),
    in table order."""
    entries = service_entry_rules(rules, cluster_ip, port, node_port)
    chains: set[str] = set()
    todo = [r.target for r in entries if r.target]
    while todo:
        c = todo.pop()
        if c is None or c in chains or c in SHARED:
            continue
        chains.add(c)
        todo.extend(r.target for r in rules if r.chain == c and r.target)
    picked = {id(r) for r in entries}
    found = [r for r in rules if id(r) in picked or r.chain in chains]
    # in the order a packet meets them; rules keep their table order within a chain
    return sorted(found, key=lambda r: _FLOW_ORDER.get(r.chain[:9], 9))


_FLOW_ORDER = {"KUBE-SERV": 0, "KUBE-NODE": 1, "KUBE-EXT-": 2, "KUBE-SVC-": 3, "KUBE-SEP-": 4}


def changed(before: list[Rule], after: list[Rule]) -> list[tuple[Rule, int]]:
    """Rules whose packet counter grew, with the growth. kube-proxy's restore replaces rules and
    so zeroes their counters: a counter that went down was reset, and counts from zero."""
    old = {r.text: r.packets for r in before}
    out = []
    for r in after:
        prev = old.get(r.text, 0)
        grew = r.packets - prev if r.packets >= prev else r.packets
        if grew > 0:
            out.append((r, grew))
    return out


def dnat_target(rule: Rule) -> str | None:
    m = re.search(r"--to-destination (\S+)", rule.spec)
    return m.group(1) if m else None
