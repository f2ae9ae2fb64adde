"""A TCP port forward from inside a network namespace to the test's own (root) namespace.

The test apiserver listens on 127.0.0.1 of the root namespace, which a proxy running inside a node
namespace cannot reach. The listening socket is opened inside the node namespace (a socket stays in
the namespace it was created in) and each accepted connection is piped to the apiserver from the
test process: userspace only, nothing is added to the root namespace.
"""

from __future__ import annotations

import socket
import threading

from nodeagent.netns import run_in_netns


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
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class NetnsForwarder:
    def __init__(self, ns: str, port: int, target_host: str = "127.0.0.1", target_port: int | None = None) -> None:
        self.ns = ns
        self.port = port
        self.target = (target_host, target_port or port)
        self._conns: list[socket.socket] = []
        self._lsock: socket.socket | None = None

    def start(self) -> NetnsForwarder:
        self._lsock = run_in_netns(self.ns, _listener, "127.0.0.1", self.port)
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
            try:
                self._lsock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            except OSError:
                pass
            self._lsock.close()
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass
