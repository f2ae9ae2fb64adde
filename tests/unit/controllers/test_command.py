"""`nodeagent controllers` takes the flags docs/components.md promises."""

from __future__ import annotations

from nodeagent.cli import build_parser


def test_documented_flags_parse_with_upstream_defaults() -> None:
    args = build_parser().parse_args(["controllers", "--kubeconfig", "k"])
    assert (args.cluster_cidr, args.node_cidr_mask_size, args.node_monitor_grace_period,
            args.default_toleration_seconds, args.leader_elect, args.metrics_port) == (
        "10.244.0.0/16", 24, 50.0, 300, True, 10257)
    assert (args.leader_elect_lease_duration, args.leader_elect_renew_deadline,
            args.leader_elect_retry_period) == (15.0, 10.0, 2.0)
    args = build_parser().parse_args([
        "controllers", "--kubeconfig", "k", "--cluster-cidr", "10.200.0.0/16", "--node-cidr-mask-size", "26",
        "--node-monitor-grace-period", "5", "--default-toleration-seconds", "3", "--no-leader-elect",
        "--identity", "me", "--metrics-port", "0"])
    assert (args.cluster_cidr, args.node_cidr_mask_size, args.node_monitor_grace_period,
            args.default_toleration_seconds, args.leader_elect, args.identity, args.metrics_port) == (
        "10.200.0.0/16", 26, 5.0, 3, False, "me", 0)
