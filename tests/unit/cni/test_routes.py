"""Route sync logic with FakeClient and fake route tables (no netlink)."""

from __future__ import annotations

import asyncio
from typing import Any

from nodeagent.client import Informer
from nodeagent.cni.routes import HostGw, RouteSyncer, Vxlan, desired_routes, vtep_mac
from nodeagent.machinery.kinds import NODES
from tests.helpers.fake_client import FakeClient


def node(name: str, cidr: str | None, ip: str | None) -> dict[str, Any]:
    n: dict[str, Any] = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}, "status": {}}
    if cidr:
        n["spec"] = {"podCIDR": cidr, "podCIDRs": [cidr]}
    if ip:
        n["status"] = {"addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}]}
    return n


class FakeTable:
    def __init__(self) -> None:
        self.table: dict[str, str | None] = {"192.168.0.0/16": "10.0.0.1"}  # someone else's... not ours
        self.ours: dict[str, str | None] = {}
        self.ops: list[tuple[str, str]] = []

    def routes(self) -> dict[str, str | None]:
        return dict(self.ours)

    def replace(self, dst: str, gateway: str, dev: str | None = None, onlink: bool = False) -> None:
        self.ours[dst] = gateway
        self.ops.append(("replace", dst))

    def delete(self, dst: str) -> None:
        self.ours.pop(dst, None)
        self.ops.append(("delete", dst))


def test_desired_routes_skip_self_and_incomplete_nodes() -> None:
    nodes = [node("a", "10.244.0.0/24", "192.168.56.10"), node("b", "10.244.1.0/24", "192.168.56.11"),
             node("c", None, "192.168.56.12"), node("d", "10.244.3.0/24", None)]
    got = desired_routes(nodes, "a")
    assert {k: v.node_ip for k, v in got.items()} == {"10.244.1.0/24": "192.168.56.11"}


def test_host_gw_sync_adds_removes_and_is_idempotent() -> None:
    t = FakeTable()
    gw = HostGw(t)
    t.ours["10.244.9.0/24"] = "192.168.56.99"  # a deleted node's route
    want = desired_routes([node("b", "10.244.1.0/24", "192.168.56.11")], "a")
    r = gw.sync(want)
    assert r.added == ("10.244.1.0/24",) and r.removed == ("10.244.9.0/24",)
    assert t.ours == {"10.244.1.0/24": "192.168.56.11"}
    t.ops.clear()
    assert gw.sync(want).added == () and t.ops == []
    # the node moved to another address: the route is replaced, not duplicated
    r = gw.sync(desired_routes([node("b", "10.244.1.0/24", "192.168.56.21")], "a"))
    assert t.ours == {"10.244.1.0/24": "192.168.56.21"}


class FakeVxlanLinks:
    def __init__(self) -> None:
        self.device: tuple[str, str, str] | None = None
        self.rt: dict[str, str | None] = {}
        self.fdb: dict[str, str] = {}
        self.neigh: dict[str, str] = {}

    def ensure_device(self, local_ip: str, mac: str, address: str) -> int:
        self.device = (local_ip, mac, address)
        return 7

    def routes(self) -> dict[str, str | None]:
        return dict(self.rt)

    def replace_route(self, dst: str, gateway: str, index: int) -> None:
        assert index == 7
        self.rt[dst] = gateway

    def delete_route(self, dst: str) -> None:
        self.rt.pop(dst)

    def peers(self, index: int) -> dict[str, str]:
        return dict(self.fdb)

    def replace_peer(self, index: int, mac: str, remote_ip: str, vtep: str) -> None:
        self.fdb[mac] = remote_ip
        self.neigh[vtep] = mac

    def delete_peer(self, index: int, mac: str, remote_ip: str, vtep: str | None) -> None:
        self.fdb.pop(mac)
        self.neigh = {k: v for k, v in self.neigh.items() if v != mac}


def test_vxlan_sync_programs_route_neighbour_and_fdb() -> None:
    links = FakeVxlanLinks()
    vx = Vxlan(links, "192.168.56.10", "10.244.0.0/24")
    vx.sync(desired_routes([node("b", "10.244.1.0/24", "10.9.0.11")], "a"))
    assert links.device == ("192.168.56.10", vtep_mac("192.168.56.10"), "10.244.0.0")
    assert links.rt == {"10.244.1.0/24": "10.244.1.0"}
    assert links.fdb == {"0a:4e:0a:09:00:0b": "10.9.0.11"} and links.neigh == {"10.244.1.0": "0a:4e:0a:09:00:0b"}
    r = vx.sync({})
    assert r.removed == ("10.244.1.0/24",) and links.rt == {} and links.fdb == {} and links.neigh == {}


async def test_syncer_follows_nodes_and_repairs_removed_routes() -> None:
    fc = FakeClient()
    await fc.create(NODES, node("a", "10.244.0.0/24", "192.168.56.10"))
    await fc.create(NODES, node("b", "10.244.1.0/24", "192.168.56.11"))
    informer = Informer(fc, NODES)  # type: ignore[arg-type]
    table = FakeTable()
    syncer = RouteSyncer(informer, "a", lambda own: HostGw(table) if own else None, resync_period=0.05)
    tasks = [asyncio.create_task(informer.run()), asyncio.create_task(syncer.run())]

    async def until(cond: Any) -> None:
        for _ in range(200):
            if cond():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"condition never held; routes={table.ours}")

    try:
        await until(lambda: table.ours == {"10.244.1.0/24": "192.168.56.11"})
        await fc.create(NODES, node("c", "10.244.2.0/24", "192.168.56.12"))
        await until(lambda: table.ours.get("10.244.2.0/24") == "192.168.56.12")
        await fc.delete(NODES, "b")
        await until(lambda: "10.244.1.0/24" not in table.ours)
        table.ours.pop("10.244.2.0/24")  # removed by hand: the periodic resync puts it back
        await until(lambda: table.ours == {"10.244.2.0/24": "192.168.56.12"})
        assert "192.168.0.0/16" not in table.ops  # never touched a route that is not ours
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
