"""The one iptables executor interface (ARCHITECTURE.md practice 4; upstream pkg/util/iptables).

Two back ends behind it (`nodeagent proxy --iptables-backend legacy|nft`):
- LegacyExecutor (the default): bulk changes through `iptables-legacy-restore --noflush` (one
  atomic commit per table, 23-60x faster than python-iptables' batched commit for 10k rules, see
  issue 6); single rules in the built-in chains ensured and inspected with python-iptables, which
  only writes x_tables. Tests read `iptables-legacy-save`.
- NftExecutor: `iptables-nft-restore --noflush` and the `iptables-nft` command (python-iptables
  cannot write nf_tables). A partial restore becomes a small nf_tables transaction, still paying
  the restore's fetch of every chain of the table (see benchmarks/proxy.py). One restore input
  costs user time quadratic in its size in iptables 1.8.9 (1k Services x 10 endpoints: 4.1 s vs
  0.46 s legacy; 3k: > 100 s), so IptablesBackend splits its full syncs into pieces
  (`split_full_sync`); then 3k Services load in 1.6 s. Tests read `iptables-nft-save`.

Legacy stays the default: docs/components.md makes it the project's back end for KUBE-* chains
(the CNI's masquerade chain and python-iptables read and write x_tables too), and a full sync
is atomic only there.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping
from typing import Protocol

from nodeagent.proxy.loader import stream_to

RESTORE = "iptables-legacy-restore"
SAVE = "iptables-legacy-save"
NFT_RESTORE = "iptables-nft-restore"
NFT_SAVE = "iptables-nft-save"
NFT_IPTABLES = "iptables-nft"
BACKENDS = ("legacy", "nft")
DEFAULT_BACKEND = "legacy"

TABLES = ("filter", "nat", "mangle")


class IptablesError(RuntimeError):
    """An iptables operation failed; the message carries the command's own error."""


class Executor(Protocol):
    def ensure_chain(self, table: str, chain: str) -> bool:
        """Create the chain if missing; return True if it existed."""
        ...

    def chain_exists(self, table: str, chain: str) -> bool: ...

    def ensure_rule(self, table: str, chain: str, rule: Mapping[str, object], position: str = "prepend") -> bool:
        """Add the rule (python-iptables `easy` dict form) unless present; True if it existed."""
        ...

    def delete_rule(self, table: str, chain: str, rule: Mapping[str, object]) -> None: ...

    def restore(self, text: str | Iterable[str], noflush: bool = True) -> None:
        """Load iptables-restore text (whole, or in pieces streamed as they are produced)
        atomically per table; raise IptablesError on failure."""
        ...

    def save(self, table: str) -> str: ...


class LegacyExecutor:
    """The real executor: iptables-legacy-restore/-save and python-iptables (libiptc)."""

    def __init__(self, restore_cmd: str = RESTORE, save_cmd: str = SAVE) -> None:
        self.restore_cmd = restore_cmd
        self.save_cmd = save_cmd

    @staticmethod
    def _iptc():  # type: ignore[no-untyped-def]
        import iptc  # heavy (loads libiptc); only where used
        import iptc.easy

        return iptc

    def ensure_chain(self, table: str, chain: str) -> bool:
        iptc = self._iptc()
        if iptc.easy.has_chain(table, chain):
            return True
        iptc.easy.add_chain(table, chain)
        return False

    def chain_exists(self, table: str, chain: str) -> bool:
        return bool(self._iptc().easy.has_chain(table, chain))

    def ensure_rule(self, table: str, chain: str, rule: Mapping[str, object], position: str = "prepend") -> bool:
        iptc = self._iptc()
        if iptc.easy.has_rule(table, chain, rule):
            return True
        if position == "prepend":
            iptc.easy.insert_rule(table, chain, rule)
        else:
            iptc.easy.add_rule(table, chain, rule)
        return False

    def delete_rule(self, table: str, chain: str, rule: Mapping[str, object]) -> None:
        iptc = self._iptc()
        if iptc.easy.has_chain(table, chain) and iptc.easy.has_rule(table, chain, rule):
            iptc.easy.delete_rule(table, chain, rule)

    def restore(self, text: str | Iterable[str], noflush: bool = True) -> None:
        argv = [self.restore_cmd, "-w"] + (["--noflush"] if noflush else [])
        rc, err = stream_to(argv, text)
        if rc != 0:
            raise IptablesError(f"{' '.join(argv)} failed (exit {rc}): {err}; "
                                f"the rules were not changed (restore is atomic per table)")

    def save(self, table: str) -> str:
        proc = subprocess.run([self.save_cmd, "-t", table], capture_output=True)
        if proc.returncode != 0:
            raise IptablesError(f"{self.save_cmd} -t {table} failed: {proc.stderr.decode(errors='replace')}")
        return proc.stdout.decode()


