"""A loopback TCP forwarder from the host into a cluster namespace.

The host's root namespace has no link to a local cluster (topology.py), so kubectl on the host
reaches the apiserver through this process: it listens on 127.0.0.1:PORT in the root namespace and,
for every connection, opens a socket *inside* the control-plane namespace (a socket belongs to the
namespace it was created in, whichever thread uses it later) and copies bytes both ways. TLS passes
through untouched: the serving certificate carries 127.0.0.1 as a SAN.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket

from nodeagent.netns import arun_in_netns

log = logging.getLogger(__name__)

BUFSIZE = 64 * 1024


def _new_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    return s


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(BUFSIZE):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


class Forwarder:
    def __init__(self, netns: str | None, target_host: str, target_port: int) -> None:
        """netns None: connect from the caller's own namespace."""
        self.netns = netns
        self.target = (target_host, target_port)

    async def handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            sock = await arun_in_netns(self.netns, _new_socket) if self.netns else _new_socket()
            try:
                await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, self.target), 10)
            except (OSError, TimeoutError) as e:
                sock.close()
                log.warning("forward connect failed netns=%s target=%s:%d err=%s", self.netns, *self.target, e)
                return
            u_reader, u_writer = await asyncio.open_connection(sock=sock)
            try:
                await asyncio.gather(_pipe(c_reader, u_writer), _pipe(u_reader, c_writer))
            finally:
                u_writer.close()
        finally:
            c_writer.close()

    async def serve(self, listen_host: str, listen_port: int) -> None:
        server = await asyncio.start_server(self.handle, listen_host, listen_port, reuse_address=True)
        log.info("forwarding listen=%s:%d netns=%s target=%s:%d", listen_host, listen_port, self.netns, *self.target)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            await stop.wait()
        log.info("forwarder stopped listen=%s:%d", listen_host, listen_port)


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
