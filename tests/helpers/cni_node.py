"""Root-test helpers for the CNI plugin: a "node" network namespace with the plugin installed, calls
of the exec'd plugin inside it (as containerd would make them), a CNI daemon per node, and a
"switch" namespace joining nodes on an underlay bridge. Namespaces come from netns_factory."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from nodeagent.cni import install
from nodeagent.netns import netns_path, nsenter_argv

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON = os.path.join(REPO, ".venv", "bin", "python")
if not os.path.exists(PYTHON):
    PYTHON = sys.executable


def ns_run(ns: str, argv: list[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(nsenter_argv(ns) + argv, capture_output=True, text=True, check=check, timeout=timeout)


def links(ns: str) -> list[dict[str, Any]]:
    return json.loads(ns_run(ns, ["ip", "-j", "link", "show"]).stdout)


def links_detail(ns: str) -> list[dict[str, Any]]:
    return json.loads(ns_run(ns, ["ip", "-d", "-j", "link", "show"]).stdout)


def link_names(ns: str) -> set[str]:
    return {link["ifname"] for link in links(ns)}


def addresses(ns: str, dev: str) -> list[str]:
    out = json.loads(ns_run(ns, ["ip", "-j", "addr", "show", "dev", dev]).stdout)
    return [f"{a['local']}/{a['prefixlen']}" for i in out for a in i["addr_info"] if a["family"] == "inet"]


def net_conf(name: str, subnet: str, data_dir: str, **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": "1.0.0", "name": name, "type": "nodeagent-bridge", "bridge": "cni0",
        "isGateway": True, "isDefaultGateway": True, "ipMasq": True, "clusterCIDR": "10.244.0.0/16",
        "hairpinMode": True, "daemonSocket": os.path.join(data_dir, "cni", "daemon.sock"),
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                 "dataDir": os.path.join(data_dir, "cni", "ipam")},
    }
    conf.update(extra)
    return conf


@dataclass
class CniNode:
    ns: str
    data_dir: str
    subnet: str
    network: str = "testnet"
    daemon: subprocess.Popen[bytes] | None = None
    conf: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.bin_dir = os.path.join(self.data_dir, "cni", "bin")
        self.plugin = install.install(self.bin_dir, python=PYTHON)
        self.conf = net_conf(self.network, self.subnet, self.data_dir)
        self.socket = self.conf["daemonSocket"]
        self.ipam_dir = os.path.join(self.data_dir, "cni", "ipam", self.network)

    def call(self, command: str, container_id: str = "", pod_ns: str | None = None, ifname: str = "eth0",
             conf: dict[str, Any] | None = None, stdin: bytes | None = None, env: dict[str, str] | None = None,
             drop: tuple[str, ...] = ()) -> tuple[int, dict[str, Any] | None]:
        e = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_IFNAME": ifname,
             "CNI_PATH": self.bin_dir, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        if pod_ns is not None:
            e["CNI_NETNS"] = netns_path(pod_ns)
        e.update(env or {})
        for k in drop:
            e.pop(k, None)
        data = stdin if stdin is not None else json.dumps(conf or self.conf).encode()
        p = subprocess.run(nsenter_argv(self.ns) + [self.plugin], input=data, capture_output=True, env=e, timeout=60)
        out = json.loads(p.stdout) if p.stdout.strip() else None
        return p.returncode, out

    def add(self, container_id: str, pod_ns: str, **kw: Any) -> dict[str, Any]:
        code, out = self.call("ADD", container_id, pod_ns, **kw)
        assert code == 0 and out is not None, f"ADD {container_id} failed: {out}"
        return out

    def reservations(self) -> dict[str, str]:
        if not os.path.isdir(self.ipam_dir):
            return {}
        out = {}
        for f in os.listdir(self.ipam_dir):
            if f[0].isdigit():
                with open(os.path.join(self.ipam_dir, f), newline="") as fh:
                    out[f] = fh.read()
        return out

    def bridge_ports(self) -> list[str]:
        return sorted(link["ifname"] for link in links(self.ns) if link.get("master") == "cni0")

    def start_daemon(self, *extra: str) -> None:
        argv = nsenter_argv(self.ns) + [PYTHON, "-m", "nodeagent", "cni-daemon", "--node-name", self.ns,
                                        "--data-dir", self.data_dir, "--socket", self.socket, *extra]
        log = open(os.path.join(self.data_dir, "daemon.log"), "ab")
        self.daemon = subprocess.Popen(argv, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 20
        while not os.path.exists(self.socket):
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"cni daemon did not start: {self.daemon_log()}")
            time.sleep(0.05)

    def daemon_log(self) -> str:
        with contextlib.suppress(FileNotFoundError), open(os.path.join(self.data_dir, "daemon.log")) as f:
            return f.read()[-3000:]
        return ""

    def stop_daemon(self) -> None:
        if self.daemon is None:
            return
        if self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(10)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        self.daemon = None


@contextlib.contextmanager
def cni_node(netns_factory: Callable[[str], str], tmp_dir: str, subnet: str,
             daemon: bool = True, daemon_args: tuple[str, ...] = ()) -> Iterator[CniNode]:
    node = CniNode(netns_factory("cnode"), tmp_dir, subnet)
    try:
        if daemon:
            node.start_daemon(*daemon_args)
        yield node
    finally:
        node.stop_daemon()


def connect_to_switch(switch_ns: str, node_ns: str, address: str, port: str) -> None:
    """A veth from the node's namespace to the switch namespace's bridge br0 (never the root ns)."""
    if "br0" not in link_names(switch_ns):
        ns_run(switch_ns, ["ip", "link", "add", "br0", "type", "bridge"])
        ns_run(switch_ns, ["ip", "link", "set", "br0", "up"])
    ns_run(switch_ns, ["ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns_path(node_ns)])
    ns_run(switch_ns, ["ip", "link", "set", port, "master", "br0", "up"])
    ns_run(node_ns, ["ip", "addr", "add", address, "dev", "eth0"])
    ns_run(node_ns, ["ip", "link", "set", "eth0", "up"])
