"""Start a real `nodeagent apiserver` subprocess for tests, with an admin kubeconfig."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ApiServerProcess:
    data_dir: Path
    port: int
    url: str
    kubeconfig: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def kubeconfig_for_node(self, node: str) -> Path:
        out = self.data_dir / f"kubeconfig-{node}"
        subprocess.run(
            [sys.executable, "-m", "nodeagent", "kubeconfig", "--data-dir", str(self.data_dir),
             "--server", self.url, "--user", "node", node, "-o", str(out)],
            check=True,
        )
        return out

    def kubeconfig_for_user(self, user: str) -> Path:
        """A client-certificate kubeconfig for a component identity (system:kube-proxy, ...),
        as `cluster up` gives each component its own."""
        out = self.data_dir / f"kubeconfig-{user.replace(':', '_')}"
        subprocess.run(
            [sys.executable, "-m", "nodeagent", "kubeconfig", "--data-dir", str(self.data_dir),
             "--server", self.url, "--user", user, "-o", str(out)],
            check=True,
        )
        return out

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def restart(self) -> None:
        if self.proc.poll() is None:
            self.stop()
        self.proc = _spawn(self.data_dir, self.port, self.log)
        _wait_ready(self)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _spawn(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "nodeagent", "apiserver", "--data-dir", str(data_dir),
             "--bind-address", "127.0.0.1", "--port", str(port),
             # no controller makes the `default` service accounts the ServiceAccount plugin requires
             "--disable-admission-plugins", "ServiceAccount"],
            stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def _wait_ready(server: ApiServerProcess, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    ca = server.data_dir / "pki" / "ca.crt"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"apiserver exited with {server.proc.returncode}: {server.log.read_text()[-3000:]}")
        if ca.exists():
            try:
                ctx = ssl.create_default_context(cafile=str(ca))
                with urllib.request.urlopen(f"{server.url}/readyz", context=ctx, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
        time.sleep(0.1)
    raise RuntimeError(f"apiserver not ready after {timeout}s: {server.log.read_text()[-3000:]}")


def start_apiserver(data_dir: Path, port: int | None = None) -> ApiServerProcess:
    port = port or free_port()
    log = data_dir / "apiserver.log"
    proc = _spawn(data_dir, port, log)
    url = f"https://127.0.0.1:{port}"
    server = ApiServerProcess(data_dir, port, url, data_dir / "kubeconfig-admin", proc, log)
    try:
        _wait_ready(server)
        subprocess.run(
            [sys.executable, "-m", "nodeagent", "kubeconfig", "--data-dir", str(data_dir),
             "--server", url, "--user", "admin", "-o", str(server.kubeconfig)],
            check=True,
        )
    except BaseException:
        server.stop()
        raise
    return server
