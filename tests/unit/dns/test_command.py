"""The `nodeagent dns` command line and its small parsers."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from nodeagent.dns.command import _advertise_address, register
from nodeagent.dns.upstream import parse_upstream


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["dns", *argv])


def test_flags_and_defaults_match_the_contract() -> None:
    args = parse("--kubeconfig", "/k")
    assert (args.bind, args.port, args.cluster_domain, args.upstream, args.ttl, args.service_ip,
            args.advertise_address, args.metrics_port) == (
        "0.0.0.0", 53, "cluster.local", None, 30, "10.96.0.10", None, 9153)
    args = parse("--kubeconfig", "/k", "--upstream", "192.168.56.1:5353", "--advertise-address", "192.168.56.2",
                 "--ttl", "5", "--port", "5300")
    assert (args.upstream, args.advertise_address, args.ttl, args.port) == ("192.168.56.1:5353", "192.168.56.2",
                                                                           5, 5300)
    assert callable(args.func)


@pytest.mark.parametrize(("value", "want"), [
    ("8.8.8.8", ("8.8.8.8", 53)), ("10.0.0.1:5353", ("10.0.0.1", 5353)),
    ("fd00::1", ("fd00::1", 53)), ("[fd00::1]:5353", ("fd00::1", 5353)),
])
def test_parse_upstream(value: str, want: tuple[str, int]) -> None:
    assert parse_upstream(value) == want


@pytest.mark.parametrize("value", ["dns.google", "10.0.0.1:0", "10.0.0.1:70000", "1.2.3"])
def test_parse_upstream_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        parse_upstream(value)


def test_advertise_address_choice(tmp_path: Path) -> None:
    kc = tmp_path / "kubeconfig"
    kc.write_text("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:6443'}\n"
                  "users:\n- name: u\n  user: {token: t}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\n"
                  "current-context: x\n")
    assert _advertise_address(parse("--kubeconfig", str(kc), "--advertise-address", "10.1.2.3")) == "10.1.2.3"
    assert _advertise_address(parse("--kubeconfig", str(kc), "--bind", "10.1.2.4")) == "10.1.2.4"
    assert _advertise_address(parse("--kubeconfig", str(kc), "--no-register", "--advertise-address", "1.1.1.1")) is None
    # the apiserver is on loopback: pods could not reach a loopback endpoint, so no registration
    assert _advertise_address(parse("--kubeconfig", str(kc))) is None
