"""The iptables back ends behind the one executor interface: what each runs."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from nodeagent.proxy.iptables import executor
from nodeagent.proxy.iptables.executor import LegacyExecutor, NftExecutor, make_executor, rule_argv

JUMP = {"conntrack": {"ctstate": "NEW"}, "comment": {"comment": "kubernetes service portals"},
        "target": "KUBE-SERVICES"}


def test_rule_argv_renders_matches_then_target() -> None:
    assert rule_argv(JUMP) == ["-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment",
                               "kubernetes service portals", "-j", "KUBE-SERVICES"]
    with pytest.raises(ValueError):
        rule_argv({"src": "10.0.0.1", "target": "ACCEPT"})


def test_make_executor_picks_the_commands_of_each_backend() -> None:
    legacy, nft = make_executor("legacy"), make_executor("nft")
    assert type(legacy) is LegacyExecutor and (legacy.restore_cmd, legacy.save_cmd) == (
        "iptables-legacy-restore", "iptables-legacy-save")
    assert isinstance(nft, NftExecutor) and (nft.restore_cmd, nft.save_cmd, nft.iptables_cmd) == (
        "iptables-nft-restore", "iptables-nft-save", "iptables-nft")
    with pytest.raises(ValueError):
        make_executor("xtables")


class _Runs:
    """Stands in for subprocess.run: records argv, answers -C / -S with the given exit codes."""

    def __init__(self, rc: dict[str, int]) -> None:
        self.rc = rc
        self.argv: list[list[str]] = []

    def __call__(self, argv: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        self.argv.append(argv)
        return subprocess.CompletedProcess(argv, self.rc.get(argv[4], 0) if len(argv) > 4 else 0, b"", b"")


def test_nft_executor_checks_before_it_inserts(monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _Runs({"-C": 1, "-S": 1})  # rule and chain absent
    monkeypatch.setattr(executor.subprocess, "run", runs)
    ipt = NftExecutor()
    assert ipt.ensure_rule("nat", "OUTPUT", {"comment": {"comment": "x"}, "target": "KUBE-SERVICES"}) is False
    assert ipt.ensure_chain("nat", "KUBE-MARK-MASQ") is False
    assert runs.argv == [
        ["iptables-nft", "-w", "-t", "nat", "-C", "OUTPUT", "-m", "comment", "--comment", "x", "-j", "KUBE-SERVICES"],
        ["iptables-nft", "-w", "-t", "nat", "-I", "OUTPUT", "-m", "comment", "--comment", "x", "-j", "KUBE-SERVICES"],
        ["iptables-nft", "-w", "-t", "nat", "-S", "KUBE-MARK-MASQ"],
        ["iptables-nft", "-w", "-t", "nat", "-N", "KUBE-MARK-MASQ"],
    ]
    present = _Runs({})
    monkeypatch.setattr(executor.subprocess, "run", present)
    assert ipt.ensure_rule("nat", "OUTPUT", {"target": "KUBE-SERVICES"}) is True
    assert ipt.chain_exists("mangle", "KUBE-PROXY-CANARY") is True
    assert [a[4] for a in present.argv] == ["-C", "-S"]  # nothing written
