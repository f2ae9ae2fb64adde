"""The one iptables executor interface (ARCHITECTURE.md practice 4; upstream pkg/util/iptables).

Bulk changes go through `iptables-legacy-restore --noflush` (one atomic commit per table, and
23-60x faster than python-iptables' batched commit for 10k rules, see issue 6); single rules in the
built-in chains are ensured and inspected with python-iptables. Both write the LEGACY (x_tables)
back end, the project convention (docs/components.md), so tests read `iptables-legacy-save`.

Everything here acts on the calling thread's network namespace: run the proxy under
`nsenter --net=...` or call it through nodeagent.netns.run_in_netns.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from typing import Protocol

RESTORE = "iptables-legacy-restore"
SAVE = "iptables-legacy-save"

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
        chunks = [text] if isinstance(text, str) else text
        with tempfile.TemporaryFile() as errf:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errf)
            assert proc.stdin is not None
            try:
                for chunk in chunks:  # restore handles each line as it arrives: render overlaps it
                    proc.stdin.write(chunk.encode())
            except BrokenPipeError:
                pass  # it failed early; its exit status and stderr say why
            finally:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
                rc = proc.wait()
            errf.seek(0)
            stderr = errf.read()
        if rc != 0:
            err = stderr.decode(errors="replace").strip()
            raise IptablesError(f"{' '.join(argv)} failed (exit {rc}): {err}; "
                                f"the rules were not changed (restore is atomic per table)")

    def save(self, table: str) -> str:
        proc = subprocess.run([self.save_cmd, "-t", table], capture_output=True)
        if proc.returncode != 0:
            raise IptablesError(f"{self.save_cmd} -t {table} failed: {proc.stderr.decode(errors='replace')}")
        return proc.stdout.decode()


def chains_in_save(text: str) -> list[str]:
    """Chain names declared in iptables-save output of one table."""
    return [line[1:].split(" ", 1)[0] for line in text.splitlines() if line.startswith(":")]
