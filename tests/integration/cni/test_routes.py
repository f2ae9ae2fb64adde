"""Two nodes on an underlay bridge (in a "switch" namespace), routes from Node objects: a pod on
node A reaches a pod on node B with its own source address (seed 002: no NAT between pods).

The route loop runs in the test process against FakeClient, with its netlink socket opened inside
each node's namespace (a netlink socket stays bound to the namespace it was opened in)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from nodeagent.client import Informer
from nodeagent.cni.routes import HostGw, NetlinkRoutes, RouteSyncer, Vxlan
from nodeagent.cni.routewatch import RouteWatcher
from nodeagent.machinery.kinds import NODES
from nodeagent.netns import nsenter_argv
from tests.helpers.cni_node import cni_node, connect_to_switch, ns_run
from tests.helpers.fake_client import FakeClient

pytestmark = pytest.mark.root


def node_obj(name: str, cidr: str, ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


@contextlib.asynccontextmanager
async def route_loop(fc: FakeClient, ns: str, backend: str, ip: str, cidr: str,
                     resync_period: float = 0.2, watch: bool = False) -> AsyncIterator[RouteSyncer]:
    links = await asyncio.to_thread(NetlinkRoutes, ns)
    be = HostGw(links) if backend == "host-gw" else Vxlan(links, ip, cidr)
    informer = Informer(fc, NODES)
    syncer = RouteSyncer(informer, ns, lambda own: be if own else None, resync_period=resync_period)
    loop = asyncio.get_running_loop()
    watcher = RouteWatcher(lambda: loop.call_soon_threadsafe(syncer.trigger), ns) if watch else None
    if watcher is not None:
        await asyncio.to_thread(watcher.start)
    tasks = [asyncio.create_task(informer.run()), asyncio.create_task(syncer.run())]
    try:
        yield syncer
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if watcher is not None:
            await asyncio.to_thread(watcher.stop)
        links.close()


async def until(cond: Callable[[], bool], what: str, timeout: float = 15) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(cond):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def our_routes(ns: str) -> list[str]:
    return [line for line in ns_run(ns, ["ip", "route", "show", "proto", "151"]).stdout.splitlines() if line]


def capture_echo_source(pod_ns: str, ping_from: str, dst: str) -> str:
    """Source address of the ICMP echo request as it arrives on the destination pod's eth0."""
    dump = subprocess.Popen(nsenter_argv(pod_ns) + ["tcpdump", "-n", "-l", "-i", "eth0", "-c", "1",
                                                    "icmp[icmptype] == icmp-echo"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert dump.stderr is not None
        while "listening on" not in dump.stderr.readline():
            if dump.poll() is not None:
                raise AssertionError("tcpdump did not start")
        ns_run(ping_from, ["ping", "-c", "3", "-i", "0.2", "-W", "2", dst])
        out, _ = dump.communicate(timeout=10)
    finally:
        if dump.poll() is None:
            dump.kill()
            dump.wait()
    # "12:00:00.000000 IP 10.244.1.2 > 10.244.2.2: ICMP echo request, ..."
    return out.split(" IP ", 1)[1].split(" > ", 1)[0]


@pytest.mark.parametrize("backend", ["host-gw", "vxlan"])
async def test_pod_to_pod_across_nodes_keeps_its_source(backend: str, netns_factory: Callable[[str], str],
                                                        tmp_path: Path) -> None:
    switch = netns_factory("sw")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with cni_node(netns_factory, str(tmp_path / "a"), "10.244.1.0/24") as a, \
            cni_node(netns_factory, str(tmp_path / "b"), "10.244.2.0/24") as b:
        connect_to_switch(switch, a.ns, "192.168.56.11/24", "porta")
        connect_to_switch(switch, b.ns, "192.168.56.12/24", "portb")
        pod_a, pod_b = netns_factory("pa"), netns_factory("pb")
        ip_a = (await asyncio.to_thread(a.add, "ctr-a", pod_a))["ips"][0]["address"].split("/")[0]
        ip_b = (await asyncio.to_thread(b.add, "ctr-b", pod_b))["ips"][0]["address"].split("/")[0]

        fc = FakeClient()
        await fc.create(NODES, node_obj(a.ns, "10.244.1.0/24", "192.168.56.11"))
        await fc.create(NODES, node_obj(b.ns, "10.244.2.0/24", "192.168.56.12"))
        async with route_loop(fc, a.ns, backend, "192.168.56.11", "10.244.1.0/24"), \
                route_loop(fc, b.ns, backend, "192.168.56.12", "10.244.2.0/24"):
            want_a = "10.244.2.0/24 via 192.168.56.12" if backend == "host-gw" else "10.244.2.0/24 via 10.244.2.0 dev nodeagent.1"
            await until(lambda: any(r.startswith(want_a) for r in our_routes(a.ns)), f"route {want_a} on A")
            await until(lambda: len(our_routes(b.ns)) == 1, "route on B")
            assert len(our_routes(a.ns)) == 1  # exactly one route per other node

            src = await asyncio.to_thread(capture_echo_source, pod_b, pod_a, ip_b)
            assert src == ip_a  # not node A's 192.168.56.11: no NAT between pods

            # a route removed by hand comes back
            ns_run(a.ns, ["ip", "route", "del", "10.244.2.0/24"])
            await until(lambda: any(r.startswith(want_a) for r in our_routes(a.ns)), "repaired route on A")
            ns_run(pod_a, ["ping", "-c", "1", "-W", "2", ip_b])

            # a node that goes away takes its route with it; a new one brings its own
            await fc.delete(NODES, b.ns)
            await until(lambda: our_routes(a.ns) == [], "route of the deleted node removed")
            await fc.create(NODES, node_obj("node-c", "10.244.3.0/24", "192.168.56.13"))
            await until(lambda: any(r.startswith("10.244.3.0/24") for r in our_routes(a.ns)), "route to node-c")


async def test_a_route_deleted_by_hand_is_back_without_waiting_for_the_resync(
        netns_factory: Callable[[str], str]) -> None:
    node = netns_factory("rw")
    ns_run(node, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"])  # no dummy module here
    ns_run(node, ["ip", "link", "set", "eth0p", "up"])
    ns_run(node, ["ip", "addr", "add", "192.168.56.11/24", "dev", "eth0"])
    ns_run(node, ["ip", "link", "set", "eth0", "up"])
    fc = FakeClient()
    await fc.create(NODES, node_obj(node, "10.244.1.0/24", "192.168.56.11"))
    await fc.create(NODES, node_obj("peer", "10.244.2.0/24", "192.168.56.12"))
    # an hour between resyncs: only the deletion's notification can bring the route back in time
    async with route_loop(fc, node, "host-gw", "192.168.56.11", "10.244.1.0/24", resync_period=3600,
                          watch=True) as syncer:
        await until(lambda: [r.split()[:3] for r in our_routes(node)] == [["10.244.2.0/24", "via", "192.168.56.12"]],
                    "route")
        syncs = syncer.syncs
        ns_run(node, ["ip", "route", "del", "10.244.2.0/24"])
        await until(lambda: len(our_routes(node)) == 1, "route repaired", timeout=3)
        assert syncer.syncs > syncs
        # someone else's route going away is not ours to answer
        ns_run(node, ["ip", "route", "add", "10.9.0.0/16", "via", "192.168.56.1"])
        ns_run(node, ["ip", "route", "del", "10.9.0.0/16"])
        await asyncio.sleep(0.3)
        assert syncer.syncs == syncs + 1
