"""`nodeagent up` / `nodeagent down`: everything one host needs, as one supervised process tree.

Server role (no --server): apiserver, controllers, dns, and the node parts (cni-daemon, kubelet with
its managed containerd, proxy). Agent role (--server URL --token T, or --kubeconfig K): the node
parts only. This is what the Vagrant VMs run under systemd (vagrant/); it acts on the network
namespace it is started in, so tests run it inside a test namespace, never in the host's root one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("nodeagent.up")

DEFAULT_DIR = "/var/lib/nodeagent/host"
API_PORT = 6443


@dataclass
class HostPlan:
    data_dir: Path
    node_name: str
    node_ip: str
    server: str | None            # agent role: the apiserver URL
    token: str | None
    ca_file: str | None
    kubeconfig: str | None        # agent role: a kubeconfig given as is
    join: list[str]               # server role: agents to write join kubeconfigs for
    cluster_cidr: str = "10.244.0.0/16"
    proxy_mode: str = "iptables"
    node_monitor_grace_period: int = 40
    default_toleration_seconds: int = 300
    lb_address_pool: str = ""  # server role: addresses for LoadBalancer Services (none: <pending>)

    @property
    def role(self) -> str:
        return "agent" if (self.server or self.kubeconfig) else "server"

    @property
    def apiserver_dir(self) -> Path:
        return self.data_dir / "apiserver"

    @property
    def node_dir(self) -> Path:
        return self.data_dir / "node"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.data_dir / "admin.kubeconfig"

    @property
    def node_kubeconfig(self) -> Path:
        return Path(self.kubeconfig) if self.kubeconfig else self.data_dir / "node.kubeconfig"

    def component_kubeconfig(self, component: str) -> Path:
        """kube-proxy's, the CNI daemon's, the ingress controller's and the speaker's own identities
        (issue 14); the node's as a fallback
        for a join kubeconfig that has no context for them."""
        own = self.data_dir / f"{component}.kubeconfig"
        return own if own.exists() else self.node_kubeconfig

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "up.pid"

    @property
    def server_url(self) -> str:
        return self.server or f"https://{self.node_ip}:{API_PORT}"


def default_node_ip(towards: str = "192.168.56.2") -> str:
    """The source address this host uses toward `towards` (a UDP connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((towards, 9))
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def node_commands(p: HostPlan) -> list[tuple[str, list[str]]]:
    kc, d = str(p.node_kubeconfig), p.node_dir
    return [
        ("cni-daemon", ["cni-daemon", "--kubeconfig", str(p.component_kubeconfig("cni-daemon")), "--node-name", p.node_name, "--data-dir", str(d),
                        "--backend", "host-gw", "--cluster-cidr", p.cluster_cidr]),
        ("kubelet", ["kubelet", "--kubeconfig", kc, "--node-name", p.node_name, "--data-dir", str(d),
                     "--node-ip", p.node_ip, "--cni-bin-dir", str(d / "cni" / "bin"),
                     "--cni-conf-dir", str(d / "cni" / "net.d")]),
        ("proxy", ["proxy", "--kubeconfig", str(p.component_kubeconfig("kube-proxy")), "--node-name", p.node_name, "--mode", p.proxy_mode,
                   "--cluster-cidr", p.cluster_cidr]),
        ("ingress", ["ingress", "--kubeconfig", str(p.component_kubeconfig("ingress")), "--node-name", p.node_name,
                     "--run-dir", str(d / "ingress")]),
        ("speaker", ["speaker", "--kubeconfig", str(p.component_kubeconfig("speaker")), "--node-name", p.node_name]),
    ]


def server_commands(p: HostPlan) -> list[tuple[str, list[str]]]:
    admin = str(p.admin_kubeconfig)
    return [
        ("controllers", ["controllers", "--kubeconfig", admin, "--cluster-cidr", p.cluster_cidr,
                         "--node-monitor-grace-period", str(p.node_monitor_grace_period),
                         "--default-toleration-seconds", str(p.default_toleration_seconds),
                         *(["--lb-address-pool", p.lb_address_pool] if p.lb_address_pool else [])]),
        ("dns", ["dns", "--kubeconfig", admin, "--advertise-address", p.node_ip]),
    ]


def apiserver_command(p: HostPlan) -> list[str]:
    return ["apiserver", "--data-dir", str(p.apiserver_dir), "--bind-address", "0.0.0.0",
            "--port", str(API_PORT), "--advertise-address", p.node_ip, "--tls-san", p.node_ip,
            "--tls-san", "127.0.0.1"]


def agent_kubeconfig_text(server: str, token: str, ca_file: str | None, node: str) -> str:
    """A kubeconfig for the node parts from --server/--token (docs: static token authentication)."""
    cluster = f"    certificate-authority: {ca_file}\n" if ca_file else "    insecure-skip-tls-verify: true\n"
    return (f"apiVersion: v1\nkind: Config\nclusters:\n- name: nodeagent\n  cluster:\n    server: {server}\n"
            f"{cluster}users:\n- name: {node}\n  user:\n    token: {token}\n"
            f"contexts:\n- name: nodeagent\n  context:\n    cluster: nodeagent\n    user: {node}\n"
            "current-context: nodeagent\n")


# the node processes that run as their own users, and the contexts a join kubeconfig has for them
COMPONENT_USERS = {"kube-proxy": "system:kube-proxy", "cni-daemon": "system:nodeagent:cni-daemon",
                   "ingress": "system:nodeagent:ingress", "speaker": "system:nodeagent:speaker"}


def write_join_kubeconfig(data: str, server: str, agent: str, out: Path) -> None:
    """An agent's join kubeconfig: the node's token as the current context, plus one context per
    node process with its client certificate (kube-proxy, cni-daemon)."""
    import tempfile

    import yaml

    # built beside `out` and renamed into place: an agent that sees the file sees all of it
    part_out = out.with_name(out.name + ".partial")
    _nodeagent_sync("kubeconfig", "--data-dir", data, "--server", server, "--user", "node", agent, "-o",
                    str(part_out))
    doc = yaml.safe_load(part_out.read_text())
    with tempfile.TemporaryDirectory() as d:
        for component, user in COMPONENT_USERS.items():
            part = Path(d) / f"{component}.kubeconfig"
            _nodeagent_sync("kubeconfig", "--data-dir", data, "--server", server, "--user", user, "-o", str(part))
            extra = yaml.safe_load(part.read_text())
            doc["users"].append({"name": component, "user": extra["users"][0]["user"]})
            doc["contexts"].append({"name": component, "context": {"cluster": doc["clusters"][0]["name"],
                                                                   "user": component}})
    fd = os.open(part_out, os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f, default_flow_style=False, sort_keys=False)
    os.replace(part_out, out)


def split_join_kubeconfig(join: Path, data_dir: Path) -> None:
    """Write DATA_DIR/COMPONENT.kubeconfig for every component context the join kubeconfig has."""
    import yaml

    doc = yaml.safe_load(join.read_text()) or {}
    names = {c.get("name") for c in doc.get("contexts") or []}
    for component in COMPONENT_USERS:
        if component not in names:
            continue
        out = data_dir / f"{component}.kubeconfig"
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump({**doc, "current-context": component}, f, default_flow_style=False, sort_keys=False)


async def ensure_ingress_class(kubeconfig: Path) -> None:
    """The default IngressClass of `nodeagent ingress` (cluster/addons.py), created once."""
    import yaml

    from nodeagent.client import AlreadyExists, Client, ClientConfig
    from nodeagent.cluster.addons import INGRESS_CLASS_MANIFEST
    from nodeagent.machinery.kinds import INGRESSCLASSES

    async with Client(ClientConfig.from_kubeconfig(str(kubeconfig)), user_agent="nodeagent-up") as c:
        with contextlib.suppress(AlreadyExists):
            await c.create(INGRESSCLASSES, yaml.safe_load(INGRESS_CLASS_MANIFEST))


def _nodeagent_sync(*args: str) -> None:
    p = subprocess.run([sys.executable, "-m", "nodeagent", *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"`nodeagent {' '.join(args)}` failed: {p.stderr.strip()[-1500:]}")


class Supervisor:
    """Runs children, restarts one that dies (with backoff), stops them all in reverse order."""

    def __init__(self) -> None:
        self.children: dict[str, asyncio.subprocess.Process] = {}
        self.order: list[str] = []
        self.stopping = False

    async def start(self, name: str, args: list[str]) -> None:
        self.order.append(name)
        asyncio.create_task(self._keep(name, args))
        await asyncio.sleep(0)

    async def _keep(self, name: str, args: list[str]) -> None:
        delay = 1.0
        while not self.stopping:
            proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "nodeagent", *args,
                                                        stdin=subprocess.DEVNULL)
            self.children[name] = proc
            log.info("started component=%s pid=%d", name, proc.pid)
            rc = await proc.wait()
            if self.stopping:
                return
            log.warning("component exited component=%s rc=%s restart_in=%.0fs", name, rc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def stop(self) -> None:
        self.stopping = True
        for name in reversed(self.order):
            proc = self.children.get(name)
            if proc and proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
                log.info("stopped component=%s", name)


async def wait_ready(url: str, ca: Path, timeout: float = 60.0) -> None:
    import ssl
    import urllib.request

    def probe() -> bool:
        try:
            ctx = ssl.create_default_context(cafile=str(ca))
            with urllib.request.urlopen(f"{url}/readyz", context=ctx, timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await asyncio.to_thread(lambda: ca.exists() and probe()):
            return
        await asyncio.sleep(0.3)
    raise RuntimeError(f"apiserver {url} not ready after {timeout:.0f}s")


async def up_main(args: argparse.Namespace) -> int:
    from nodeagent.cluster.topology import PlanError, check_socket_room
    p = plan_from_args(args)
    try:
        check_socket_room(p.node_dir)
    except PlanError as e:
        log.error("%s", e)
        return 2
    p.data_dir.mkdir(parents=True, exist_ok=True)
    p.pid_file.write_text(f"{os.getpid()}\n")
    sup = Supervisor()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if p.role == "server":
            await sup.start("apiserver", apiserver_command(p))
            local = f"https://{p.node_ip}:{API_PORT}"
            await wait_ready(local, p.apiserver_dir / "pki" / "ca.crt")
            data = str(p.apiserver_dir)
            await asyncio.to_thread(_nodeagent_sync, "kubeconfig", "--data-dir", data, "--server", local,
                                    "--user", "admin", "-o", str(p.admin_kubeconfig))
            await asyncio.to_thread(_nodeagent_sync, "kubeconfig", "--data-dir", data, "--server", local,
                                    "--user", "node", p.node_name, "-o", str(p.node_kubeconfig))
            for component, user in COMPONENT_USERS.items():
                await asyncio.to_thread(_nodeagent_sync, "kubeconfig", "--data-dir", data, "--server", local,
                                        "--user", user, "-o", str(p.data_dir / f"{component}.kubeconfig"))
            for agent in p.join:
                out = p.data_dir / "join" / f"{agent}.kubeconfig"
                out.parent.mkdir(exist_ok=True)
                await asyncio.to_thread(write_join_kubeconfig, data, local, agent, out)
            for name, cmd in server_commands(p):
                await sup.start(name, cmd)
            await ensure_ingress_class(p.admin_kubeconfig)
            log.info("server ready url=%s admin_kubeconfig=%s join_dir=%s", local, p.admin_kubeconfig,
                     p.data_dir / "join")
        elif not p.kubeconfig:
            if not p.token:
                log.error("agent role needs --token with --server (or --kubeconfig)")
                return 2
            p.node_kubeconfig.write_text(agent_kubeconfig_text(p.server_url, p.token, p.ca_file, p.node_name))
            p.node_kubeconfig.chmod(0o600)
            log.warning("agent role with --token: kube-proxy and the CNI daemon run as the node, which the Node "
                        "authorizer does not let list Services' EndpointSlices or other Nodes; pass the join "
                        "kubeconfig with --kubeconfig instead (it carries their own identities)")
        else:
            split_join_kubeconfig(Path(p.kubeconfig), p.data_dir)
        for name, cmd in node_commands(p):
            await sup.start(name, cmd)
        log.info("up role=%s node=%s node_ip=%s server=%s", p.role, p.node_name, p.node_ip, p.server_url)
        await stop.wait()
    except RuntimeError as e:
        log.error("up failed: %s", e)
        return 1
    finally:
        await sup.stop()
        with contextlib.suppress(OSError):
            p.pid_file.unlink()
    return 0


def plan_from_args(args: argparse.Namespace) -> HostPlan:
    return HostPlan(
        data_dir=Path(args.data_dir), node_name=args.node_name or socket.gethostname().split(".")[0],
        node_ip=args.node_ip or default_node_ip(), server=args.server, token=args.token,
        ca_file=args.ca_file, kubeconfig=args.kubeconfig, join=[a for a in (args.join or "").split(",") if a],
        proxy_mode=args.proxy_mode, node_monitor_grace_period=args.node_monitor_grace_period,
        default_toleration_seconds=args.default_toleration_seconds, lb_address_pool=args.lb_address_pool,
    )


def down_main(args: argparse.Namespace) -> int:
    """Stop a running `nodeagent up` and remove what it made in this namespace and its data dir."""
    from nodeagent.cluster import cleanup, procs
    from nodeagent.mountinfo import read_mountinfo

    d = Path(args.data_dir)
    try:
        pid = int((d / "up.pid").read_text().split()[0])
        procs.terminate({pid}, grace=30)
    except (OSError, ValueError):
        pass
    # containerd shims (and the containers below them) outlive the kubelet; find them by the socket
    # path under our data dir that is on their command line
    strays = procs.process_tree(set(_pids_mentioning(str(d) + "/")))
    snap = cleanup.snapshot(strays, {procs.netns_inode("/proc/self/ns/net") or -1})
    keep = cleanup.cgroups_in_use(strays)
    left = procs.terminate(strays, grace=5)
    cleanup.remove_netns_mounts(cleanup.netns_mounts_with_inodes(snap.pod_netns_inodes))
    cleanup.unmount_under(d)
    cleanup.remove_cgroups(snap.cgroups, keep)
    # KUBE-* chains (kube-proxy's own cleanup), the bridge and the host-gw routes of the CNI
    subprocess.run([sys.executable, "-m", "nodeagent", "proxy", "--cleanup"], capture_output=True)
    subprocess.run(["ip", "link", "delete", "cni0"], capture_output=True)
    out = subprocess.run(["ip", "-o", "route", "show", "root", args.cluster_cidr], capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        subprocess.run(["ip", "route", "delete", line.split()[0]], capture_output=True)
    if not args.keep_data and not cleanup.mounts_under(d, read_mountinfo()):
        shutil.rmtree(d, ignore_errors=True)
    if left:
        print(f"warning: processes still running: {sorted(left)}", file=sys.stderr)
        return 1
    return 0


def _pids_mentioning(text: str) -> list[int]:
    out = []
    needle = text.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes():
                out.append(int(entry.name))
    return out


def register(subparsers: Any) -> None:
    u = subparsers.add_parser("up", help="run everything this host needs (server or agent role)")
    u.add_argument("--data-dir", default=DEFAULT_DIR, help=f"default {DEFAULT_DIR}")
    u.add_argument("--node-name", default=None, help="default: the host name")
    u.add_argument("--node-ip", default=None, help="default: the source address toward 192.168.56.2")
    u.add_argument("--server", default=None, help="agent role: the apiserver URL (https://IP:6443)")
    u.add_argument("--token", default=None, help="agent role: this node's bearer token")
    u.add_argument("--ca-file", default=None, help="agent role: the cluster CA (else TLS is not verified)")
    u.add_argument("--kubeconfig", default=None, help="agent role: a node kubeconfig instead of --server/--token")
    u.add_argument("--join", default="", help="server role: comma-separated agent names to write join "
                   "kubeconfigs for (DATA_DIR/join/NAME.kubeconfig)")
    u.add_argument("--proxy-mode", default="iptables", choices=["iptables", "nftables"])
    u.add_argument("--node-monitor-grace-period", type=int, default=40)
    u.add_argument("--default-toleration-seconds", type=int, default=300)
    u.add_argument("--lb-address-pool", default="", metavar="CIDR",
                   help="server role: addresses for LoadBalancer Services (e.g. 192.168.56.224/28)")
    u.set_defaults(func=up_main)

    d = subparsers.add_parser("down", help="stop `nodeagent up` and remove what it created")
    d.add_argument("--data-dir", default=DEFAULT_DIR)
    d.add_argument("--cluster-cidr", default="10.244.0.0/16")
    d.add_argument("--keep-data", action="store_true", help="keep the data dir (PKI, state, images)")
    d.set_defaults(func=down_main)
