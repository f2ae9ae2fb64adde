"""A node in a network namespace with pods behind a bridge and a client outside, for proxy root tests.

    client netns (192.168.56.2) --veth-- node netns (192.168.56.10, br0 10.244.1.1/24)
                                            |-- pod netns 0..n-1 (10.244.1.10+i), each running a
                                                TCP server on 8080 (says its name, then echoes lines)
                                                and a UDP server on 8053 (answers its name)
Everything lives in namespaces made by the netns_factory fixture; nothing touches the root one.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from nodeagent.netns import netns_path, nsenter_argv, run_in_netns

NODE_IP = "192.168.56.10"
CLIENT_IP = "192.168.56.2"
POD_GW = "10.244.1.1"
CLUSTER_CIDR = "10.244.0.0/16"

SERVER = r"""
import asyncio, socket, sys
name = sys.argv[1]
async def handle(r, w):
    w.write((name + "\n").encode()); await w.drain()
    try:
        while line := await r.readline():
            w.write(line); await w.drain()
    finally:
        w.close()
class Udp(asyncio.DatagramProtocol):
    def connection_made(self, t): self.t = t
    def datagram_received(self, data, addr): self.t.sendto(name.encode(), addr)
async def main():
    srv = await asyncio.start_server(handle, "0.0.0.0", 8080, backlog=1024)
    await asyncio.get_running_loop().create_datagram_endpoint(Udp, local_addr=("0.0.0.0", 8053))
    print("ready", flush=True)
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def sysctl(ns: str, key: str, value: str) -> None:
    subprocess.run([*nsenter_argv(ns), "sysctl", "-qw", f"{key}={value}"], check=True, capture_output=True)


@dataclass
class Topology:
    node: str
    client: str
    pods: list[str]
    pod_ips: list[str]
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def name_of(self, pod_ip: str) -> str:
        return self.pods[self.pod_ips.index(pod_ip)]

    def stop(self) -> None:
        for s in self.servers:
            if s.poll() is None:
                s.terminate()
        for s in self.servers:
            try:
                s.wait(timeout=5)
            except subprocess.TimeoutExpired:
                s.kill()
                s.wait()

    def in_node(self, fn: Callable[..., object], *args: object) -> object:
        return run_in_netns(self.node, fn, *args)


def build(netns_factory: Callable[[str], str], n_pods: int = 3) -> Topology:
    node = netns_factory("pxn")
    client = netns_factory("pxc")
    pods = [netns_factory("pxp") for _ in range(n_pods)]
    pod_ips = [f"10.244.1.{10 + i}" for i in range(n_pods)]
    ip("-n", node, "link", "add", "br0", "type", "bridge")
    ip("-n", node, "addr", "add", f"{POD_GW}/24", "dev", "br0")
    ip("-n", node, "link", "set", "br0", "up")
    for i, (pod, pod_ip) in enumerate(zip(pods, pod_ips, strict=True)):
        ip("-n", node, "link", "add", f"vp{i}", "type", "veth", "peer", "name", "eth0", "netns", pod)
        ip("-n", node, "link", "set", f"vp{i}", "master", "br0", "up")
        # as the bridge CNI plugin's hairpinMode: with br_netfilter the DNAT back to the sender is
        # bridged, and needs to leave by the port it came in on
        ip("-n", node, "link", "set", f"vp{i}", "type", "bridge_slave", "hairpin", "on")
        ip("-n", pod, "addr", "add", f"{pod_ip}/24", "dev", "eth0")
        ip("-n", pod, "link", "set", "eth0", "up")
        ip("-n", pod, "route", "add", "default", "via", POD_GW)
    ip("-n", node, "link", "add", "vc", "type", "veth", "peer", "name", "eth0", "netns", client)
    ip("-n", node, "addr", "add", f"{NODE_IP}/24", "dev", "vc")
    ip("-n", node, "link", "set", "vc", "up")
    ip("-n", client, "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0")
    ip("-n", client, "link", "set", "eth0", "up")
    ip("-n", client, "route", "add", "default", "via", NODE_IP)
    # nodes have a default route (to an uplink; here one that leads nowhere): without one a
    # packet to a Service IP fails routing before the filter rules that reject it could see it.
    # (This kernel has no dummy links: a veth pair with both ends in the node.)
    ip("-n", node, "link", "add", "up0", "type", "veth", "peer", "name", "up1")
    ip("-n", node, "addr", "add", "203.0.113.1/24", "dev", "up0")
    ip("-n", node, "link", "set", "up0", "up")
    ip("-n", node, "link", "set", "up1", "up")
    ip("-n", node, "route", "add", "default", "via", "203.0.113.254")
    sysctl(node, "net.ipv4.ip_forward", "1")
    topo = Topology(node, client, pods, pod_ips)
    try:
        for pod in pods:
            proc = subprocess.Popen([*nsenter_argv(pod), sys.executable, "-S", "-c", SERVER, pod],
                                    stdout=subprocess.PIPE)
            topo.servers.append(proc)
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"test server in {pod} did not start")
    except BaseException:
        topo.stop()
        raise
    return topo


def _connect_many(ip_: str, port: int, count: int, timeout: float = 3.0) -> list[str]:
    names = []
    for _ in range(count):
        with socket.create_connection((ip_, port), timeout=timeout) as s:
            names.append(s.makefile("r").readline().strip())
    return names


def connect_many(ns: str, ip_: str, port: int, count: int) -> Counter[str]:
    """`count` fresh TCP connections from netns `ns`; which server answered each."""
    return Counter(run_in_netns(ns, _connect_many, ip_, port, count))


def _try_connect(ip_: str, port: int, timeout: float) -> str:
    try:
        with socket.create_connection((ip_, port), timeout=timeout) as s:
            return s.makefile("r").readline().strip() or "EMPTY"
    except ConnectionRefusedError:
        return "REFUSED"
    except OSError as e:
        return f"ERROR:{e.__class__.__name__}:{e.errno}"


def try_connect(ns: str, ip_: str, port: int, timeout: float = 1.0) -> str:
    return run_in_netns(ns, _try_connect, ip_, port, timeout)


def _udp_ask(ip_: str, port: int, src_port: int) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", src_port))
        s.settimeout(1.0)
        s.sendto(b"?", (ip_, port))
        try:
            return s.recvfrom(100)[0].decode()
        except TimeoutError:
            return "TIMEOUT"


def udp_ask(ns: str, ip_: str, port: int, src_port: int = 40000) -> str:
    return run_in_netns(ns, _udp_ask, ip_, port, src_port)


def wait_for(cond: Callable[[], bool], timeout: float = 20.0, what: str | Callable[[], str] = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(0.1)


def chi_square(counts: Counter[str], keys: list[str]) -> float:
    total = sum(counts[k] for k in keys)
    expected = total / len(keys)
    return sum((counts[k] - expected) ** 2 / expected for k in keys)


def iptables_save(ns: str, backend: str = "legacy") -> str:
    """iptables-legacy-save (or iptables-nft-save) of the netns without comments and counters
    (comparable across runs): read the back end that wrote the rules."""
    out = subprocess.run(["nsenter", f"--net={netns_path(ns)}", f"iptables-{backend}-save"], check=True,
                         capture_output=True, text=True).stdout
    return "\n".join(line.split(" [")[0] if line.startswith(":") else line
                     for line in out.splitlines() if not line.startswith("#"))


def nft_ruleset(ns: str) -> str:
    return subprocess.run([*nsenter_argv(ns), "nft", "list", "ruleset"], check=True, capture_output=True,
                          text=True).stdout
