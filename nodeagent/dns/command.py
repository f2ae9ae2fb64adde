"""Subcommand `nodeagent dns`: the cluster DNS add-on (kube-dns Service, CoreDNS's names)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

log = logging.getLogger("nodeagent.dns")


def _advertise_address(args: argparse.Namespace) -> str | None:
    """--advertise-address, else the address this host uses toward the apiserver (what a node sees),
    as kube-apiserver picks its own default. None (no registration) when that is loopback."""
    import ipaddress
    import socket
    from urllib.parse import urlparse

    from nodeagent.client import ClientConfig

    if args.no_register:
        return None
    if args.advertise_address:
        return str(args.advertise_address)
    if args.bind not in ("0.0.0.0", "::") and not ipaddress.ip_address(args.bind).is_loopback:
        return str(args.bind)
    host = urlparse(ClientConfig.from_kubeconfig(args.kubeconfig).server).hostname or "127.0.0.1"
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, 443))  # UDP connect sends nothing: it only picks the route and source
            addr = str(s.getsockname()[0])
    except OSError as e:
        log.warning("cannot pick an address to register as kube-dns (no route to %s: %s); "
                    "pass --advertise-address", host, e)
        return None
    if ipaddress.ip_address(addr).is_loopback:
        log.warning("not registering kube-dns: the apiserver is on loopback, so pods could not reach %s; "
                    "pass --advertise-address IP to register anyway", addr)
        return None
    return addr


async def dns_main(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from nodeagent.client import Client, ClientConfig
    from nodeagent.dns.app import DnsApp, DnsOptions
    from nodeagent.dns.upstream import parse_upstream

    if args.upstream:
        try:
            parse_upstream(args.upstream)
        except ValueError as e:
            log.error("bad --upstream %r: %s (want IP or IP:PORT)", args.upstream, e)
            return 2
    opts = DnsOptions(bind=args.bind, port=args.port, cluster_domain=args.cluster_domain,
                      upstream=args.upstream, ttl=args.ttl, service_ip=args.service_ip,
                      advertise_address=_advertise_address(args), metrics_port=args.metrics_port,
                      lameduck=args.lameduck)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Client(ClientConfig.from_kubeconfig(args.kubeconfig), user_agent="nodeagent-dns") as client:
        app = DnsApp(client, opts)
        starting = asyncio.create_task(app.start())
        stopping = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if starting in done:
                starting.result()  # a bind error surfaces here
                log.info("dns ready addr=%s port=%d domain=%s upstream=%s registered_as=%s",
                         opts.bind, app.port, opts.cluster_domain, opts.upstream or "-",
                         opts.advertise_address or "-")
                await stopping
        except OSError as e:
            log.error("dns cannot listen on %s:%d: %s", opts.bind, opts.port, e)
            return 1
        finally:
            starting.cancel()
            stopping.cancel()
            await app.stop()
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("dns", help="the cluster DNS server (kube-dns Service)")
    p.add_argument("--kubeconfig", required=True, help="kubeconfig to watch Services and EndpointSlices with")
    p.add_argument("--bind", default="0.0.0.0", help="address to answer on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=53, help="UDP and TCP port (default 53)")
    p.add_argument("--cluster-domain", default="cluster.local", help="the cluster's DNS domain")
    p.add_argument("--upstream", default=None, metavar="IP[:PORT]",
                   help="resolver for names outside the cluster domain (else they are REFUSED)")
    p.add_argument("--ttl", type=int, default=30, help="TTL of answers, positive and negative (default 30)")
    p.add_argument("--service-ip", default="10.96.0.10", help="ClusterIP of the kube-dns Service")
    p.add_argument("--advertise-address", default=None, metavar="IP",
                   help="address registered as the kube-dns endpoint (default: the source address "
                        "toward the apiserver)")
    p.add_argument("--no-register", action="store_true",
                   help="do not create the kube-dns Service and EndpointSlice")
    p.add_argument("--metrics-port", type=int, default=9153,
                   help="port of /metrics, /healthz, /readyz (0 = off; default 9153)")
    p.add_argument("--lameduck", type=float, default=2.0, metavar="SECONDS",
                   help="at SIGTERM, keep answering this long after removing our endpoint (default 2)")
    p.set_defaults(func=dns_main)
