"""The three VMs of vagrant/ as the e2e sees them: kubectl on this host (build/vagrant/admin.kubeconfig,
server https://192.168.56.10:6443), ssh into a VM through `vagrant ssh-config`, vagrant itself."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(what: str, fn: Callable[[], T | None], timeout: float, every: float = 3.0) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, RuntimeError, ValueError) as e:
            last = e
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


@dataclass
class Lab:
    build: Path

    @property
    def kubeconfig(self) -> Path:
        return self.build / "admin.kubeconfig"

    @property
    def ssh_config(self) -> Path:
        return self.build / "ssh_config"

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args], input=input,
                           capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {p.stderr.strip()}")
        return p

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", "-o", "json", *args).stdout)

    def ssh(self, vm: str, script: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a shell script as root on a VM."""
        p = subprocess.run(["ssh", "-F", str(self.ssh_config), "-o", "LogLevel=ERROR", vm, "--",
                            "sudo", "bash", "-c", shlex.quote(script)],
                           capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"on {vm}: {script!r} exited {p.returncode}: {p.stderr.strip()[-2000:]}")
        return p

    def ssh_bg(self, vm: str, script: str) -> subprocess.Popen[str]:
        return subprocess.Popen(["ssh", "-F", str(self.ssh_config), "-o", "LogLevel=ERROR", vm, "--",
                                 "sudo", "bash", "-c", shlex.quote(script)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def vagrant(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "VAGRANT_DEFAULT_PROVIDER": "libvirt"}
        p = subprocess.run(["nice", "-n", os.environ.get("NODEAGENT_VAGRANT_NICE", "15"), "vagrant", *args],
                           cwd=REPO / "vagrant", env=env, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"vagrant {' '.join(args)}: {p.stdout[-2000:]}{p.stderr[-2000:]}")
        return p

    def refresh_ssh_config(self) -> None:
        out = self.vagrant("ssh-config", "server", "agent1", "agent2", timeout=300).stdout
        self.ssh_config.write_text(out)
