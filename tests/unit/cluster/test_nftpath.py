"""Reading a Service's nftables path back from `nft list` output (trace in nftables mode)."""

from __future__ import annotations

from nodeagent.cluster.nftpath import chain_rules, map_elements, path_from_listings

SERVICE_IPS = """table ip kube-proxy {
\tmap service-ips {
\t\ttype ipv4_addr . inet_proto . inet_service : verdict
\t\telements = { 10.96.0.50 . tcp . 80 : goto service-SUSTUHLJ-default/web/tcp/http,
\t\t\t     10.96.0.51 . tcp . 80 : goto service-XFP4E4QY-default/db/tcp/http,
\t\t\t     10.96.0.52 . udp . 53 : goto service-4MFDZMKA-default/dns/udp/dns }
\t}
}
"""
CHAIN = """table ip kube-proxy {
\tchain service-XFP4E4QY-default/db/tcp/http {
\t\tip daddr 10.96.0.51 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
\t\tmeta l4proto tcp dnat ip to numgen random mod 65536 offset 65536 map @endpoint-slots-tcp-2
\t}
}
"""
SLOTS = """table ip kube-proxy {
\tmap endpoint-slots-tcp-2 {
\t\ttypeof numgen random mod 1 : ip daddr . tcp dport
\t\tflags interval
\t\telements = { 0-65535 : 10.244.9.9 . 8080, 65536-87380 : 10.244.1.2 . 8080,
\t\t\t     87381-109225 : 10.244.1.3 . 8080, 109226-131071 : 10.244.1.4 . 8080 }
\t}
}
"""


def test_map_elements_span_lines_and_ignore_the_type_line() -> None:
    elems = map_elements(SERVICE_IPS)
    assert [k for k, _ in elems] == ["10.96.0.50 . tcp . 80", "10.96.0.51 . tcp . 80", "10.96.0.52 . udp . 53"]
    assert elems[2][1] == "goto service-4MFDZMKA-default/dns/udp/dns"
    assert map_elements("table ip kube-proxy {\n\tmap m {\n\t}\n}\n") == []


def test_path_keeps_only_the_chains_own_key_range() -> None:
    path = path_from_listings(SERVICE_IPS, "10.96.0.51", "tcp", 80, CHAIN, SLOTS)
    assert path is not None and path.chain == "service-XFP4E4QY-default/db/tcp/http"
    assert path.entry == "10.96.0.51 . tcp . 80 : goto service-XFP4E4QY-default/db/tcp/http"
    assert len(path.rules) == 2 and path.span == 65536
    # another chain's interval (0-65535) in the same shard is not this Service's
    assert path.shares == [(65536, 87380, "10.244.1.2 . 8080"), (87381, 109225, "10.244.1.3 . 8080"),
                           (109226, 131071, "10.244.1.4 . 8080")]
    assert path_from_listings(SERVICE_IPS, "10.96.0.51", "udp", 80) is None


def test_offset_zero_is_not_listed_by_nft() -> None:
    chain = CHAIN.replace(" offset 65536", "")
    path = path_from_listings(SERVICE_IPS, "10.96.0.51", "tcp", 80, chain, SLOTS)
    assert path is not None and path.shares == [(0, 65535, "10.244.9.9 . 8080")]
    assert chain_rules(chain)[1].startswith("meta l4proto tcp dnat")
