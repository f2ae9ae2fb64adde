"""Detached component processes: start them in a namespace, record them, find them, stop them.

A pid file holds "PID STARTTIME" where STARTTIME is field 22 of /proc/PID/stat (clock ticks since
boot). A pid alone can be reused after the process dies; the pair cannot, so `down` never signals a
stranger that happens to have an old pid.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nodeagent.netns import nsenter_argv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PidRecord:
    pid: int
    start_time: int

    def render(self) -> str:
        return f"{self.pid} {self.start_time}\n"

    @classmethod
    def parse(cls, text: str) -> PidRecord | None:
        parts = text.split()
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            return None
        return cls(int(parts[0]), int(parts[1]))


def parse_stat_start_time(stat: str) -> int:
    """Field 22 (starttime) of a /proc/PID/stat line; comm (field 2) may hold spaces and ')'."""
    rest = stat[stat.rindex(")") + 2:].split()
    # rest[0] is field 3 (state), so field 22 is rest[19]
    return int(rest[19])


def parse_stat_ppid(stat: str) -> int:
    rest = stat[stat.rindex(")") + 2:].split()
    return int(rest[1])


def proc_start_time(pid: int, proc: Path = Path("/proc")) -> int | None:
    try:
        return parse_stat_start_time((proc / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def write_pid_file(path: Path, pid: int) -> PidRecord:
    start = proc_start_time(pid)
    if start is None:
        raise RuntimeError(f"process {pid} exited before its pid file {path} was written; see its log")
    rec = PidRecord(pid, start)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(rec.render())
    os.replace(tmp, path)
    return rec


def read_pid_file(path: Path) -> PidRecord | None:
    try:
        return PidRecord.parse(path.read_text())
    except OSError:
        return None


def alive(rec: PidRecord, proc: Path = Path("/proc")) -> bool:
    """The process recorded is still the one running under that pid (a zombie is not running)."""
    try:
        stat = (proc / str(rec.pid) / "stat").read_text()
        return parse_stat_start_time(stat) == rec.start_time and stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):
        return False


def component_argv(netns: str | None, args: Sequence[str], python: str = sys.executable) -> list[str]:
    """The command line of a component started in a namespace (docs/components.md, "Conventions":
    nsenter --net, never `ip netns exec`)."""
    base = [python, "-m", "nodeagent", *args]
    return [*nsenter_argv(netns), *base] if netns else base


def spawn(argv: Sequence[str], log_file: Path, pid_file: Path, env: dict[str, str] | None = None) -> PidRecord:
    """Start argv detached (own session, so a Ctrl-C of `cluster up` does not reach it), output
    appended to log_file, and record it in pid_file. nsenter execs the command (no --fork), so the
    recorded pid is the component itself."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        p = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    # wait for the exec of nsenter so the start time we record is the final one
    time.sleep(0.05)
    if p.poll() is not None:
        raise RuntimeError(f"{' '.join(argv)} exited at once with {p.returncode}; see {log_file}")
    log.debug("spawned pid=%d argv=%s log=%s", p.pid, " ".join(argv), log_file)
    return write_pid_file(pid_file, p.pid)


def netns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pids_in_netns(inodes: Iterable[int], proc: Path = Path("/proc")) -> set[int]:
    """Every process whose network namespace is one of `inodes` (what `ip netns pids` does)."""
    wanted = set(inodes)
    found: set[int] = set()
    if not wanted:
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ino = os.stat(entry / "ns" / "net").st_ino
        except OSError:
            continue
        if ino in wanted:
            found.add(int(entry.name))
    return found


def process_tree(roots: set[int], proc: Path = Path("/proc")) -> set[int]:
    """roots plus all their descendants. Container processes live in pod namespaces, but they are
    children of containerd shims, which run in the node namespace."""
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = parse_stat_ppid((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.add(pid)
        todo.extend(children.get(pid, ()))
    out.discard(os.getpid())
    return out


def signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still "exists" for kill(0); count it as gone
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


def terminate(pids: set[int], grace: float = 10.0) -> set[int]:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL what is left. Returns the pids that were
    still there after SIGKILL (should be empty)."""
    signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = {p for p in pids if _exists(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {p for p in left if _exists(p)}
    if left:
        log.debug("killing pids=%s after grace=%.0fs", sorted(left), grace)
        signal_all(left, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = {p for p in left if _exists(p)}
    return left
