"""The one helper for doing work inside a network namespace.

setns(2) changes the namespace of the calling *thread* only, so work is run on a fresh thread that
enters the namespace, runs the function, and dies; the caller's thread (and the event loop) never
changes namespace. The function must return plain data: sockets or pyroute2 objects opened inside
the namespace stay bound to it.

Beware pyroute2 0.9: an IPRoute opens its netlink socket per calling *thread*, so an IPRoute created
inside run_in_netns and later used from another thread silently acts in that thread's namespace
(possibly the root one). Keep every use of such an object on the thread that entered the namespace
(nodeagent.cni.routes pins its calls to one thread for this reason). (containernetworking/plugins pkg/ns `Do` works the same way.)
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(name_or_path: str) -> str:
    """A namespace given by `ip netns` name or by path (/proc/PID/ns/net, /var/run/netns/x)."""
    return name_or_path if "/" in name_or_path else os.path.join(NETNS_RUN_DIR, name_or_path)


def setns(path: str) -> None:
    """Move the calling thread into the network namespace at `path`."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in_netns(path: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run fn(*args, **kwargs) on a new thread inside the netns at `path`; return its result.

    Exceptions raised by fn (or by entering the namespace) are re-raised in the caller.
    """
    path = netns_path(path)
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            setns(path)
            result.append(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            error.append(e)

    t = threading.Thread(target=target, name=f"netns:{os.path.basename(path)}", daemon=True)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


async def arun_in_netns(path: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """run_in_netns without blocking the event loop."""
    return await asyncio.to_thread(run_in_netns, path, fn, *args, **kwargs)


def nsenter_argv(path: str) -> list[str]:
    """Prefix that runs a command in the netns only (unlike `ip netns exec`, which remounts /sys
    and hides the cgroup mounts runc needs; see shared/ENVIRONMENT.md)."""
    return ["nsenter", f"--net={netns_path(path)}", "--"]
