"""Subcommand `nodeagent speaker`: announce this node's share of LoadBalancer addresses (ARP)."""

from __future__ import annotations

import argparse
from typing import Any


async def speaker_main(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    from nodeagent.client import Client, ClientConfig
    from nodeagent.speaker.app import Options, Speaker

    log = logging.getLogger("nodeagent.speaker")
    opts = Options(node_name=args.node_name,
                   interfaces=tuple(i for i in (args.interface or "").split(",") if i),
                   load_balancer_class=args.load_balancer_class or None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Client(ClientConfig.from_kubeconfig(args.kubeconfig), user_agent="nodeagent-speaker") as client:
        sp = Speaker(client, opts)
        try:
            await sp.start()
            log.info("speaker running node=%s interfaces=%s", opts.node_name, ",".join(opts.interfaces) or "auto")
            await stop.wait()
        except TimeoutError:
            log.error("caches did not sync within 60s: check the apiserver in %s", args.kubeconfig)
            return 1
        finally:
            await sp.stop()
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("speaker", help="announce LoadBalancer addresses on the underlay (ARP, layer 2)")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--node-name", required=True, help="this node: it announces what the election gives it")
    p.add_argument("--interface", default="", help="comma-separated interfaces to answer on "
                   "(default: the one whose network holds each address)")
    p.add_argument("--load-balancer-class", default="", help="also announce Services of this loadBalancerClass")
    p.set_defaults(func=speaker_main)
