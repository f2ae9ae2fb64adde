"""`nodeagent proxy`: kube-proxy. Run it inside the node's network namespace
(`nsenter --net=/var/run/netns/NODE nodeagent proxy ...`): every rule it writes lands in the
namespace it runs in.

iptables mode writes the LEGACY (x_tables) back end by default: it is the project's back end
for KUBE-* chains (docs/components.md), and there a full sync is one atomic commit. The nft back
end (--iptables-backend nft) makes one changed Service much cheaper at scale (x_tables rewrites the
whole table on every commit), but loads a full sync in several transactions, because
iptables-nft-restore 1.8.9 is quadratic in one input's size. Figures: benchmarks/proxy.py.
--cleanup removes the rules of both back ends.

--config FILE reads upstream's KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1, YAML or
JSON). Precedence is upstream's (cmd/kube-proxy/app/options.go): the file wins. Given --config,
these flags are ignored, with a warning naming each one given: --kubeconfig, --mode,
--cluster-cidr, --nodeport-addresses, --metrics-port, --metrics-bind-address, --healthz-port,
--healthz-bind-address, --sync-period, --min-sync-period. The one exception, as upstream:
--hostname-override (= --node-name) wins over the file's hostnameOverride. Flags the file has no
field for (--iptables-backend, --cleanup, -v) apply as usual."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nodeagent.proxy.config import FileConfig

log = logging.getLogger("nodeagent.proxy")

MODES = ("iptables", "nftables", "ipvs")
BACKENDS = ("legacy", "nft")  # = executor.BACKENDS (not imported here: the parser stays light)
DEFAULT_BACKEND = "legacy"


class _Given(argparse.Action):
    """Stores the value and notes the flag as given: with --config the file wins over these flags,
    and the command warns about each one it ignores."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.given = (*getattr(namespace, "given", ()), option_string)


def _hostname(text: str) -> str:
    # upstream trims and lower-cases --hostname-override, and refuses an empty one
    name = text.strip().lower()
    if not name:
        raise argparse.ArgumentTypeError("empty node name")
    return name


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "proxy", help="kube-proxy: program Services as iptables / nftables / IPVS rules",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE",
                   help="KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1, YAML or JSON). As upstream, "
                        "the file wins: the flags it covers are ignored (see above), except --hostname-override, "
                        "which wins over its hostnameOverride")
    p.add_argument("--kubeconfig", action=_Given, help="kubeconfig of this node (required unless --cleanup)")
    p.add_argument("--hostname-override", "--node-name", dest="node_name", action=_Given, type=_hostname,
                   default=None, metavar="NAME", help="this node's Node name (default: the file's hostnameOverride, else hostname)")
    p.add_argument("--mode", choices=MODES, default="iptables", action=_Given)
    p.add_argument("--iptables-backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                   help="iptables mode's back end: legacy (x_tables; the default, as docs/components.md; full syncs "
                        "atomic) or nft (nf_tables via iptables-nft-restore; partial syncs several times faster "
                        "at 5k+ Services, full syncs split into several transactions)")
    p.add_argument("--cluster-cidr", default="10.244.0.0/16", action=_Given,
                   help="pod CIDR of the cluster; traffic to a Service from outside it is masqueraded ('' = none)")
    p.add_argument("--nodeport-addresses", type=_cidr_list, default=(), action=_Given,
                   help="comma-separated IPv4 CIDRs: NodePorts are accepted only on this node's addresses inside them "
                        "(default: every local address, as upstream)")
    p.add_argument("--metrics-port", type=int, default=10249, action=_Given, help="0 = off")
    p.add_argument("--metrics-bind-address", default="127.0.0.1", action=_Given)
    p.add_argument("--healthz-port", type=int, default=10256, action=_Given,
                   help="/healthz and /livez (0 = off); Services' healthCheckNodePorts are served regardless")
    p.add_argument("--healthz-bind-address", default="0.0.0.0", action=_Given)
    p.add_argument("--sync-period", type=float, default=30.0, action=_Given, help="seconds between periodic syncs")
    p.add_argument("--min-sync-period", type=float, default=1.0, action=_Given,
                   help="minimum seconds between syncs")
    p.add_argument("--cleanup", action="store_true",
                   help="remove every rule, chain, table and virtual server of every mode, then exit")
    p.set_defaults(func=main, given=())


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


def apply_config(args: argparse.Namespace, cfg: FileConfig) -> list[str]:
    """Put the file's settings into `args` as upstream's Complete does: the file replaces every
    flag it covers, except that a given --hostname-override wins. Returns the warnings to log."""
    warnings = [f"{flag} is ignored: --config {args.config} sets it (as upstream)"
                for flag in dict.fromkeys(args.given) if flag not in ("--hostname-override", "--node-name")]
    if cfg.ignored:
        warnings.append(f"--config {args.config}: fields not implemented here are ignored: {', '.join(cfg.ignored)}")
    args.kubeconfig = cfg.kubeconfig or None
    if args.node_name is None:
        args.node_name = cfg.hostname_override or None
    args.mode = cfg.mode
    args.cluster_cidr = cfg.cluster_cidr or ""
    args.nodeport_addresses = cfg.nodeport_addresses
    args.metrics_bind_address, args.metrics_port = cfg.metrics.host, cfg.metrics.port
    args.healthz_bind_address, args.healthz_port = cfg.healthz.host, cfg.healthz.port
    args.sync_period, args.min_sync_period = cfg.sync_period, cfg.min_sync_period
    return warnings


def _read_config(args: argparse.Namespace) -> bool:
    """Load --config into `args`; False (logged) when the file is unusable."""
    from nodeagent.proxy.config import ConfigError, load

    try:
        file_cfg = load(args.config)
    except ConfigError as err:
        log.error("proxy: %s", err)
        return False
    for warning in apply_config(args, file_cfg):
        log.warning("proxy: %s", warning)
    return True


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
    # the file first, before --cleanup too, as upstream: a broken file fails either way
    if args.config and not _read_config(args):
        return 2
    if args.node_name is None:
        args.node_name = _hostname(socket.gethostname())
    if args.cleanup:
        errors = await asyncio.to_thread(cleanup_all)
        for e in errors:
            log.error("cleanup failed %s", e)
        return 1 if errors else 0
    if not args.kubeconfig:
        if args.config:
            # upstream ignores --kubeconfig too when --config is given (and falls back to the
            # in-cluster config, which we have not)
            log.error("proxy: --config %s has no clientConnection.kubeconfig; set it there", args.config)
        else:
            log.error("proxy: --kubeconfig is required (or use --cleanup)")
        return 2

    from nodeagent.client import Client, ClientConfig, ClientProtocol, EventRecorder, Informer
    from nodeagent.machinery.kinds import ENDPOINTSLICES, NODES, SERVICES
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
        client: ClientProtocol = real_client
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
        log.info("proxy started node=%s mode=%s iptables_backend=%s cluster_cidr=%s sync_period=%g "
                 "min_sync_period=%g config=%s", args.node_name, args.mode, args.iptables_backend,
                 args.cluster_cidr, args.sync_period, args.min_sync_period, args.config or "-")
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
