"""`nodeagent proxy`: kube-proxy. Run it inside the node's network namespace
(`nsenter --net=/var/run/netns/NODE nodeagent proxy ...`): every rule it writes lands in the
namespace it runs in.

iptables mode writes the LEGACY (x_tables) back end by default: it is the project's back end
for KUBE-* chains (docs/components.md), and there a full sync is one atomic commit. The nft back
end (--iptables-backend nft) makes one changed Service much cheaper at scale (x_tables rewrites the
whole table on every commit), but loads a full sync in several transactions, because
iptables-nft-restore 1.8.9 is quadratic in one input's size. Figures: benchmarks/proxy.py.
--cleanup removes the rules of both back ends."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
from typing import Any

log = logging.getLogger("nodeagent.proxy")

MODES = ("iptables", "nftables", "ipvs")
BACKENDS = ("legacy", "nft")  # = executor.BACKENDS (not imported here: the parser stays light)
DEFAULT_BACKEND = "legacy"


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "proxy", help="kube-proxy: program Services as iptables / nftables / IPVS rules",
        description=__doc__)
    p.add_argument("--kubeconfig", help="kubeconfig of this node (required unless --cleanup)")
    p.add_argument("--node-name", default=socket.gethostname(), help="this node's Node name (default: hostname)")
    p.add_argument("--mode", choices=MODES, default="iptables")
    p.add_argument("--iptables-backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                   help="iptables mode's back end: legacy (x_tables; the default, as docs/components.md; full syncs "
                        "atomic) or nft (nf_tables via iptables-nft-restore; partial syncs several times faster "
                        "at 5k+ Services, full syncs split into several transactions)")
    p.add_argument("--cluster-cidr", default="10.244.0.0/16",
                   help="pod CIDR of the cluster; traffic to a Service from outside it is masqueraded ('' = none)")
    p.add_argument("--nodeport-addresses", type=_cidr_list, default=(),
                   help="comma-separated IPv4 CIDRs: NodePorts are accepted only on this node's addresses inside them "
                        "(default: every local address, as upstream)")
    p.add_argument("--metrics-port", type=int, default=10249, help="0 = off")
    p.add_argument("--metrics-bind-address", default="127.0.0.1")
    p.add_argument("--healthz-port", type=int, default=10256,
                   help="/healthz and /livez (0 = off); Services' healthCheckNodePorts are served regardless")
    p.add_argument("--healthz-bind-address", default="0.0.0.0")
    p.add_argument("--sync-period", type=float, default=30.0, help="seconds between periodic syncs")
    p.add_argument("--min-sync-period", type=float, default=1.0, help="minimum seconds between syncs")
    p.add_argument("--cleanup", action="store_true",
                   help="remove every rule, chain, table and virtual server of every mode, then exit")
    p.set_defaults(func=main)


def _cidr_list(text: str) -> tuple[str, ...]:
    import ipaddress

    out = []
    for part in filter(None, (x.strip() for x in text.split(","))):
        try:
            net = ipaddress.ip_network(part, strict=False)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"--nodeport-addresses: {e}") from None
        if net.version != 4:
            raise argparse.ArgumentTypeError(f"--nodeport-addresses: {part} is not IPv4 (this proxy is IPv4 only)")
        out.append(str(net))
    return tuple(out)


def cleanup_all(keep: str | None = None, iptables_backend: str = DEFAULT_BACKEND) -> list[str]:
    """Remove what every mode (except `keep`) creates, in both iptables back ends (except the one
    `keep` writes: `iptables_backend` for iptables mode, legacy for IPVS); returns the errors
    (empty when clean)."""
    from nodeagent.proxy.iptables.executor import make_executor
    from nodeagent.proxy.iptables.proxier import cleanup_iptables
    from nodeagent.proxy.nftables import cleanup_nftables

    kept = {"iptables": iptables_backend, "ipvs": "legacy"}.get(keep or "")
    errors: list[str] = []
    for backend in BACKENDS:
        if backend == kept:
            continue
        try:
            cleanup_iptables(make_executor(backend))
        except Exception as e:  # report and go on: cleanup must do all it can
            errors.append(f"iptables ({backend}): {e}")
    if keep != "nftables":
        try:
            cleanup_nftables()
        except Exception as e:
            errors.append(f"nftables: {e}")
    if keep != "ipvs":
        try:
            _cleanup_ipvs()
        except Exception as e:
            errors.append(f"ipvs: {e}")
    return errors


def _cleanup_ipvs() -> None:
    from nodeagent.proxy.ipvs import DUMMY, PyrouteIpvs, cleanup_ipvs, ipvs_available

    if ipvs_available():
        nl = PyrouteIpvs()
        try:
            cleanup_ipvs(nl)
        finally:
            nl.close()
        return
    from pyroute2 import IPRoute  # no IP_VS here: only the dummy interface can exist

    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=DUMMY)
        if idx:
            ipr.link("del", index=idx[0])


def build_backend(mode: str, iptables_backend: str = DEFAULT_BACKEND) -> Any:
    from nodeagent.proxy.iptables.executor import LegacyExecutor, make_executor

    if mode == "iptables":
        from nodeagent.proxy.iptables.proxier import IptablesBackend

        return IptablesBackend(make_executor(iptables_backend))
    if mode == "nftables":
        from nodeagent.proxy.nftables import NftablesBackend

        return NftablesBackend()
    from nodeagent.proxy.ipvs import IpvsBackend, PyrouteIpvs, ipvs_available

    if not ipvs_available():
        raise SystemExit("proxy: --mode ipvs needs the kernel's IP_VS (/proc/net/ip_vs is absent); "
                         "load ip_vs or use --mode iptables|nftables")
    return IpvsBackend(PyrouteIpvs(), LegacyExecutor())


async def main(args: argparse.Namespace) -> int:
    if args.cleanup:
        errors = await asyncio.to_thread(cleanup_all)
        for e in errors:
            log.error("cleanup failed %s", e)
        return 1 if errors else 0
    if not args.kubeconfig:
        log.error("proxy: --kubeconfig is required (or use --cleanup)")
        return 2

    from nodeagent.api.kinds import ENDPOINTSLICES, NODES, SERVICES
    from nodeagent.client import Client, ClientConfig, EventRecorder, Informer
    from nodeagent.proxy.conntrack import ConntrackCleaner
    from nodeagent.proxy.healthcheck import ServiceHealthServer
    from nodeagent.proxy.http import healthz_app, metrics_app, serve
    from nodeagent.proxy.metrics import Health, ProxyMetrics
    from nodeagent.proxy.proxier import Proxier

    backend = build_backend(args.mode, args.iptables_backend)
    # leftovers of another mode or iptables back end (both would rewrite the same packets)
    for err in await asyncio.to_thread(cleanup_all, args.mode, args.iptables_backend):
        log.warning("cleanup of other modes failed %s", err)
    metrics = ProxyMetrics()
    health = Health(timeout=2 * args.sync_period)
    # healthCheckNodePorts listen where NodePorts are accepted; the loop owns the listeners and the
    # sync thread only hands over counts (ServiceHealthServer.update is thread-safe)
    service_health = ServiceHealthServer(args.node_name, health.healthy, nodeport_addresses=args.nodeport_addresses)
    proxier = Proxier(backend, args.node_name, args.cluster_cidr or None, metrics=metrics,
                      conntrack=ConntrackCleaner(), min_sync_period=args.min_sync_period,
                      sync_period=args.sync_period, health=health, nodeport_addresses=args.nodeport_addresses,
                      service_health=service_health)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    runners = []
    if args.metrics_port:
        runners.append(await serve(metrics_app(metrics, health), args.metrics_bind_address, args.metrics_port))
    if args.healthz_port:
        runners.append(await serve(healthz_app(health, metrics), args.healthz_bind_address, args.healthz_port))
    await service_health.start()

    cfg = ClientConfig.from_kubeconfig(args.kubeconfig)
    async with Client(cfg) as real_client:
        client: Any = real_client  # Informer's WatchingClient protocol is narrower than Client's signature
        # a healthCheckNodePort that cannot be bound is an Event on its Service, as upstream
        service_health.recorder = EventRecorder(real_client, component="kube-proxy", host=args.node_name)
        handlers = proxier.handlers()
        informers = [
            Informer(client, SERVICES),
            Informer(client, ENDPOINTSLICES),
            Informer(client, NODES, field_selector=f"metadata.name={args.node_name}"),
        ]
        for inf, key in zip(informers, ("services", "endpointslices", "nodes"), strict=True):
            inf.add_handlers(**handlers[key])
        tasks = [asyncio.create_task(inf.run()) for inf in informers]
        # the Node may not exist yet (the kubelet registers it): don't wait for it to sync
        tasks.append(asyncio.create_task(proxier.run(
            ready=asyncio.gather(informers[0].wait_synced(), informers[1].wait_synced()))))
        log.info("proxy started node=%s mode=%s iptables_backend=%s cluster_cidr=%s", args.node_name, args.mode,
                 args.iptables_backend, args.cluster_cidr)
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        rc = 0
        for t in done:
            if t is not stopper and t.exception() is not None:
                log.error("proxy task failed error=%r", t.exception())
                rc = 1
        for inf in informers:
            inf.stop()
        for t in [*tasks, stopper]:
            t.cancel()
        await asyncio.gather(*tasks, stopper, return_exceptions=True)
        service_health.recorder = None  # the client closes here
    await service_health.close()
    for r in runners:
        await r.cleanup()
    log.info("proxy stopped node=%s (rules left in place, as upstream)", args.node_name)
    return rc
