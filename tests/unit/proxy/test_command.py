"""`nodeagent proxy` flags match docs/components.md."""

from __future__ import annotations

import pytest

from nodeagent.cli import build_parser


def test_proxy_flags_and_defaults() -> None:
    args = build_parser().parse_args(["proxy", "--kubeconfig", "k", "--node-name", "n1", "--mode", "nftables"])
    assert (args.kubeconfig, args.node_name, args.mode) == ("k", "n1", "nftables")
    assert (args.cluster_cidr, args.metrics_port, args.healthz_port) == ("10.244.0.0/16", 10249, 10256)
    assert args.cleanup is False and callable(args.func)
    assert build_parser().parse_args(["proxy", "--cleanup"]).cleanup is True


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["proxy", "--mode", "userspace"])
