"""Test plumbing for running `nodeagent dns` inside a network namespace against the apiserver fixture
(which listens on the root namespace's loopback), without adding any link to the root namespace.

NetnsRelay is tests.helpers.netns.NetnsForwarder on a free port; a kubeconfig pointing at the
relay's loopback address then works from inside.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import yaml

from nodeagent.netns import nsenter_argv
from tests.helpers.netns import NetnsForwarder


def NetnsRelay(netns: str, target: tuple[str, int]) -> NetnsForwarder:  # noqa: N802 - reads as a class
    """A forwarder from a free loopback port inside `netns` to `target` in the root namespace."""
    return NetnsForwarder(netns, 0, target[0], target[1]).start()


def kubeconfig_via(kubeconfig: Path, port: int, out: Path) -> Path:
    """A copy of `kubeconfig` whose clusters point at https://127.0.0.1:port."""
    cfg = yaml.safe_load(kubeconfig.read_text())
    for c in cfg.get("clusters") or []:
        c["cluster"]["server"] = f"https://127.0.0.1:{port}"
    out.write_text(yaml.safe_dump(cfg))
    return out


def start_in_netns(netns: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        return subprocess.Popen([*nsenter_argv(netns), *argv], stdout=f, stderr=subprocess.STDOUT)


def nodeagent_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "nodeagent", *args]


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def wait_for(cond: object, what: str, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None,
             log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cond():  # type: ignore[operator]
                return
        except (OSError, TimeoutError):
            pass
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited {proc.returncode}: "
                                 f"{log.read_text()[-3000:] if log else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}: {log.read_text()[-3000:] if log else ''}")
        time.sleep(0.1)


def add_veth(ns_a: str, ns_b: str, addr_a: str, addr_b: str, prefix: int = 24) -> None:
    """A veth pair between two test namespaces, made inside ns_a (never in the root namespace)."""
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("ip", "-n", ns_a, "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b", "netns", ns_b)
    run("ip", "-n", ns_a, "addr", "add", f"{addr_a}/{prefix}", "dev", "veth-a")
    run("ip", "-n", ns_b, "addr", "add", f"{addr_b}/{prefix}", "dev", "veth-b")
    run("ip", "-n", ns_a, "link", "set", "veth-a", "up")
    run("ip", "-n", ns_b, "link", "set", "veth-b", "up")
