"""`nodeagent cni-daemon` against a real apiserver: the conflist appears once our Node has a
podCIDR, and host-gw routes follow the other Nodes (added, removed, repaired by hand)."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nodeagent.client import Client, ClientConfig
from nodeagent.machinery.kinds import NODES
from tests.helpers.apiserver import ApiServerProcess
from tests.helpers.cni_node import CniNode, connect_to_switch, ns_run
from tests.helpers.dns_relay import NetnsRelay, kubeconfig_via

pytestmark = pytest.mark.root


def node_obj(name: str, cidr: str | None, ip: str) -> dict[str, Any]:
    spec = {"podCIDR": cidr, "podCIDRs": [cidr]} if cidr else {}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": spec,
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


async def until(cond: Callable[[], bool], what: str, node: CniNode, timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(cond):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; daemon log:\n{node.daemon_log()}")
        await asyncio.sleep(0.1)


def our_routes(ns: str) -> list[str]:
    return [r for r in ns_run(ns, ["ip", "route", "show", "proto", "151"]).stdout.splitlines() if r]


async def test_daemon_writes_conflist_and_follows_nodes(apiserver: ApiServerProcess,
                                                         netns_factory: Callable[[str], str], tmp_path: Path) -> None:
    switch, node_ns = netns_factory("sw"), netns_factory("cnode")
    connect_to_switch(switch, node_ns, "192.168.56.41/24", "pd")
    relay = NetnsRelay(node_ns, ("127.0.0.1", apiserver.port))
    node = None
    try:
        kc = kubeconfig_via(apiserver.kubeconfig_for_user("system:nodeagent:cni-daemon"), relay.port, tmp_path / "kubeconfig")
        async with Client(ClientConfig.from_kubeconfig(str(apiserver.kubeconfig))) as c:
            await c.create(NODES, node_obj(node_ns, None, "192.168.56.41"))
            await c.create(NODES, node_obj("peer-1", "10.244.21.0/24", "192.168.56.42"))
            node = CniNode(node_ns, str(tmp_path), "10.244.20.0/24")
            node.start_daemon("--kubeconfig", str(kc), "--route-resync-period", "0.3",
                              "--machine-resync-period", "0.5")
            conflist = tmp_path / "cni" / "net.d" / "10-nodeagent.conflist"

            await until(lambda: [r.split()[:3] for r in our_routes(node_ns)] == [["10.244.21.0/24", "via", "192.168.56.42"]],
                        "route to peer-1", node)
            assert not conflist.exists()  # no podCIDR on our Node yet: containerd must wait

            await c.patch(NODES, node_ns, {"spec": {"podCIDR": "10.244.20.0/24", "podCIDRs": ["10.244.20.0/24"]}})
            await until(conflist.exists, "conflist", node)
            data = json.loads(conflist.read_text())
            assert [p["type"] for p in data["plugins"]] == ["nodeagent-bridge", "portmap", "bandwidth"]
            ours = data["plugins"][0]
            assert ours["ipam"]["ranges"] == [[{"subnet": "10.244.20.0/24"}]]
            assert ours["daemonSocket"] == node.socket
            assert sorted(os.listdir(tmp_path / "cni" / "bin")) == sorted(
                ["nodeagent-bridge", "loopback", "portmap", "bandwidth", "host-local"])

            # the written config works as containerd would use it (one plugin of the list)
            pod = netns_factory("pod")
            plugin_conf = {"cniVersion": data["cniVersion"], "name": data["name"], **ours}
            result = await asyncio.to_thread(node.add, "ctr-d", pod, conf=plugin_conf)
            assert result["ips"][0]["address"].startswith("10.244.20.")

            await c.create(NODES, node_obj("peer-2", "10.244.22.0/24", "192.168.56.43"))
            await until(lambda: len(our_routes(node_ns)) == 2, "route to peer-2", node)
            await c.delete(NODES, "peer-1")
            await until(lambda: [r.split()[0] for r in our_routes(node_ns)] == ["10.244.22.0/24"],
                        "route of deleted peer-1 gone", node)
            ns_run(node_ns, ["ip", "route", "del", "10.244.22.0/24"])
            await until(lambda: [r.split()[0] for r in our_routes(node_ns)] == ["10.244.22.0/24"],
                        "route removed by hand repaired", node)

            # the masquerade jump removed by hand is put back by the daemon's resync
            jump = next(line for line in ns_run(node_ns, ["iptables-legacy-save", "-t", "nat"]).stdout.splitlines()
                        if line.startswith("-A POSTROUTING") and "NODEAGENT-MASQ-" in line)
            ns_run(node_ns, ["iptables-legacy", "-t", "nat", "-D", *shlex.split(jump)[1:]])
            await until(lambda: jump in ns_run(node_ns, ["iptables-legacy-save", "-t", "nat"]).stdout,
                        "masquerade jump restored", node)
            assert (await asyncio.to_thread(node.call, "DEL", "ctr-d", pod, "eth0", plugin_conf))[0] == 0
    finally:
        if node is not None:
            node.stop_daemon()
        relay.close()
