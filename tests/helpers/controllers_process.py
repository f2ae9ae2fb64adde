"""Run `nodeagent controllers` as a subprocess for integration tests, and kubectl without blocking
the event loop (the simulated kubelet shares it)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.apiserver import free_port


@dataclass
class ControllersProcess:
    kubeconfig: Path
    log: Path
    identity: str
    metrics_port: int
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ControllersProcess:
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nodeagent", "-v", "controllers", "--kubeconfig", str(self.kubeconfig),
                 "--identity", self.identity, "--metrics-port", str(self.metrics_port), *self.extra],
                stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


def start_controllers(kubeconfig: Path, workdir: Path, identity: str = "ctl-a", *extra: str) -> ControllersProcess:
    return ControllersProcess(kubeconfig, workdir / f"controllers-{identity}.log", identity, free_port(),
                              list(extra)).start()


async def kubectl(kubeconfig: Path, *args: str, check: bool = True, timeout: float = 90) -> str:
    proc = await asyncio.create_subprocess_exec(
        "kubectl", "--kubeconfig", str(kubeconfig), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"kubectl {' '.join(args)} timed out after {timeout}s") from None
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {err.decode()}{out.decode()}")
    return out.decode() + (err.decode() if not check else "")


def _http_get(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def http_get(url: str) -> tuple[int, str]:
    """A plain HTTP GET off the event loop: (status, body); raises OSError when nothing listens."""
    return await asyncio.to_thread(_http_get, url)


async def eventually(fn, timeout: float = 60.0, interval: float = 0.3, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll an async or plain predicate until it returns a truthy value; that value is returned."""
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = fn()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")
