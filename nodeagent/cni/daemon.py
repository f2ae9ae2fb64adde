"""The node's CNI daemon (the "thick plugin"): serves plugin calls on a unix socket, writes the
conflist once our Node has a podCIDR, and keeps the routes to the other nodes.

Plugin calls arrive from the exec'd shim (shim.c / shim.py, wire format in protocol.py) and run on
a small thread pool through the same dispatcher and BridgePlugin as the standalone plugin, but
with pyroute2 imported once and its netlink socket kept open. The daemon runs inside the node's
network namespace (nsenter --net), like containerd, so everything it touches is the node's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import os
import signal
import stat
import time
from dataclasses import dataclass
from typing import Any

from nodeagent.cni import conflist, install, protocol
from nodeagent.cni.dispatcher import Handler, dispatch
from nodeagent.cni.plugin import BridgePlugin

log = logging.getLogger("nodeagent.cni.daemon")

@dataclass
class DaemonConfig:
    node_name: str
    data_dir: str
    socket: str
    backend: str = "host-gw"
    kubeconfig: str | None = None
    cluster_cidr: str | None = "10.244.0.0/16"
    route_resync: float = 10.0
    recovery_period: float = 60.0
    workers: int = 8

    @property
    def conf_dir(self) -> str:
        return os.path.join(self.data_dir, "cni", "net.d")

    @property
    def bin_dir(self) -> str:
        return os.path.join(self.data_dir, "cni", "bin")

    @property
    def ipam_dir(self) -> str:
        return os.path.join(self.data_dir, "cni", "ipam")


class PluginServer:
    """The unix-socket half: one connection per plugin call."""

    def __init__(self, path: str, plugin: Handler, workers: int = 8) -> None:
        self.path = path
        self.plugin = plugin
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cni")
        self.server: asyncio.AbstractServer | None = None
        self.calls = 0

    async def start(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)  # left by a daemon that died; nobody can be listening on it
        self.server = await asyncio.start_unix_server(self._serve, path=self.path)
        os.chmod(self.path, 0o600)  # plugin calls are root's business (containerd runs as root)
        log.info("cni daemon serving socket=%s", self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            data = await reader.read()
            try:
                env, stdin = protocol.decode_request(data)
            except (ValueError, UnicodeDecodeError) as e:
                log.warning("bad request on cni socket: %s", e)
                return
            loop = asyncio.get_running_loop()
            t0 = time.perf_counter()
            code, out = await loop.run_in_executor(self.pool, dispatch, env, stdin, self.plugin)
            self.calls += 1
            log.info("cni call command=%s container=%s ifname=%s rc=%d duration_ms=%.1f", env.get("CNI_COMMAND"),
                     env.get("CNI_CONTAINERID", ""), env.get("CNI_IFNAME", ""), code, (time.perf_counter() - t0) * 1000)
            writer.write(protocol.encode_reply(code, out))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        self.pool.shutdown(wait=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class ConflistWriter:
    """Writes the conflist when our Node gets (or changes) its podCIDR."""

    def __init__(self, cfg: DaemonConfig, mtu: int = 0) -> None:
        self.cfg = cfg
        self.mtu = mtu
        self.pod_cidr: str | None = None

    def on_node(self, node: dict[str, Any] | None) -> None:
        from nodeagent.cni.routes import pod_cidrs

        if node is None or node.get("metadata", {}).get("name") != self.cfg.node_name:
            return
        cidrs = pod_cidrs(node)
        if not cidrs:
            return
        body = conflist.build(cidrs[0], ipam_dir=self.cfg.ipam_dir, daemon_socket=self.cfg.socket,
                              cluster_cidr=self.cfg.cluster_cidr, mtu=self.mtu)
        if conflist.write(self.cfg.conf_dir, body):
            log.info("cni conflist written node=%s podCIDR=%s path=%s", self.cfg.node_name, cidrs[0],
                     os.path.join(self.cfg.conf_dir, conflist.CONFLIST_NAME))
        self.pod_cidr = cidrs[0]


def _backend_factory(cfg: DaemonConfig) -> Any:
    from nodeagent.cni.routes import HostGw, NetlinkRoutes, Vxlan, internal_ip, pod_cidrs

    links = NetlinkRoutes()
    if cfg.backend == "host-gw":
        hostgw = HostGw(links)
        return (lambda own: hostgw), links
    cache: dict[tuple[str, str], Vxlan] = {}

    def for_node(own: dict[str, Any] | None) -> Vxlan | None:
        if own is None:
            return None
        ip, cidrs = internal_ip(own), pod_cidrs(own)
        if ip is None or not cidrs:
            return None
        key = (ip, cidrs[0])
        if key not in cache:
            cache.clear()
            cache[key] = Vxlan(links, ip, cidrs[0])
        return cache[key]

    return for_node, links


async def _recovery_loop(plugin: BridgePlugin, cfg: DaemonConfig, writer: ConflistWriter) -> None:
    """Addresses of pods whose namespace vanished (node reboot) go back to the pool; the masquerade
    chain and ip_forward are put back if something removed them (BridgePlugin.resync)."""
    from nodeagent.cni.config import parse_netconf

    while True:
        if not writer.pod_cidr:
            await asyncio.sleep(1.0)  # no conflist yet: nothing of ours on the machine to look at
            continue
        body = conflist.build(writer.pod_cidr, ipam_dir=cfg.ipam_dir, daemon_socket=cfg.socket,
                              cluster_cidr=cfg.cluster_cidr)
        conf = parse_netconf({"cniVersion": body["cniVersion"], "name": body["name"], **body["plugins"][0]})
        try:
            await asyncio.to_thread(plugin.resync, conf)
        except Exception:
            log.exception("cni resync failed network=%s", conf.name)
        await asyncio.sleep(cfg.recovery_period)


async def run_daemon(cfg: DaemonConfig, stop: asyncio.Event | None = None) -> int:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await asyncio.to_thread(install.install, cfg.bin_dir)
    plugin = BridgePlugin()
    await asyncio.to_thread(lambda: plugin.host)  # import pyroute2 and open netlink before serving
    # Everything imported so far (pyroute2, the plugin) lives as long as the daemon: move it out of the
    # cyclic collector's reach, so a full collection during an ADD walks only per-request garbage
    # (measured: it was the one slow ADD in every 50 of benchmarks/cni.py).
    gc.collect()
    gc.freeze()
    server = PluginServer(cfg.socket, plugin, cfg.workers)
    await server.start()
    tasks: list[asyncio.Task[Any]] = []
    links = None
    client = None
    watcher: Any = None
    try:
        if cfg.kubeconfig:
            from nodeagent.client import Client, ClientConfig, Informer
            from nodeagent.cni.routes import RouteSyncer
            from nodeagent.cni.routewatch import RouteWatcher
            from nodeagent.machinery.kinds import NODES

            client = Client(ClientConfig.from_kubeconfig(cfg.kubeconfig))
            await client.__aenter__()
            informer = Informer(client, NODES)
            writer = ConflistWriter(cfg, mtu=1450 if cfg.backend == "vxlan" else 0)
            informer.add_handlers(on_add=writer.on_node, on_update=lambda old, new: writer.on_node(new))
            backend_for, links = _backend_factory(cfg)
            syncer = RouteSyncer(informer, cfg.node_name, backend_for, cfg.route_resync)
            loop = asyncio.get_running_loop()
            watcher = RouteWatcher(lambda: loop.call_soon_threadsafe(syncer.trigger))
            await asyncio.to_thread(watcher.start)
            tasks = [asyncio.create_task(informer.run(), name="node-informer"),
                     asyncio.create_task(syncer.run(), name="route-sync"),
                     asyncio.create_task(_recovery_loop(plugin, cfg, writer), name="ipam-recovery")]
        await stop.wait()
        return 0
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        await server.close()
        if watcher is not None:
            await asyncio.to_thread(watcher.stop)
        if client is not None:
            await client.__aexit__(None, None, None)
        if links is not None:
            links.close()
        plugin.close()
        log.info("cni daemon stopped node=%s calls=%d", cfg.node_name, server.calls)
