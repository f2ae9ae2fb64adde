"""Create and remove test network namespaces (with iproute2, which is test set-up, not product code)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time

from nodeagent.netns import run_in_netns


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


class NetnsForwarder:
    """A TCP port forward from inside a network namespace to the test's own (root) namespace.

    The test apiserver listens on 127.0.0.1 of the root namespace, which a component running inside
    a node namespace cannot reach. The listening socket is opened inside the namespace (a socket
    stays in the namespace it was created in) and each accepted connection is piped to the target
    by threads of the test process: userspace only, nothing is added to the root namespace.
    `port` 0 picks a free one; read `.port` after start().
    """

    def __init__(self, ns: str, port: int = 0, target_host: str = "127.0.0.1",
                 target_port: int | None = None) -> None:
        self.ns = ns
        self.port = port
        self.target = (target_host, target_port or port)
        self._conns: list[socket.socket] = []
        self._lsock: socket.socket | None = None

    def start(self) -> NetnsForwarder:
        self._lsock = run_in_netns(self.ns, _listener, "127.0.0.1", self.port)
        self.port = int(self._lsock.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True, name=f"fwd:{self.ns}").start()
        return self

    def _accept(self) -> None:
        assert self._lsock is not None
        while True:
            try:
                conn, _ = self._lsock.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.target, timeout=5)
                up.settimeout(None)
            except OSError:
                conn.close()
                continue
            self._conns += [conn, up]
            threading.Thread(target=_pump, args=(conn, up), daemon=True).start()
            threading.Thread(target=_pump, args=(up, conn), daemon=True).start()

    def stop(self) -> None:
        if self._lsock is not None:
            with contextlib.suppress(OSError):
                self._lsock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            self._lsock.close()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()

    close = stop


def _listener(host: str, port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(64)
    return s


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
