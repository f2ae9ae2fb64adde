"""`nodeagent-bridge` in Python: forward the call to the node's CNI daemon, else do it here.

Used when the C shim (shim.c, built by nodeagent.cni.install) cannot be compiled. It imports only
os, sys, socket and the wire format (protocol.py) before knowing whether a daemon answers, so a call served by the daemon costs
one interpreter start; json and pyroute2 are imported only on the standalone path.
"""

from __future__ import annotations

import os
import socket
import sys

from nodeagent.cni.protocol import encode_request  # no imports of its own: the fast path stays lean

DEFAULT_SOCKET = "/var/run/nodeagent/cni/daemon.sock"
KEY = b'"daemonSocket"'


def socket_path(stdin: bytes) -> str:
    """The netconf's "daemonSocket" string, found without a JSON parser (as the C shim does)."""
    i = stdin.find(KEY)
    if i < 0:
        return DEFAULT_SOCKET
    rest = stdin[i + len(KEY) :].lstrip()
    if not rest.startswith(b":"):
        return DEFAULT_SOCKET
    rest = rest[1:].lstrip()
    if not rest.startswith(b'"'):
        return DEFAULT_SOCKET
    end = rest.find(b'"', 1)
    value = rest[1:end]
    return value.decode() if end > 1 and b"\\" not in value else DEFAULT_SOCKET


def forward(path: str, env: dict[str, str], stdin: bytes) -> tuple[int, bytes] | None:
    """The daemon's (exit code, stdout), or None when no daemon answered."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        s.sendall(encode_request(env, stdin))
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    except OSError:
        return None
    finally:
        s.close()
    head, sep, out = b"".join(chunks).partition(b"\n")
    if not sep or not head.isdigit():
        return None  # the daemon died mid-call: the standalone path redoes it (ADD is retry-safe)
    return int(head), out


def main() -> int:
    stdin = sys.stdin.buffer.read()
    env = dict(os.environ)
    got = forward(socket_path(stdin), env, stdin)
    if got is None:
        from nodeagent.cni.main import run_standalone

        got = run_standalone(env, stdin)
    code, out = got
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
