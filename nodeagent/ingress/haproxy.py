"""The HAProxy process: checked configs, graceful reloads, the runtime API (HAProxy 2.6,
management.txt).

HAProxy runs in master-worker mode (`-W -S master.sock`). A reload is the master CLI's `reload`:
the master re-executes itself with the new file, the new worker takes the listening sockets over
from the old one (the stats socket has `expose-fd listeners`, so nothing is closed and no
connection is refused), and the old worker finishes its requests (at most `hard-stop-after`).
Every config is first checked with `haproxy -c`; a config that fails is never loaded and the
running one stays. Endpoint changes go through the worker's stats socket (`set server`) with no
reload at all.

A controller that restarts adopts the master it finds through the pid file and the master socket,
so the data plane does not stop with the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class ProxyError(RuntimeError):
    pass


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    output: str


async def _unix_command(path: Path, command: str, timeout: float = 5.0) -> str:
    """One non-interactive CLI exchange: send the command line, read until the server closes."""
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), timeout)
    try:
        writer.write(command.encode() + b"\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()
    return data.decode(errors="replace")


class HAProxy:
    def __init__(self, run_dir: Path, binary: str | list[str] = "haproxy") -> None:
        self.run_dir = run_dir
        # a list is a command prefix: tests run it inside a network namespace with nsenter
        self.argv = [binary] if isinstance(binary, str) else list(binary)
        self.config = run_dir / "haproxy.cfg"
        self.master_socket = run_dir / "master.sock"
        self.stats_socket = run_dir / "haproxy.sock"
        self.pid_file = run_dir / "haproxy.pid"
        self.log_file = run_dir / "haproxy.log"
        self.master_pid: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self.reloads = 0

    # --- config ------------------------------------------------------------------------------
    async def check(self, text: str) -> CheckResult:
        """`haproxy -c` on the text (in a file next to the live one; nothing is bound)."""
        candidate = self.run_dir / "haproxy.cfg.check"
        candidate.write_text(text)
        proc = await asyncio.create_subprocess_exec(*self.argv, "-c", "-q", "-f", str(candidate),
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        return CheckResult(proc.returncode == 0, out.decode(errors="replace").strip())

    def _install(self, text: str) -> None:
        tmp = self.config.with_suffix(".cfg.tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config)

    # --- process -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        if self.master_pid is None:
            return False
        try:
            os.kill(self.master_pid, 0)
        except OSError:
            return False
        return self._proc is None or self._proc.returncode is None

    async def adopt(self) -> bool:
        """Take over a master left by a previous controller (same run dir)."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
            os.kill(pid, 0)
            out = await self.master_command("show proc")
        except (OSError, ValueError, IndexError, TimeoutError):
            return False
        if "master" not in out:
            return False
        self.master_pid = pid
        log.info("adopted haproxy master pid=%d", pid)
        return True

    async def start(self, text: str) -> None:
        self._install(text)
        for stale in (self.master_socket, self.stats_socket):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        logf = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # handed to the child
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv, "-W", "-S", f"{self.master_socket},mode,600", "-f", str(self.config),
                "-p", str(self.pid_file), stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=logf,
                start_new_session=True)
        finally:
            os.close(logf)
        self.master_pid = self._proc.pid
        await self._wait_worker(None, timeout=10)
        log.info("haproxy started master_pid=%d config=%s", self.master_pid, self.config)

    async def reload(self, text: str) -> None:
        """Install the (checked) text and reload gracefully; returns once the new worker answers."""
        old = await self.worker_pid()
        failed_before = await self._failed_reloads()
        self._install(text)
        await self.master_command("reload")
        await self._wait_worker(old, timeout=10)
        if await self._failed_reloads() > failed_before:
            raise ProxyError(f"haproxy reload failed; see {self.log_file}")
        self.reloads += 1

    async def _wait_worker(self, old_pid: int | None, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._proc is not None and self._proc.returncode is not None:
                raise ProxyError(f"haproxy exited with {self._proc.returncode}; see {self.log_file}")
            pid = await self.worker_pid()
            if pid is not None and pid != old_pid:
                return
            if loop.time() > deadline:
                raise ProxyError(f"no new haproxy worker after {timeout:.0f}s; see {self.log_file}")
            await asyncio.sleep(0.02)

    async def worker_pid(self) -> int | None:
        try:
            out = await self.command("show info", timeout=1)
        except (OSError, TimeoutError):
            return None
        for line in out.splitlines():
            if line.startswith("Pid:"):
                return int(line.split(":", 1)[1])
        return None

    async def _failed_reloads(self) -> int:
        try:
            out = await self.master_command("show proc")
        except (OSError, TimeoutError):
            return 0
        for line in out.splitlines():
            if " master " in f" {line} " and "[failed:" in line:
                return int(line.split("[failed:", 1)[1].split("]", 1)[0])
        return 0

    async def stop(self, grace: float = 5.0) -> None:
        """Soft stop (SIGUSR1: finish what is in flight), then SIGTERM."""
        pid = self.master_pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGUSR1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while loop.time() < deadline and self._alive(pid):  # noqa: ASYNC110 - polling another process
            await asyncio.sleep(0.1)
        if self._alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        if self._proc is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proc.wait(), 5)
        self.master_pid = None

    def _alive(self, pid: int) -> bool:
        if self._proc is not None:
            return self._proc.returncode is None
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True

    # --- runtime API -------------------------------------------------------------------------
    async def command(self, command: str, timeout: float = 5.0) -> str:
        return await _unix_command(self.stats_socket, command, timeout)

    async def master_command(self, command: str, timeout: float = 5.0) -> str:
        # the master CLI stays in interactive mode unless told to quit
        return await _unix_command(self.master_socket, f"{command}; quit", timeout)

    async def set_servers(self, commands: list[str]) -> None:
        """Run `set server` commands in one exchange; raise when any of them was refused."""
        if not commands:
            return
        out = await self.command(";".join(commands))
        bad = [line for line in out.splitlines() if line.startswith(("No such", "Require", "Invalid", "Unknown"))
               or "error" in line.lower() or "failed" in line.lower()]
        if bad:
            raise ProxyError(f"haproxy refused a runtime change: {bad[0]}")


def server_commands(backend: str, current: list[tuple[str, int] | None],
                    desired: list[tuple[str, int]]) -> tuple[list[str], list[tuple[str, int] | None]]:
    """The `set server` commands that turn the slots' current addresses into the desired set,
    keeping every endpoint that stays in its slot (its connections and counters stay). Returns the
    commands and the new slot list; raises ValueError when the slots are too few."""
    if len(desired) > len(current):
        raise ValueError(f"backend {backend}: {len(desired)} endpoints for {len(current)} slots")
    want = set(desired)
    slots = [s if s in want else None for s in current]
    commands = [f"set server {backend}/s{i + 1} state maint" for i, (old, new) in enumerate(zip(current, slots,
                                                                                             strict=True))
                if old is not None and new is None]
    missing = [a for a in desired if a not in set(slots)]
    for i, s in enumerate(slots):
        if s is None and missing:
            ip, port = missing.pop(0)
            slots[i] = (ip, port)
            commands += [f"set server {backend}/s{i + 1} addr {ip} port {port}",
                         f"set server {backend}/s{i + 1} state ready"]
    return commands, slots
