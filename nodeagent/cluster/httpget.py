"""Plain HTTP GETs sent from inside a network namespace (a pod's, a node's, the switch's).

Each request opens a new TCP connection, as `wget` in a loop would: kube-proxy picks a backend per
connection (a new conntrack entry), so reused connections would hide how it spreads traffic.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from nodeagent.netns import run_in_netns


@dataclass(frozen=True)
class Reply:
    status: int | None
    body: str
    error: str | None = None
    local_port: int | None = None  # the client's source port: finds the conntrack entry


def parse_response(raw: bytes) -> Reply:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return Reply(None, "", f"not an HTTP response: {raw[:80]!r}")
    return Reply(status, body.decode(errors="replace").strip())


def get(host: str, port: int, path: str = "/", timeout: float = 3.0) -> Reply:
    """One GET in the calling thread's namespace."""
    local_port = None
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            local_port = int(s.getsockname()[1])
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: nodeagent\r\n\r\n".encode())
            chunks = []
            while data := s.recv(65536):
                chunks.append(data)
    except OSError as e:
        return Reply(None, "", f"{type(e).__name__}: {e}", local_port)
    r = parse_response(b"".join(chunks))
    return Reply(r.status, r.body, r.error, local_port)


def get_many(host: str, port: int, count: int, path: str = "/", timeout: float = 3.0) -> list[Reply]:
    return [get(host, port, path, timeout) for _ in range(count)]


def get_many_in_netns(netns: str, host: str, port: int, count: int, path: str = "/",
                      timeout: float = 3.0) -> list[Reply]:
    return run_in_netns(netns, get_many, host, port, count, path, timeout)
