"""A DNS server on 127.0.0.1 (a random port) fed by informers on a FakeClient."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from dnslib import DNSRecord

from nodeagent.dns.app import DnsApp, DnsOptions
from nodeagent.machinery.kinds import ENDPOINTSLICES, SERVICES
from tests.helpers.dns_client import query, send_raw
from tests.helpers.fake_client import FakeClient


@dataclass
class DnsUnderTest:
    client: FakeClient
    app: DnsApp
    host: str = "127.0.0.1"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.app.port

    async def q(self, name: str, qtype: str = "A", tcp: bool = False, edns: int | None = None) -> DNSRecord:
        return await query(self.host, self.port, name, qtype, tcp=tcp, edns=edns)

    async def raw(self, data: bytes, tcp: bool = False, timeout: float = 3.0) -> bytes | None:
        return await send_raw(self.host, self.port, data, tcp=tcp, timeout=timeout)

    async def until(self, cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
        """Wait for the informers to deliver a change (eventual consistency, not a timing check)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not cond():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"never happened: {what}")
            await asyncio.sleep(0.01)


@pytest.fixture
def fake() -> FakeClient:
    return FakeClient()


@pytest.fixture
async def make_dns(fake: FakeClient) -> AsyncIterator[Callable[..., Any]]:
    apps: list[DnsApp] = []

    async def factory(objects: list[dict[str, Any]] = (), **opts: Any) -> DnsUnderTest:  # type: ignore[assignment]
        for obj in objects:
            fake.seed(SERVICES if obj["kind"] == "Service" else ENDPOINTSLICES, obj)
        bind = opts.pop("bind", "127.0.0.1")
        app = DnsApp(fake, DnsOptions(bind=bind, port=0, metrics_port=opts.pop("metrics_port", 0), **opts))
        apps.append(app)
        await asyncio.wait_for(app.start(), 10)
        return DnsUnderTest(fake, app, host=bind)

    yield factory
    for app in apps:
        await app.stop()
    await fake.close()
