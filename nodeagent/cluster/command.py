"""Subcommands: `up`, `down`, `cluster up|down|status|kubeconfig`, `demo`, `trace`, `netns`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from nodeagent.cluster.topology import DEFAULT_NAME  # one default for cluster, demo, trace, netns


def _base_dir(args: argparse.Namespace) -> Path:
    from nodeagent.cluster.topology import BASE_DIR
    return Path(args.base_dir) if getattr(args, "base_dir", None) else BASE_DIR


def _options(args: argparse.Namespace) -> Any:
    from nodeagent.cluster.components import Options
    return Options(
        node_monitor_grace_period=args.node_monitor_grace_period,
        default_toleration_seconds=args.default_toleration_seconds,
        proxy_mode=args.proxy_mode,
        extra={"apiserver": list(getattr(args, "apiserver_arg", None) or [])},
    )


def cluster_up(args: argparse.Namespace) -> int:
    from nodeagent.cluster import lifecycle
    try:
        state = lifecycle.up(args.name, args.nodes, _options(args), base_dir=_base_dir(args),
                             build_images=not args.no_images, timeout=args.timeout)
    except (lifecycle.ClusterError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    kc = state.plan.kubeconfig
    print(f"\ncluster {state.name!r} is Ready: {state.nodes} node(s).\n"
          f"  export KUBECONFIG={kc}\n  kubectl get nodes -o wide\n"
          f"  nodeagent cluster status --name {state.name}\n  nodeagent cluster down --name {state.name}")
    return 0


def cluster_down(args: argparse.Namespace) -> int:
    from nodeagent.cluster import lifecycle
    names = lifecycle.list_clusters(_base_dir(args)) if args.all else [args.name]
    ok = True
    for name in names:
        try:
            ok = lifecycle.down(name, _base_dir(args)) and ok
        except ValueError as e:  # PlanError: a name no cluster can have
            print(f"error: {e}", file=sys.stderr)
            ok = False
    if not names:
        print("no clusters")
    return 0 if ok else 1


def cluster_status(args: argparse.Namespace) -> int:
    from nodeagent.cluster import lifecycle
    try:
        return lifecycle.status(args.name, _base_dir(args))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def cluster_kubeconfig(args: argparse.Namespace) -> int:
    from nodeagent.cluster.lifecycle import ClusterState
    state = ClusterState.load(args.name, _base_dir(args))
    if state is None:
        print(f"error: cluster {args.name!r} not found; start it with `nodeagent cluster up --name {args.name}`",
              file=sys.stderr)
        return 1
    print(state.plan.kubeconfig)
    return 0


async def cluster_forward(args: argparse.Namespace) -> int:
    from nodeagent.cluster.forwarder import Forwarder
    host, _, port = args.target.rpartition(":")
    await Forwarder(args.netns, host, int(port)).serve(args.listen, args.port)
    return 0


def _add_name(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default=DEFAULT_NAME, help=f"cluster name (default {DEFAULT_NAME})")
    p.add_argument("--base-dir", default=None, help="where clusters live (default /var/lib/nodeagent/clusters)")


def add_cluster_up_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, default=2, help="number of nodes (default 2)")
    p.add_argument("--node-monitor-grace-period", type=int, default=40,
                   help="seconds without a heartbeat before a node is NotReady (controllers)")
    p.add_argument("--default-toleration-seconds", type=int, default=300,
                   help="how long pods stay on a NotReady node before eviction (controllers)")
    p.add_argument("--proxy-mode", default="iptables", choices=["iptables", "nftables"])
    p.add_argument("--no-images", action="store_true", help="skip `nodeagent images build`")
    p.add_argument("--apiserver-arg", action="append", default=[], metavar="FLAG=VALUE",
                   help="an extra flag for the apiserver, e.g. --apiserver-arg=--audit-log-path=- (repeatable)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for Ready nodes")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("cluster", help="a local multi-node cluster in network namespaces")
    csub = p.add_subparsers(dest="cluster_command", metavar="COMMAND", required=True)

    up = csub.add_parser("up", help="create and start a cluster; returns when its nodes are Ready")
    _add_name(up)
    add_cluster_up_flags(up)
    up.set_defaults(func=cluster_up)

    down = csub.add_parser("down", help="stop a cluster and remove everything it made")
    _add_name(down)
    down.add_argument("--all", action="store_true", help="every cluster on this host")
    down.set_defaults(func=cluster_down)

    st = csub.add_parser("status", help="processes, namespaces and nodes of a cluster")
    _add_name(st)
    st.set_defaults(func=cluster_status)

    kc = csub.add_parser("kubeconfig", help="print the path of a cluster's admin kubeconfig")
    _add_name(kc)
    kc.set_defaults(func=cluster_kubeconfig)

    fw = csub.add_parser("forward", help="(internal) loopback TCP forwarder into a namespace")
    fw.add_argument("--netns", required=True)
    fw.add_argument("--listen", default="127.0.0.1")
    fw.add_argument("--port", type=int, required=True)
    fw.add_argument("--target", required=True, help="HOST:PORT inside the namespace")
    fw.set_defaults(func=cluster_forward)

    _register_optional(subparsers)


def _register_optional(subparsers: Any) -> None:
    """demo, trace, netns, up/down: each module registers its own parser."""
    from nodeagent.cluster import demo, host, trace
    demo.register(subparsers)
    trace.register(subparsers)
    host.register(subparsers)
