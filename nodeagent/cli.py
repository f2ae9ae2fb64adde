"""The `nodeagent` command: parses flags, builds components, runs them.

Each package contributes its subcommands through a `command` module exposing
`register(subparsers) -> None`; the parser it adds sets `func` to a callable taking the parsed
args and returning an exit code (an `async def` is run on a fresh event loop). Command modules keep
heavy imports inside their functions so that `nodeagent --help` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import sys

COMMAND_MODULES = (
    "nodeagent.api.command",          # apiserver, kubeconfig
    "nodeagent.controllers.command",  # controllers
    "nodeagent.kubelet.command",      # kubelet
    "nodeagent.proxy.command",        # proxy
    "nodeagent.cni.command",          # cni-daemon
    "nodeagent.runtime.command",      # images, containerd
    "nodeagent.dns.command",          # dns
    "nodeagent.ingress.command",      # ingress
    "nodeagent.speaker.command",      # speaker
    "nodeagent.cluster.command",      # up, down, cluster, demo, trace, netns
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nodeagent",
        description="The node side of Kubernetes in Python: apiserver, controllers, kubelet over CRI, "
                    "bridge CNI, kube-proxy, DNS, and local clusters in network namespaces.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # a broken import inside an existing module is a bug: show it
                raise
            continue
        module.register(sub)
    return parser


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * min(verbosity + 1, 2)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(args.verbose)
    func = args.func
    try:
        if inspect.iscoroutinefunction(func):
            rc = asyncio.run(func(args))
        else:
            rc = func(args)
    except KeyboardInterrupt:
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
