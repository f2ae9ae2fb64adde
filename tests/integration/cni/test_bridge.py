"""The bridge plugin on real netlink: each node and each pod is a network namespace.

The plugin is called as containerd calls it: the exec'd nodeagent-bridge inside the node's
namespace, served by the node's CNI daemon (or standalone where a test says so)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nodeagent.cni import masq
from nodeagent.cni.link import host_veth_name
from tests.helpers.cni_node import CniNode, addresses, cni_node, link_names, links_detail, ns_run

pytestmark = pytest.mark.root


@pytest.fixture
def node(netns_factory: Callable[[str], str], tmp_path: Path) -> Iterator[CniNode]:
    with cni_node(netns_factory, str(tmp_path), "10.244.7.0/24") as n:
        yield n


@pytest.fixture
def standalone(netns_factory: Callable[[str], str], tmp_path: Path) -> Iterator[CniNode]:
    with cni_node(netns_factory, str(tmp_path), "10.244.8.0/24", daemon=False) as n:
        yield n


def test_twenty_pods_get_distinct_addresses_and_reach_each_other(node: CniNode,
                                                                 netns_factory: Callable[[str], str]) -> None:
    pods = [netns_factory("pod") for _ in range(20)]
    with ThreadPoolExecutor(10) as pool:  # ADDs race for cni0 and the store
        results = list(pool.map(lambda i: node.add(f"ctr{i}", pods[i]), range(20)))
    ips = [r["ips"][0]["address"] for r in results]
    assert len(set(ips)) == 20
    assert all(ipaddress.ip_interface(a) in ipaddress.ip_network("10.244.7.0/24") for a in ips)
    assert all(r["ips"][0]["gateway"] == "10.244.7.1" for r in results)
    pod_if = results[0]["interfaces"][2]
    assert pod_if["name"] == "eth0" and pod_if["sandbox"] == f"/var/run/netns/{pods[0]}"
    assert results[0]["ips"][0]["interface"] == 2
    assert results[0]["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.7.1"}]
    assert addresses(node.ns, "cni0") == ["10.244.7.1/24"]
    assert len(node.bridge_ports()) == 20
    assert ns_run(node.ns, ["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip() == "1"
    assert addresses(pods[3], "eth0") == [ips[3]]
    for a, b in ((0, 19), (5, 11), (19, 0)):
        ns_run(pods[a], ["ping", "-c", "1", "-W", "2", ips[b].split("/")[0]])
    # ipMasq: our legacy chain with comments, reached from POSTROUTING for the pod subnet only
    save = ns_run(node.ns, ["iptables-legacy-save", "-t", "nat"]).stdout
    chain = masq.chain_name(node.network)
    assert "-A POSTROUTING -s 10.244.7.0/24 -m comment" in save and f"-j {chain}" in save
    assert f"-A {chain} -d 10.244.0.0/16" in save and "-j MASQUERADE" in save
    assert save.count(f"-j {chain}") == 1  # twenty racing ADDs added one jump

    for i in range(20):
        for _ in range(2):  # DEL twice: the second finds nothing and still succeeds
            code, out = node.call("DEL", f"ctr{i}", pods[i])
            assert code == 0 and out is None
    assert node.reservations() == {} and node.bridge_ports() == []
    assert link_names(pods[0]) == {"lo"}


def test_fifty_concurrent_adds_get_fifty_addresses(node: CniNode, netns_factory: Callable[[str], str]) -> None:
    pods = [netns_factory("p50") for _ in range(50)]
    with ThreadPoolExecutor(25) as pool:
        results = list(pool.map(lambda i: node.add(f"c50-{i}", pods[i]), range(50)))
    assert len({r["ips"][0]["address"] for r in results}) == 50
    assert len(node.reservations()) == 50


def test_del_after_netns_is_gone_releases_the_address(node: CniNode, netns_factory: Callable[[str], str]) -> None:
    pod = netns_factory("gone")
    node.add("ctr-gone", pod)
    assert len(node.reservations()) == 1
    subprocess.run(["ip", "netns", "delete", pod], check=True)
    code, out = node.call("DEL", "ctr-gone", pod)
    assert code == 0, out
    code, out = node.call("DEL", "ctr-gone", None)  # and without CNI_NETNS at all
    assert code == 0, out
    assert node.reservations() == {}
    assert host_veth_name(node.network, "ctr-gone", "eth0") not in link_names(node.ns)


def test_check_notices_removed_address_and_route(node: CniNode, netns_factory: Callable[[str], str]) -> None:
    pod = netns_factory("chk")
    result = node.add("ctr-chk", pod)
    conf = {**node.conf, "prevResult": result}
    assert node.call("CHECK", "ctr-chk", pod, conf=conf) == (0, None)
    ns_run(pod, ["ip", "route", "del", "default"])
    code, out = node.call("CHECK", "ctr-chk", pod, conf=conf)
    assert code != 0 and out is not None and "route" in out["msg"], out
    ns_run(pod, ["ip", "route", "add", "default", "via", "10.244.7.1"])
    assert node.call("CHECK", "ctr-chk", pod, conf=conf)[0] == 0
    ns_run(pod, ["ip", "addr", "flush", "dev", "eth0"])
    code, out = node.call("CHECK", "ctr-chk", pod, conf=conf)
    assert code != 0 and out is not None and "address" in out["msg"], out


def test_gc_frees_leaked_addresses_and_veths(node: CniNode, netns_factory: Callable[[str], str]) -> None:
    pods = [netns_factory("gc") for _ in range(3)]
    for i, pod in enumerate(pods):
        node.add(f"gc{i}", pod)
    conf = {**node.conf, "cniVersion": "1.1.0",
            "cni.dev/valid-attachments": [{"containerID": "gc1", "ifname": "eth0"}]}
    code, out = node.call("GC", conf=conf)
    assert code == 0, out
    assert list(node.reservations().values()) == ["gc1\r\neth0"]
    assert node.bridge_ports() == [host_veth_name(node.network, "gc1", "eth0")]
    assert link_names(pods[0]) == {"lo"} and "eth0" in link_names(pods[1])


def test_status_reports_ready(node: CniNode) -> None:
    assert node.call("STATUS", conf={**node.conf, "cniVersion": "1.1.0"}) == (0, None)


@pytest.mark.parametrize("step", ["ipam", "veth", "address"])
def test_kill_9_during_add_then_retry_leaves_nothing_stray(standalone: CniNode, netns_factory: Callable[[str], str],
                                                           step: str) -> None:
    pod = netns_factory("kill")
    code, out = standalone.call("ADD", "ctr-k", pod, env={"NODEAGENT_CNI_TEST_CRASH_AT": step})
    assert code == -9 and out is None  # the plugin died by SIGKILL mid-ADD
    result = standalone.add("ctr-k", pod)
    ip = result["ips"][0]["address"]
    assert list(standalone.reservations()) == [ip.split("/")[0]]
    assert standalone.bridge_ports() == [host_veth_name(standalone.network, "ctr-k", "eth0")]
    assert link_names(pod) == {"lo", "eth0"} and addresses(pod, "eth0") == [ip]
    assert standalone.call("DEL", "ctr-k", pod)[0] == 0
    assert standalone.reservations() == {} and standalone.bridge_ports() == [] and link_names(pod) == {"lo"}


BAD = [
    ("not-json", b"{this is not json", {}, 6),
    ("no-ipam", None, {"ipam": None}, 7),
    ("bad-subnet", None, {"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.300.0/24"}]]}}, 7),
    ("unknown-version", None, {"cniVersion": "7.0.0"}, 1),
    ("missing-netns", None, {}, 4),
]


@pytest.mark.parametrize("case, stdin, patch, code", BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("mode", ["daemon", "standalone"])
def test_bad_config_gets_its_code_and_creates_nothing(mode: str, case: str, stdin: bytes | None,
                                                      patch: dict[str, object], code: int,
                                                      netns_factory: Callable[[str], str], tmp_path: Path) -> None:
    with cni_node(netns_factory, str(tmp_path), "10.244.9.0/24", daemon=mode == "daemon") as n:
        pod = netns_factory("bad")
        conf = {k: v for k, v in {**n.conf, **patch}.items() if v is not None}
        rc, out = n.call("ADD", "ctr-bad", pod, conf=conf, stdin=stdin,
                         drop=("CNI_NETNS",) if case == "missing-netns" else ())
        assert rc != 0 and out is not None and out["code"] == code, out
        assert out["msg"]
        assert link_names(n.ns) == {"lo"} and link_names(pod) == {"lo"}
        assert n.reservations() == {}


def test_addresses_of_vanished_pods_are_recovered_when_the_range_is_full(netns_factory: Callable[[str], str],
                                                                          tmp_path: Path) -> None:
    """Node reboot: the store still holds addresses but the pods' namespaces (and veths) are gone."""
    with cni_node(netns_factory, str(tmp_path), "10.244.10.0/29") as n:  # .2-.6: five addresses
        pods = [netns_factory("full") for _ in range(5)]
        for i, pod in enumerate(pods):
            n.add(f"full{i}", pod)
        code, out = n.call("ADD", "one-more", netns_factory("more"))
        assert code != 0 and out is not None and out["code"] == 100  # full, and every pod is alive
        for pod in pods[:2]:
            subprocess.run(["ip", "netns", "delete", pod], check=True)
        old = time.time() - 3600  # reservations younger than RECLAIM_MIN_AGE are never reclaimed
        for f in n.reservations():
            os.utime(os.path.join(n.ipam_dir, f), (old, old))
        deadline = time.monotonic() + 10
        while len(n.bridge_ports()) > 3 and time.monotonic() < deadline:  # the kernel drops the veths
            time.sleep(0.05)
        got = n.add("one-more", netns_factory("more2"))
        assert got["ips"][0]["address"].split("/")[0] in n.reservations()
        assert sorted(v.split("\r\n")[0] for v in n.reservations().values()) == ["full2", "full3", "full4", "one-more"]


