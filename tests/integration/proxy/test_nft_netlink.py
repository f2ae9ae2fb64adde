"""The netlink element writer against the real kernel: what it writes must read back exactly as
what `nft -f` writes from the same element text, in every map and set of our table."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from nodeagent.netns import run_in_netns
from nodeagent.proxy.nft_netlink import NftNetlinkError
from nodeagent.proxy.nftables import STATIC, ElementOp, NetlinkElementWriter, T, run_nft, static_rules
from tests.helpers.proxy_topology import nft_ruleset

pytestmark = pytest.mark.root

CHAIN = "service-ABCDEFGH-default/web/tcp/http"
OPS: list[ElementOp] = [
    ("add", "service-ips", "10.96.0.10 . tcp . 80", f"goto {CHAIN}"),
    ("add", "service-ips", "10.96.0.11 . udp . 53", f"goto {CHAIN}"),
    ("add", "no-endpoint-services", "10.96.0.12 . tcp . 443", "goto reject-chain"),
    ("add", "no-endpoint-services", "10.96.0.13 . sctp . 9", "drop"),
    ("add", "service-nodeports", "tcp . 30080", f"goto {CHAIN}"),
    ("add", "no-endpoint-nodeports", "udp . 30053", "drop"),
    ("add", "hairpin-endpoints", "10.244.1.2 . 10.244.1.2", None),
    # two Services' slots side by side in one shard: the first range's end is the second's start
    ("add", "endpoint-slots-tcp-3", "0-21844", "10.244.1.2 . 8080"),
    ("add", "endpoint-slots-tcp-3", "21845-43689", "10.244.2.2 . 8080"),
    ("add", "endpoint-slots-tcp-3", "43690-65535", "10.244.3.2 . 8080"),
    ("add", "endpoint-slots-tcp-3", "65536-131071", "10.244.4.2 . 65535"),
    ("add", "endpoint-slots-udp-7", "4294770688-4294836223", "10.244.5.2 . 53"),
]


def _as_nft_text(ops: list[ElementOp]) -> str:
    lines = []
    for op, name, key, value in ops:
        element = key if op == "delete" or value is None else f"{key} : {value}"
        lines.append(f"{op} element {T} {name} {{ {element} }}")
    return "\n".join(lines) + "\n"


def _table(ns: str) -> str:
    run_in_netns(ns, run_nft, STATIC + f"add chain {T} {CHAIN}\n" + static_rules())
    return ns


def test_elements_read_back_as_nft_writes_them(netns_factory: Callable[[str], str]) -> None:
    by_nft, by_netlink = _table(netns_factory("nlA")), _table(netns_factory("nlB"))
    writer = NetlinkElementWriter()
    run_in_netns(by_nft, run_nft, _as_nft_text(OPS))
    run_in_netns(by_netlink, writer, OPS)
    written = nft_ruleset(by_netlink)
    assert written == nft_ruleset(by_nft)
    assert "43690-65535 : 10.244.3.2 . 8080, 65536-131071 : 10.244.4.2 . 65535" in written
    assert "10.96.0.10 . tcp . 80 : goto " + CHAIN in written
    # replace one endpoint, resize another slot, drop a verdict: deletes then adds, one transaction
    change: list[ElementOp] = [
        ("delete", "endpoint-slots-tcp-3", "21845-43689", None),
        ("delete", "endpoint-slots-tcp-3", "65536-131071", None),
        ("delete", "service-ips", "10.96.0.11 . udp . 53", None),
        ("delete", "hairpin-endpoints", "10.244.1.2 . 10.244.1.2", None),
        ("add", "endpoint-slots-tcp-3", "21845-43689", "10.244.9.9 . 8080"),
        ("add", "endpoint-slots-tcp-3", "65536-98303", "10.244.4.2 . 65535"),
        ("add", "endpoint-slots-tcp-3", "98304-131071", "10.244.4.3 . 65535"),
    ]
    run_in_netns(by_nft, run_nft, _as_nft_text(change))
    run_in_netns(by_netlink, writer, change)
    written = nft_ruleset(by_netlink)
    assert written == nft_ruleset(by_nft)
    assert "21845-43689 : 10.244.9.9 . 8080" in written and "10.96.0.11" not in written


def test_a_refused_element_applies_nothing(netns_factory: Callable[[str], str]) -> None:
    ns = _table(netns_factory("nlC"))
    writer = NetlinkElementWriter()
    before = nft_ruleset(ns)
    with pytest.raises(NftNetlinkError, match="No such file"):
        run_in_netns(ns, writer, [("add", "service-ips", "10.96.0.10 . tcp . 80", f"goto {CHAIN}"),
                                  ("delete", "endpoint-slots-tcp-0", "0-65535", None)])  # absent
    assert nft_ruleset(ns) == before
    # a verdict naming a chain that does not exist is refused too, and the socket still works after
    with pytest.raises(NftNetlinkError):
        run_in_netns(ns, writer, [("add", "service-ips", "10.96.0.10 . tcp . 80", "goto no-such-chain")])
    run_in_netns(ns, writer, [("add", "service-ips", "10.96.0.10 . tcp . 80", f"goto {CHAIN}")])
    assert f"10.96.0.10 . tcp . 80 : goto {CHAIN}" in nft_ruleset(ns)
