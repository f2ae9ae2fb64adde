"""`nodeagent controllers`: the scheduler and the controller loops in one process, run while this
instance holds the leader Lease (kube-system/kube-controller-manager)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
from typing import Any

log = logging.getLogger("nodeagent.controllers")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("controllers", help="run the scheduler and the controller loops",
                              description=__doc__)
    p.add_argument("--kubeconfig", required=True, help="kubeconfig to reach the apiserver")
    p.add_argument("--cluster-cidr", default="10.244.0.0/16", help="pod network that node podCIDRs come from")
    p.add_argument("--node-cidr-mask-size", type=int, default=24, help="prefix length of each node's podCIDR")
    p.add_argument("--node-monitor-grace-period", type=float, default=50.0,
                   help="seconds without a node Lease renewal before the node is Ready=Unknown")
    p.add_argument("--node-monitor-period", type=float, default=5.0, help="seconds between node health checks")
    p.add_argument("--default-toleration-seconds", type=int, default=300,
                   help="tolerationSeconds for not-ready/unreachable when a pod has no such toleration")
    p.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True,
                   help="run only while holding the leader Lease")
    p.add_argument("--leader-elect-lease-duration", type=float, default=15.0)
    p.add_argument("--leader-elect-renew-deadline", type=float, default=10.0)
    p.add_argument("--leader-elect-retry-period", type=float, default=2.0)
    p.add_argument("--leader-elect-resource-namespace", default="kube-system")
    p.add_argument("--leader-elect-resource-name", default="kube-controller-manager")
    p.add_argument("--identity", default=None, help="this instance's name in the Lease (default host_pid)")
    p.add_argument("--metrics-port", type=int, default=10257, help="port of /metrics and /healthz (0 = off)")
    p.add_argument("--metrics-bind-address", default="127.0.0.1")
    p.add_argument("--controllers", default="*",
                   help="comma-separated loops to run (* = all): scheduler, replicaset, deployment, daemonset, "
                        "job, endpoint, endpointslice, nodeipam, nodelifecycle, garbagecollector, podgc, "
                        "serviceaccount, root-ca-cert-publisher, clusterrole-aggregation, servicelb")
    p.add_argument("--resync-period", type=float, default=60.0, help="seconds between informer resyncs")
    p.add_argument("--use-service-account-credentials", action="store_true",
                   help="each loop writes as its own service account in kube-system (upstream's flag); the "
                        "kubeconfig's user (system:kube-controller-manager) then only reads and mints their tokens")
    p.add_argument("--scheduler-kubeconfig", default=None,
                   help="the scheduler's own identity (system:kube-scheduler); default: --kubeconfig")
    p.add_argument("--root-ca-file", default=None,
                   help="CA published as kube-root-ca.crt in every namespace (default: the kubeconfig's CA)")
    p.add_argument("--lb-address-pool", default="", metavar="CIDR[,A-B]",
                   help="addresses for LoadBalancer Services' status.loadBalancer (servicelb; none: they stay "
                        "<pending>)")
    p.add_argument("--load-balancer-class", default="",
                   help="also serve Services with this spec.loadBalancerClass (default: only those without one)")
    p.set_defaults(func=main)


async def main(args: argparse.Namespace) -> int:
    from nodeagent.client import Client, ClientConfig
    from nodeagent.controllers.base import Options
    from nodeagent.controllers.leaderelection import LeaderElectionConfig, LeaderElector
    from nodeagent.controllers.manager import ControllerManager
    from nodeagent.controllers.metrics import Metrics, serve

    options = Options(cluster_cidr=args.cluster_cidr, node_cidr_mask_size=args.node_cidr_mask_size,
                      node_monitor_grace_period=args.node_monitor_grace_period,
                      node_monitor_period=args.node_monitor_period,
                      default_toleration_seconds=args.default_toleration_seconds,
                      resync_period=args.resync_period)
    options.extra["root_ca"] = _root_ca(args)
    options.extra["lb_address_pool"] = args.lb_address_pool
    options.extra["load_balancer_class"] = args.load_balancer_class
    if args.lb_address_pool:
        from nodeagent.controllers.servicelb import parse_pool
        try:
            parse_pool(args.lb_address_pool)
        except ValueError as e:
            log.error("bad --lb-address-pool %r: %s (want CIDR or FIRST-LAST, comma-separated)", args.lb_address_pool, e)
            return 2
    enabled = None if args.controllers.strip() in ("", "*") else [c.strip() for c in args.controllers.split(",")]
    identity = args.identity or f"{socket.gethostname()}_{os.getpid()}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    metrics = Metrics()
    runner = None
    if args.metrics_port:
        try:
            runner = await serve(metrics, args.metrics_port, lambda: True, host=args.metrics_bind_address)
        except OSError as e:
            # another cluster on this host may hold the port: the loops matter more than /metrics
            log.error("cannot serve /metrics and /healthz port=%d error=%s: continuing without them "
                      "(pick another --metrics-port, or 0 to turn them off)", args.metrics_port, e)
    rc = 0
    config = ClientConfig.from_kubeconfig(args.kubeconfig)
    async with Client(config, user_agent="kube-controller-manager") as client:
        own, closers = await _clients(args, client, config)
        elector = None
        metrics.leader.labels(args.leader_elect_resource_name).set(0)
        try:
            if args.leader_elect:
                elector = LeaderElector(client, LeaderElectionConfig(
                    namespace=args.leader_elect_resource_namespace, name=args.leader_elect_resource_name,
                    identity=identity, lease_duration=args.leader_elect_lease_duration,
                    renew_deadline=args.leader_elect_renew_deadline, retry_period=args.leader_elect_retry_period))
                if not await _until_stop(elector.acquire(), stop):
                    return 0
                metrics.leader.labels(args.leader_elect_resource_name).set(1)
            manager = ControllerManager(client, options, metrics=metrics, enabled=enabled, clients=own)
            try:
                await manager.start()
            except TimeoutError:
                log.error("caches did not sync within 60s: check that the apiserver in %s answers and that "
                          "its user may list and watch every resource", args.kubeconfig)
                await manager.stop()
                return 1
            log.info("controllers running identity=%s controllers=%s", identity, ",".join(manager.controllers))
            if elector is not None:
                if not await _until_stop(elector.renew_until_lost(), stop):
                    rc = 0
                else:
                    log.error("leaderelection lost identity=%s: exiting", identity)
                    rc = 1
            else:
                await stop.wait()
            await manager.stop()
        finally:
            if elector is not None and rc == 0:
                await elector.release()
            if runner is not None:
                await runner.cleanup()
            for close in closers:
                await close()
    return rc


def _root_ca(args: argparse.Namespace) -> bytes | None:
    from nodeagent.client import ClientConfig

    if args.root_ca_file:
        with open(args.root_ca_file, "rb") as f:
            return f.read()
    cfg = ClientConfig.from_kubeconfig(args.kubeconfig)
    if cfg.ca_data:
        return cfg.ca_data
    if cfg.ca_file:
        with open(cfg.ca_file, "rb") as f:
            return f.read()
    return None


async def _clients(args: argparse.Namespace, root: Any, config: Any) -> tuple[dict[str, Any], list[Any]]:
    """The clients of the loops that run as themselves: the scheduler with --scheduler-kubeconfig,
    every other loop with its service account under --use-service-account-credentials."""
    from nodeagent.client import Client, ClientConfig
    from nodeagent.controllers.credentials import SERVICE_ACCOUNTS, ServiceAccountClients
    from nodeagent.controllers.manager import controller_factories

    own: dict[str, Any] = {}
    closers: list[Any] = []
    if args.scheduler_kubeconfig:
        sched = Client(ClientConfig.from_kubeconfig(args.scheduler_kubeconfig), user_agent="nodeagent-scheduler")
        own["scheduler"] = sched
        closers.append(sched.close)
    if args.use_service_account_credentials:
        sa = ServiceAccountClients(root, config)
        closers.append(sa.close)
        names = list(controller_factories()) if args.controllers.strip() in ("", "*") else \
            [c.strip() for c in args.controllers.split(",")]
        if "job" in names:
            names.append("ttl-after-finished")
        for name in names:
            if name in SERVICE_ACCOUNTS:
                backoff = 0.2  # the apiserver may still be starting (cluster up starts all at once)
                while True:
                    try:
                        own[name] = await sa.client_for(name)
                        break
                    except Exception as e:
                        log.warning("cannot get credentials controller=%s error=%s retry_in=%.1fs", name, e, backoff)
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, 5.0)
    return own, closers


async def _until_stop(coro: Any, stop: asyncio.Event) -> bool:
    """Run coro until it finishes (True) or stop is set first (False)."""
    task = asyncio.ensure_future(coro)
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for t in (task, stopper):
        if t not in done:
            t.cancel()
    await asyncio.gather(task, stopper, return_exceptions=True)
    if task in done:
        task.result()
        return True
    return False
