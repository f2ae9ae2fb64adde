"""Create and remove test network namespaces (with iproute2, which is test set-up, not product code)."""

from __future__ import annotations

import os
import signal
import subprocess
import time


def make_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)


def netns_pids(name: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def delete_netns(name: str) -> None:
    """Kill what still runs in the namespace, then delete it (links inside go with it)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = netns_pids(name)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while netns_pids(name) and time.monotonic() < deadline:
            time.sleep(0.05)
    subprocess.run(["ip", "netns", "delete", name], capture_output=True)
