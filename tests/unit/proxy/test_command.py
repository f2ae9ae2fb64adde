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


def test_iptables_backend_flag_defaults_to_legacy() -> None:
    assert build_parser().parse_args(["proxy", "--kubeconfig", "k"]).iptables_backend == "legacy"
    assert build_parser().parse_args(["proxy", "--iptables-backend", "nft"]).iptables_backend == "nft"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["proxy", "--iptables-backend", "xtables"])


def test_cleanup_covers_both_iptables_backends_except_the_kept_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from nodeagent.proxy import command, nftables
    from nodeagent.proxy.iptables import executor, proxier

    cleaned: list[str] = []
    monkeypatch.setattr(executor, "make_executor", lambda backend: backend)
    monkeypatch.setattr(proxier, "cleanup_iptables", lambda ipt: cleaned.append(f"iptables-{ipt}"))
    monkeypatch.setattr(nftables, "cleanup_nftables", lambda: cleaned.append("nftables"))
    monkeypatch.setattr(command, "_cleanup_ipvs", lambda: cleaned.append("ipvs"))
    assert command.cleanup_all() == []
    assert cleaned == ["iptables-legacy", "iptables-nft", "nftables", "ipvs"]
    cleaned.clear()
    command.cleanup_all("iptables", "nft")  # switching back ends: the legacy leftovers go
    assert cleaned == ["iptables-legacy", "nftables", "ipvs"]
    cleaned.clear()
    command.cleanup_all("ipvs")  # IPVS's masquerade rules are legacy ones
    assert cleaned == ["iptables-nft", "nftables"]
