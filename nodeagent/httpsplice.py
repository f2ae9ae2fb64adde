"""Splice an upgraded HTTP connection (exec over WebSocket or SPDY) to another server.

Both the apiserver (pods/exec -> kubelet) and the kubelet (exec -> containerd's streaming server)
pass an `Upgrade` request through unchanged: they re-send its head to the next hop and then copy
bytes both ways. aiohttp owns the client's connection, so after the head is sent we replace its
payload parser (client -> upstream bytes) and return a response that writes nothing. A shared
leaf module, like nodeagent.netns."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web


class _Hijacked(web.StreamResponse):
    """Returned once the connection was taken over: aiohttp must not write anything more."""

    async def prepare(self, request: web.BaseRequest) -> Any:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


class _Forward:
    """Stands in for aiohttp's payload parser after an upgrade: client bytes go upstream."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    def feed_data(self, data: bytes | bytearray | memoryview) -> tuple[bool, bytes]:
        self.writer.write(bytes(data))
        return False, b""

    def feed_eof(self) -> None:
        try:
            if self.writer.can_write_eof():
                self.writer.write_eof()
        except OSError:
            pass


async def splice_upgrade(request: web.Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         head: list[str]) -> web.StreamResponse:
    """Send the request head (request line and headers) upstream, then copy bytes both ways until
    either side closes. Raises ConnectionError if the client went away before the upgrade."""
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    transport = request.transport
    if transport is None:
        writer.close()
        raise ConnectionError("the client connection closed before the upgrade")
    request.protocol.set_parser(_Forward(writer))  # type: ignore[arg-type]
    try:
        while True:
            data = await reader.read(65536)
            if not data or transport.is_closing():
                break
            transport.write(data)
    except OSError:
        pass
    finally:
        writer.close()
        transport.close()
    return _Hijacked()