def rule_argv(rule: Mapping[str, object]) -> list[str]:
    """iptables arguments for a python-iptables `easy` rule dict: one key per match module
    ({"conntrack": {"ctstate": "NEW"}} -> -m conntrack --ctstate NEW), "target" last."""
    argv: list[str] = []
    for key, value in rule.items():
        if key == "target":
            continue
        if not isinstance(value, Mapping):
            raise ValueError(f"unsupported rule part {key}={value!r}")
        argv += ["-m", key]
        for opt, arg in value.items():
            argv += [f"--{opt}", str(arg)]
    target = rule.get("target")
    if target:
        argv += ["-j", str(target)]
    return argv


class NftExecutor(LegacyExecutor):
    """The nf_tables back end of iptables: iptables-nft-restore/-save for bulk, the iptables-nft
    command for single chains and rules (each call is its own small transaction)."""

    # a hint to IptablesBackend: load full syncs in several restores (see its split_full_sync)
    split_full_sync = True

    def __init__(self, restore_cmd: str = NFT_RESTORE, save_cmd: str = NFT_SAVE,
                 iptables_cmd: str = NFT_IPTABLES) -> None:
        super().__init__(restore_cmd, save_cmd)
        self.iptables_cmd = iptables_cmd

    def _run(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([self.iptables_cmd, "-w", *args], capture_output=True)

    def _check(self, *args: str) -> None:
        proc = self._run(*args)
        if proc.returncode != 0:
            raise IptablesError(f"{self.iptables_cmd} {' '.join(args)} failed: "
                                f"{proc.stderr.decode(errors='replace').strip()}")

    def chain_exists(self, table: str, chain: str) -> bool:
        # -S of one chain reads only that table; exit status 1 means "no such chain"
        return self._run("-t", table, "-S", chain).returncode == 0

    def ensure_chain(self, table: str, chain: str) -> bool:
        if self.chain_exists(table, chain):
            return True
        self._check("-t", table, "-N", chain)
        return False

    def ensure_rule(self, table: str, chain: str, rule: Mapping[str, object], position: str = "prepend") -> bool:
        spec = rule_argv(rule)
        if self._run("-t", table, "-C", chain, *spec).returncode == 0:
            return True
        self._check("-t", table, "-I" if position == "prepend" else "-A", chain, *spec)
        return False

    def delete_rule(self, table: str, chain: str, rule: Mapping[str, object]) -> None:
        spec = rule_argv(rule)
        if self._run("-t", table, "-C", chain, *spec).returncode == 0:
            self._check("-t", table, "-D", chain, *spec)


def make_executor(backend: str = DEFAULT_BACKEND) -> LegacyExecutor:
    """The real executor of an iptables back end ("legacy" or "nft")."""
    if backend == "legacy":
        return LegacyExecutor()
    if backend == "nft":
        return NftExecutor()
    raise ValueError(f"unknown iptables back end {backend!r}; choose one of {', '.join(BACKENDS)}")


def chains_in_save(text: str) -> list[str]:
    """Chain names declared in iptables-save output of one table."""
    return [line[1:].split(" ", 1)[0] for line in text.splitlines() if line.startswith(":")]
