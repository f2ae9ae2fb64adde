"""The HTTP layer in-process (no root): watch ERROR 410, bookmarks, allocations across restart."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nodeagent.api.server import ApiServer, ServerConfig
from nodeagent.api.tokens import read_tokens


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Client:
    def __init__(self, server: ApiServer) -> None:
        self.server = server
        cfg = server.cfg
        self.base = f"https://127.0.0.1:{cfg.port}"
        token = next(t for t, u in read_tokens(cfg.data_dir).items() if u.name == "admin")
        ctx = ssl.create_default_context(cafile=str(cfg.data_dir / "pki" / "ca.crt"))
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx),
                                             headers={"Authorization": f"Bearer {token}"})

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, self.base + path, json=body) as r:
            return r.status, await r.json()

    async def watch_lines(self, path: str, n: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        async with self.session.get(self.base + path, timeout=aiohttp.ClientTimeout(total=20)) as r:
            assert r.status == 200
            async for line in r.content:
                out.append(json.loads(line))
                if len(out) >= n:
                    break
        return out


async def _start(data_dir: Path, port: int, **kw: Any) -> ApiServer:
    s = ApiServer(ServerConfig(data_dir=data_dir, port=port, compaction_interval=0, **kw))
    await s.start()
    return s


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ApiServer]:
    s = await _start(tmp_path, _free_port(), bookmark_interval=0.2)
    try:
        yield s
    finally:
        await s.stop()


async def test_watch_from_compacted_revision_is_an_error_event(server: ApiServer) -> None:
    c = Client(server)
    try:
        code, cm = await c.call("POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "a"}})
        assert code == 201
        for i in range(3):
            async with c.session.patch(c.base + "/api/v1/namespaces/default/configmaps/a",
                                       data=json.dumps({"data": {"i": str(i)}}),
                                       headers={"Content-Type": "application/merge-patch+json"}) as r:
                assert r.status == 200
        await server.store.compact(server.store.revision - 1)
        rv = cm["metadata"]["resourceVersion"]
        (ev,) = await c.watch_lines(f"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}", 1)
        assert ev["type"] == "ERROR"
        assert ev["object"]["kind"] == "Status" and ev["object"]["code"] == 410
        assert ev["object"]["reason"] == "Expired"
    finally:
        await c.session.close()


async def test_watch_bookmarks_carry_the_current_revision(server: ApiServer) -> None:
    c = Client(server)
    try:
        code, listing = await c.call("GET", "/api/v1/namespaces/default/configmaps")
        rv = listing["metadata"]["resourceVersion"]
        events = await c.watch_lines(
            f"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&allowWatchBookmarks=true", 2)
        assert [e["type"] for e in events] == ["BOOKMARK", "BOOKMARK"]
        assert events[0]["object"]["kind"] == "ConfigMap"
        assert int(events[1]["object"]["metadata"]["resourceVersion"]) >= int(rv)
    finally:
        await c.session.close()


async def test_allocations_survive_restart(tmp_path: Path) -> None:
    port = _free_port()
    s = await _start(tmp_path, port, service_cluster_ip_range="10.96.0.0/29", service_node_port_range="30000-30001")
    c = Client(s)
    try:
        ips, ports = set(), set()
        for i in range(2):
            code, svc = await c.call("POST", "/api/v1/namespaces/default/services",
                                     {"metadata": {"name": f"s{i}"},
                                      "spec": {"type": "NodePort", "ports": [{"port": 80}]}})
            assert code == 201, svc
            ips.add(svc["spec"]["clusterIP"])
            ports.add(svc["spec"]["ports"][0]["nodePort"])
    finally:
        await c.session.close()
        await s.stop()
    s = await _start(tmp_path, port, service_cluster_ip_range="10.96.0.0/29", service_node_port_range="30000-30001")
    c = Client(s)
    try:
        # /29: .0 network, .7 broadcast, .1 kubernetes: 5 usable, 2 taken before the restart.
        new_ips = set()
        for i in range(3):
            code, svc = await c.call("POST", "/api/v1/namespaces/default/services",
                                     {"metadata": {"name": f"t{i}"}, "spec": {"ports": [{"port": 80}]}})
            assert code == 201, svc
            new_ips.add(svc["spec"]["clusterIP"])
        assert not new_ips & ips and len(new_ips) == 3
        code, full = await c.call("POST", "/api/v1/namespaces/default/services",
                                  {"metadata": {"name": "np"}, "spec": {"type": "NodePort", "ports": [{"port": 1}]}})
        assert code == 422 and "range is full" in full["message"]
        code, _ = await c.call("DELETE", "/api/v1/namespaces/default/services/s0")
        assert code == 200
        code, svc = await c.call("POST", "/api/v1/namespaces/default/services",
                                 {"metadata": {"name": "np"}, "spec": {"type": "NodePort", "ports": [{"port": 1}]}})
        assert code == 201 and svc["spec"]["ports"][0]["nodePort"] in ports
    finally:
        await c.session.close()
        await s.stop()


async def test_insecure_port_is_loopback_plain_http(tmp_path: Path) -> None:
    port, plain = _free_port(), _free_port()
    s = await _start(tmp_path, port, insecure_port=plain)
    try:
        async with aiohttp.ClientSession() as sess, sess.get(f"http://127.0.0.1:{plain}/readyz") as r:
            assert r.status == 200 and await r.text() == "ok"
        async with aiohttp.ClientSession() as sess, sess.get(f"http://127.0.0.1:{plain}/api/v1/pods") as r:
            assert r.status == 401
    finally:
        await s.stop()


async def test_kubernetes_service_endpoints_follow_the_advertise_address(tmp_path: Path) -> None:
    port = _free_port()
    s = await _start(tmp_path, port, advertise_address="127.0.0.1")
    c = Client(s)
    try:
        code, ep = await c.call("GET", "/api/v1/namespaces/default/endpoints/kubernetes")
        assert code == 200
        assert ep["subsets"] == [{"addresses": [{"ip": "127.0.0.1"}],
                                  "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]
        code, es = await c.call("GET", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes")
        assert code == 200 and es["endpoints"][0]["addresses"] == ["127.0.0.1"]
        code, svc = await c.call("GET", "/api/v1/namespaces/default/services/kubernetes")
        assert svc["spec"]["clusterIP"] == "10.96.0.1" and svc["spec"]["ports"][0]["port"] == 443
    finally:
        await c.session.close()
        await s.stop()
