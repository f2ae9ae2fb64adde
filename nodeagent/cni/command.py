"""`nodeagent cni-daemon`: the node's thick CNI plugin daemon (docs/components.md)."""

from __future__ import annotations

import argparse
import os
from typing import Any


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "cni-daemon", help="serve the bridge CNI plugin, write the conflist, keep routes to other nodes")
    p.add_argument("--kubeconfig", help="kubeconfig of this node (without it: plugin socket only)")
    p.add_argument("--node-name", required=True)
    p.add_argument("--data-dir", required=True, help="the node's data dir (cni/bin, cni/net.d, cni/ipam)")
    p.add_argument("--socket", help="thick-plugin socket (default DIR/cni/daemon.sock)")
    p.add_argument("--backend", choices=("host-gw", "vxlan"), default="host-gw",
                   help="routes to other nodes: host-gw (one L2 segment) or vxlan")
    p.add_argument("--cluster-cidr", default="10.244.0.0/16", help="pod traffic to it is not masqueraded")
    p.add_argument("--route-resync-period", type=float, default=10.0, help=argparse.SUPPRESS)
    p.add_argument("--machine-resync-period", type=float, default=60.0, help=argparse.SUPPRESS)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import asyncio

    from nodeagent.cni.daemon import DaemonConfig, run_daemon

    cfg = DaemonConfig(
        node_name=args.node_name,
        data_dir=os.path.abspath(args.data_dir),
        socket=os.path.abspath(args.socket or os.path.join(args.data_dir, "cni", "daemon.sock")),
        backend=args.backend,
        kubeconfig=args.kubeconfig,
        cluster_cidr=args.cluster_cidr or None,
        route_resync=args.route_resync_period,
        recovery_period=args.machine_resync_period,
    )
    return asyncio.run(run_daemon(cfg))