def test_bridge_deleted_behind_our_back_is_recreated(node: CniNode, netns_factory: Callable[[str], str]) -> None:
    node.add("before", netns_factory("br"))
    ns_run(node.ns, ["ip", "link", "del", "cni0"])
    pod = netns_factory("br")
    result = node.add("after", pod)  # the daemon's cached bridge index is stale now
    assert addresses(node.ns, "cni0") == ["10.244.7.1/24"]
    assert node.bridge_ports() == [host_veth_name(node.network, "after", "eth0")]
    ns_run(pod, ["ping", "-c", "1", "-W", "2", "10.244.7.1"])
    assert result["ips"][0]["gateway"] == "10.244.7.1"


def test_options_mtu_hairpin_promisc_gateway_range_and_routes(standalone: CniNode,
                                                              netns_factory: Callable[[str], str]) -> None:
    pod = netns_factory("opt")
    conf = {**standalone.conf, "bridge": "cni9", "mtu": 1400, "hairpinMode": True, "promiscMode": True,
            "isDefaultGateway": False, "ipMasq": False,
            "ipam": {"type": "host-local", "dataDir": standalone.conf["ipam"]["dataDir"],
                     "ranges": [[{"subnet": "10.244.11.0/24", "rangeStart": "10.244.11.10",
                                  "rangeEnd": "10.244.11.20", "gateway": "10.244.11.254"}]],
                     "routes": [{"dst": "10.96.0.0/12"}, {"dst": "192.168.77.0/24", "gw": "10.244.11.254"}]}}
    result = standalone.add("ctr-opt", pod, conf=conf)
    assert result["ips"][0] == {"address": "10.244.11.10/24", "gateway": "10.244.11.254", "interface": 2}
    assert result["routes"] == [{"dst": "10.96.0.0/12", "gw": "10.244.11.254"},
                                {"dst": "192.168.77.0/24", "gw": "10.244.11.254"}]
    host = host_veth_name(standalone.network, "ctr-opt", "eth0")
    link = {li["ifname"]: li for li in links_detail(standalone.ns)}
    assert link["cni9"]["mtu"] == 1400
    assert link[host]["mtu"] == 1400 and link[host]["linkinfo"]["info_slave_data"]["hairpin"] is True
    assert link["cni9"]["promiscuity"] >= 1 and "PROMISC" in link["cni9"]["flags"]
    assert addresses(standalone.ns, "cni9") == ["10.244.11.254/24"]
    pod_link = {li["ifname"]: li for li in links_detail(pod)}["eth0"]
    assert pod_link["mtu"] == 1400 and pod_link["address"] == result["interfaces"][2]["mac"]
    routes = ns_run(pod, ["ip", "route"]).stdout
    assert "default" not in routes  # isDefaultGateway false
    assert "10.96.0.0/12 via 10.244.11.254 dev eth0" in routes and "192.168.77.0/24 via 10.244.11.254" in routes
    assert "NODEAGENT-MASQ" not in ns_run(standalone.ns, ["iptables-legacy-save", "-t", "nat"]).stdout
    assert standalone.call("DEL", "ctr-opt", pod, conf=conf)[0] == 0


def test_result_macs_match_the_kernel(node: CniNode, netns_factory: Callable[[str], str]) -> None:
    results = [node.add(f"mac{i}", netns_factory("mac")) for i in range(2)]
    link = {li["ifname"]: li for li in links_detail(node.ns)}
    for r in results:
        bridge, host, _ = r["interfaces"]
        assert link["cni0"]["address"] == bridge["mac"] and link[host["name"]]["address"] == host["mac"]


def test_add_failing_late_rolls_back_everything(node: CniNode, netns_factory: Callable[[str], str]) -> None:
    pod = netns_factory("rb")
    conf = {**node.conf, "ipam": {**node.conf["ipam"], "routes": [{"dst": "192.168.99.0/24", "gw": "172.31.0.1"}]}}
    code, out = node.call("ADD", "ctr-rb", pod, conf=conf)  # the pod's route has an unreachable gateway
    assert code != 0 and out is not None and "unreachable" in out["details"].lower(), out
    assert node.reservations() == {} and node.bridge_ports() == [] and link_names(pod) == {"lo"}
    got = node.add("ctr-rb", pod)["ips"][0]["address"]  # a clean retry works
    assert list(node.reservations()) == [got.split("/")[0]]
