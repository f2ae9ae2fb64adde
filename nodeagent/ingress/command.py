"""Subcommand `nodeagent ingress`: the Ingress controller (HAProxy data plane) of this node."""

from __future__ import annotations

import argparse
import logging
from typing import Any

log = logging.getLogger("nodeagent.ingress")


async def ingress_main(args: argparse.Namespace) -> int:
    import asyncio
    import shutil
    import signal
    from pathlib import Path

    from nodeagent.client import Client, ClientConfig
    from nodeagent.ingress.controller import IngressController, Options, default_run_dir
    from nodeagent.ingress.haproxy import ProxyError
    from nodeagent.ingress.metrics import serve
    from nodeagent.ingress.render import Listen

    binary = shutil.which(args.haproxy_binary)
    if binary is None:
        log.error("haproxy not found (%s): install Debian's haproxy package (make setup does)", args.haproxy_binary)
        return 2
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args.node_name)
    opts = Options(node_name=args.node_name, ingress_class=args.ingress_class,
                   controller_class=args.controller_class, watch_without_class=args.watch_ingress_without_class,
                   publish_addresses=tuple(a for a in (args.publish_status_address or "").split(",") if a),
                   listen=Listen(args.bind_address, args.http_port, args.https_port, run_dir),
                   haproxy_binary=binary)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Client(ClientConfig.from_kubeconfig(args.kubeconfig), user_agent="nodeagent-ingress") as client:
        ctl = IngressController(client, opts)
        stop_http = None
        try:
            await ctl.start()
            if args.metrics_port:
                try:
                    stop_http = await serve(ctl.metrics, args.metrics_bind_address, args.metrics_port,
                                            ctl.refresh_stats, ctl.healthy)
                except OSError as e:
                    log.error("cannot serve /metrics port=%d error=%s: continuing without", args.metrics_port, e)
            log.info("ingress controller running class=%s controller=%s http=%s:%d https=%s:%d run_dir=%s",
                     opts.ingress_class, opts.controller_class, opts.listen.address, opts.listen.http_port,
                     opts.listen.address, opts.listen.https_port, run_dir)
            await stop.wait()
        except (ProxyError, TimeoutError) as e:
            log.error("ingress controller failed to start: %s", e)
            return 1
        finally:
            if stop_http is not None:
                await stop_http()
            await ctl.stop()
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("ingress", help="the Ingress controller of this node (HAProxy data plane)")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--node-name", default="", help="this node (Events' source host)")
    p.add_argument("--run-dir", default=None, help="HAProxy's config, certificates and sockets "
                   "(default /run/nodeagent-ingress/NODE)")
    p.add_argument("--bind-address", default="0.0.0.0")
    p.add_argument("--http-port", type=int, default=80)
    p.add_argument("--https-port", type=int, default=443)
    p.add_argument("--ingress-class", default="nodeagent",
                   help="the IngressClass name this controller answers to in the legacy annotation "
                        "kubernetes.io/ingress.class (default nodeagent)")
    p.add_argument("--controller-class", default="nodeagent.io/ingress",
                   help="spec.controller of the IngressClasses served (default nodeagent.io/ingress)")
    p.add_argument("--watch-ingress-without-class", action="store_true",
                   help="also serve Ingresses with neither ingressClassName nor the class annotation")
    p.add_argument("--publish-status-address", default="",
                   help="comma-separated addresses for status.loadBalancer (default: the Ready nodes' addresses)")
    p.add_argument("--metrics-port", type=int, default=10254, help="/metrics and /healthz (0 = off)")
    p.add_argument("--metrics-bind-address", default="0.0.0.0")
    p.add_argument("--haproxy-binary", default="haproxy")
    p.set_defaults(func=ingress_main)
