"""A fake iptables for unit tests: it parses restore text the way iptables-restore does and rejects
what the kernel would (ARCHITECTURE.md practice 4; upstream pkg/util/iptables/testing/fake.go):
a rule in a chain that does not exist, a jump to a chain that does not exist, deleting a chain that
is still referenced or not empty. It also traces packets through the rules (practice 8).

It understands the subset of iptables syntax this package writes.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from nodeagent.proxy.iptables.executor import IptablesError

BUILTIN = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
}
TERMINAL = {"ACCEPT", "DROP", "REJECT", "RETURN", "DNAT", "SNAT", "MASQUERADE", "MARK"}


def rule_dict_to_args(rule: Mapping[str, object]) -> list[str]:
    """python-iptables `easy` dict -> iptables arguments (the subset used for built-in jumps)."""
    args: list[str] = []
    for key, value in rule.items():
        if key == "target":
            continue
        args += ["-m", key]
        assert isinstance(value, dict)
        for opt, val in value.items():
            args += [f"--{opt}", str(val)]
    return args + ["-j", str(rule["target"])]


@dataclass
class Rule:
    args: list[str]

    @property
    def target(self) -> str:
        return self.args[self.args.index("-j") + 1] if "-j" in self.args else ""

    def opt(self, name: str) -> str | None:
        return self.args[self.args.index(name) + 1] if name in self.args else None

    def text(self) -> str:
        return " ".join(shlex.quote(a) if " " in a else a for a in self.args)


@dataclass
class FakeIptables:
    tables: dict[str, dict[str, list[Rule]]] = field(default_factory=lambda: {
        t: {c: [] for c in chains} for t, chains in BUILTIN.items()})
    restores: list[str] = field(default_factory=list)
    fail_next_restore: bool = False

    # -- Executor --------------------------------------------------------------------------------
    def ensure_chain(self, table: str, chain: str) -> bool:
        chains = self.tables[table]
        if chain in chains:
            return True
        chains[chain] = []
        return False

    def chain_exists(self, table: str, chain: str) -> bool:
        return chain in self.tables[table]

    def ensure_rule(self, table: str, chain: str, rule: Mapping[str, object], position: str = "prepend") -> bool:
        args = rule_dict_to_args(rule)
        rules = self.tables[table][chain]
        if any(r.args == args for r in rules):
            return True
        self._check_target(table, args)
        if position == "prepend":
            rules.insert(0, Rule(args))
        else:
            rules.append(Rule(args))
        return False

    def delete_rule(self, table: str, chain: str, rule: Mapping[str, object]) -> None:
        args = rule_dict_to_args(rule)
        rules = self.tables[table].get(chain, [])
        self.tables[table][chain] = [r for r in rules if r.args != args]

    def save(self, table: str) -> str:
        out = [f"*{table}"]
        for chain in self.tables[table]:
            policy = "ACCEPT" if chain in BUILTIN[table] else "-"
            out.append(f":{chain} {policy} [0:0]")
        for chain, rules in self.tables[table].items():
            out += [f"-A {chain} {r.text()}" for r in rules]
        out.append("COMMIT")
        return "\n".join(out) + "\n"

    def restore(self, text: str | Iterable[str], noflush: bool = True) -> None:
        text = text if isinstance(text, str) else "".join(text)
        if self.fail_next_restore:
            self.fail_next_restore = False
            raise IptablesError("fake: injected restore failure")
        # work on a copy per table; commit only what parsed completely (restore is atomic)
        staged: dict[str, dict[str, list[Rule]]] = {}
        table = ""
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue

            def fail(msg: str, lineno: int = lineno, line: str = line) -> IptablesError:
                return IptablesError(f"fake iptables-restore: line {lineno}: {msg}: {line}")

            if line.startswith("*"):
                table = line[1:]
                if table not in self.tables:
                    raise fail("unknown table")
                base = {c: list(r) for c, r in self.tables[table].items()} if noflush else {
                    c: [] for c in BUILTIN[table]}
                staged[table] = base
            elif line == "COMMIT":
                table = ""
            elif not table:
                raise fail("rule outside a table")
            elif line.startswith(":"):
                chain = line[1:].split()[0]
                staged[table][chain] = []  # declaring a chain creates or flushes it
            else:
                args = shlex.split(line)
                op, chain, rest = args[0], args[1], args[2:]
                chains = staged[table]
                if chain not in chains:
                    raise fail(f"chain {chain} does not exist")
                if op == "-A":
                    self._check_target(table, rest, chains, fail)
                    chains[chain].append(Rule(rest))
                elif op == "-D":
                    for i, r in enumerate(chains[chain]):
                        if r.args == rest:
                            del chains[chain][i]
                            break
                    else:
                        raise fail("rule to delete not found")
                elif op == "-X":
                    if chain in BUILTIN[table]:
                        raise fail("cannot delete a built-in chain")
                    if chains[chain]:
                        raise fail(f"chain {chain} is not empty")
                    if any(r.target == chain for rs in chains.values() for r in rs):
                        raise fail(f"chain {chain} is still referenced")
                    del chains[chain]
                else:
                    raise fail(f"unsupported operation {op}")
        if table:
            raise IptablesError(f"fake iptables-restore: table {table} has no COMMIT")
        self.tables.update(staged)
        self.restores.append(text)

    def _check_target(self, table: str, args: list[str], chains: dict[str, list[Rule]] | None = None,
                      fail: object = None) -> None:
        chains = chains if chains is not None else self.tables[table]
        target = args[args.index("-j") + 1] if "-j" in args else ""
        if target and target not in TERMINAL and target not in chains:
            msg = f"jump to missing chain {target}"
            if callable(fail):
                raise fail(msg)
            raise IptablesError(f"fake iptables: {msg}")

    # -- inspection ------------------------------------------------------------------------------
    def rules(self, table: str, chain: str) -> list[str]:
        return [r.text() for r in self.tables[table].get(chain, [])]

    def chains(self, table: str) -> set[str]:
        return set(self.tables[table])


@dataclass(frozen=True)
class Packet:
    src: str
    dst: str
    proto: str  # tcp | udp | sctp
    dport: int
    local_src: bool = False  # sent by this node itself (nat OUTPUT instead of PREROUTING)


@dataclass(frozen=True)
class Outcome:
    """Where one possible path of a packet ends."""

    verdict: str  # "ACCEPT" (went through), "REJECT", "DROP"
    dnat: str | None  # ip:port it was rewritten to
    masquerade: bool


class Tracer:
    """Trace a packet through nat then filter, following every `statistic` branch, skipping
    `recent --rcheck` (no affinity state yet). `node_ips` are the node's own addresses."""

    def __init__(self, ipt: FakeIptables, node_ips: tuple[str, ...], max_depth: int = 64) -> None:
        self.ipt = ipt
        self.node_ips = set(node_ips) | {"127.0.0.1"}
        self.max_depth = max_depth

    def _matches(self, rule: Rule, pkt: Packet, mark: int) -> bool:
        a = rule.args
        i = 0
        while i < len(a):
            tok = a[i]
            neg = False
            if tok == "!":
                neg, i, tok = True, i + 1, a[i + 1]
            val = a[i + 1] if i + 1 < len(a) else ""
            ok = True
            if tok == "-j":
                break
            if tok == "-p":
                ok = pkt.proto == val
            elif tok == "-d":
                ok = ipaddress.ip_address(pkt.dst) in ipaddress.ip_network(val, strict=False)
            elif tok == "-s":
                ok = ipaddress.ip_address(pkt.src) in ipaddress.ip_network(val, strict=False)
            elif tok == "--dport":
                ok = pkt.dport == int(val)
            elif tok == "--dst-type":
                ok = (pkt.dst in self.node_ips) == (val == "LOCAL")
            elif tok == "--src-type":
                ok = (pkt.local_src or pkt.src in self.node_ips) == (val == "LOCAL")
            elif tok == "--mark":
                want, mask = (int(x, 16) for x in val.split("/"))
                ok = (mark & mask) == want
            elif tok == "--ctstate":
                ok = "NEW" in val.split(",")
            elif tok == "--rcheck":
                ok = False  # no affinity entries exist in a trace
                i += 1
                continue
            elif tok in ("-m", "--comment", "--mode", "--probability", "--name", "--seconds", "--reap", "--set"):
                if tok in ("--reap", "--set"):
                    i += 1
                    continue
                i += 2
                continue
            else:
                raise ValueError(f"tracer does not understand {tok!r} in {rule.text()}")
            if ok == neg:
                return False
            i += 2
        return True

    def _walk(self, table: str, chain: str, pkt: Packet, mark: int, depth: int) -> list[tuple[str, str | None, int]]:
        """Outcomes (verdict or 'CONTINUE', dnat, mark) of running chain on pkt."""
        if depth > self.max_depth:
            raise RuntimeError(f"rule loop through {chain}")
        results: list[tuple[str, str | None, int]] = []
        rules = self.ipt.tables[table][chain]

        def run_from(start: int, mark: int) -> None:
            for idx in range(start, len(rules)):
                rule = rules[idx]
                if not self._matches(rule, pkt, mark):
                    continue
                target = rule.target
                if "statistic" in rule.args:  # fork: this branch taken, and not taken
                    run_from(idx + 1, mark)
                if target == "MARK":
                    if rule.opt("--or-mark"):
                        mark |= int(rule.opt("--or-mark") or "0", 16)
                    elif rule.opt("--xor-mark"):
                        mark ^= int(rule.opt("--xor-mark") or "0", 16)
                    continue
                if target == "RETURN":
                    results.append(("CONTINUE", None, mark))
                    return
                if target == "DNAT":
                    results.append(("ACCEPT", rule.opt("--to-destination"), mark))
                    return
                if target in ("ACCEPT", "DROP", "REJECT", "MASQUERADE", "SNAT"):
                    results.append((target, None, mark))
                    return
                if not target:
                    continue
                for verdict, dnat, m in self._walk(table, target, pkt, mark, depth + 1):
                    if verdict == "CONTINUE":
                        run_from_rest.append((idx + 1, m))
                    else:
                        results.append((verdict, dnat, m))
                return
            results.append(("CONTINUE", None, mark))

        run_from_rest: list[tuple[int, int]] = []
        run_from(0, mark)
        while run_from_rest:
            start, m = run_from_rest.pop()
            run_from(start, m)
        return results

    def trace(self, pkt: Packet) -> set[Outcome]:
        nat_hook = "OUTPUT" if pkt.local_src else "PREROUTING"
        outcomes: set[Outcome] = set()
        for verdict, dnat, mark in self._walk("nat", nat_hook, pkt, 0, 0):
            if verdict in ("DROP", "REJECT"):
                outcomes.add(Outcome(verdict, None, False))
                continue
            after = pkt
            if dnat:
                ip, port = dnat.rsplit(":", 1)
                after = Packet(pkt.src, ip, pkt.proto, int(port), pkt.local_src)
            if pkt.local_src:
                hook = "OUTPUT"
            else:
                hook = "INPUT" if after.dst in self.node_ips else "FORWARD"
            fverdicts = {v for v, _, _ in self._walk("filter", hook, after, mark, 0)}
            final = "REJECT" if "REJECT" in fverdicts else "DROP" if "DROP" in fverdicts else "ACCEPT"
            if final != "ACCEPT":
                outcomes.add(Outcome(final, None, False))
                continue
            masq = False
            for v, _, _m in self._walk("nat", "POSTROUTING", after, mark, 0):
                masq = masq or v == "MASQUERADE"
            outcomes.add(Outcome("ACCEPT", dnat, masq))
        return outcomes
