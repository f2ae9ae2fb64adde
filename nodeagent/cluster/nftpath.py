"""A Service's path through kube-proxy's nftables table, for `nodeagent trace` in nftables mode.

nftables mode keeps no per-endpoint rule (and no counters) to watch move: a packet to a cluster IP
is looked up in the `service-ips` verdict map, goes to its `service-...` chain, and that chain's one
dnat rule draws `numgen random mod 65536 offset BASE` in an `endpoint-slots` interval map whose
intervals are the endpoints (nodeagent/proxy/nftables.py). This reads that path back with `nft list`;
which endpoint the traced packet got is in its conntrack entry.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field

from nodeagent.netns import nsenter_argv

TABLE = ("ip", "kube-proxy")
_ELEMENT = re.compile(r"([^,{}=]+?) : ([^,{}]+)")
# nft lists no `offset` when it is 0
_DISPATCH = re.compile(r"numgen random mod (\d+)(?: offset (\d+))? map @(endpoint-slots-\S+)")


@dataclass
class NftPath:
    entry: str  # "10.96.0.5 . tcp . 80 : goto service-..."
    chain: str
    rules: list[str] = field(default_factory=list)
    # the chain's endpoints: (first key, last key, "ip . port"), each drawn with (last-first+1)/span
    shares: list[tuple[int, int, str]] = field(default_factory=list)
    span: int = 0


def map_elements(listing: str) -> list[tuple[str, str]]:
    """(key, value) pairs of an `nft list map` listing (elements may span lines)."""
    # up to the first "}": the elements' own braces (keys, values and chain names hold none)
    text = listing.split("elements = {", 1)[1].split("}", 1)[0] if "elements = {" in listing else ""
    return [(k.strip(), v.strip()) for k, v in _ELEMENT.findall(" ".join(text.split()))]


def chain_rules(listing: str) -> list[str]:
    """The rules of an `nft list chain` listing."""
    lines = [ln.strip() for ln in listing.splitlines()]
    return [ln for ln in lines if ln and not ln.startswith(("table ", "chain ", "}", "type "))]


def path_from_listings(service_ips: str, cluster_ip: str, proto: str, port: int,
                       chain_listing: str | None = None, slots_listing: str | None = None) -> NftPath | None:
    """The path, from the listings of @service-ips, the Service's chain and its slot map."""
    key = f"{cluster_ip} . {proto} . {port}"
    for k, v in map_elements(service_ips):
        if k == key and v.startswith("goto "):
            path = NftPath(entry=f"{k} : {v}", chain=v.split()[1])
            break
    else:
        return None
    if chain_listing is None:
        return path
    path.rules = chain_rules(chain_listing)
    dispatch = next((m for r in path.rules if (m := _DISPATCH.search(r))), None)
    if dispatch is None or slots_listing is None:
        return path
    path.span, base = int(dispatch.group(1)), int(dispatch.group(2) or 0)
    for k, v in map_elements(slots_listing):
        lo, _, hi = k.partition("-")
        if lo.isdigit() and hi.isdigit() and base <= int(lo) and int(hi) < base + path.span:
            path.shares.append((int(lo), int(hi), v))
    path.shares.sort()
    return path


def slot_map(path: NftPath) -> str | None:
    return next((m.group(3) for r in path.rules if (m := _DISPATCH.search(r))), None)


def _nft(netns: str, *args: str) -> str | None:
    p = subprocess.run([*nsenter_argv(netns), "nft", *args], capture_output=True, text=True)
    return p.stdout if p.returncode == 0 else None


def service_path(netns: str, cluster_ip: str, proto: str, port: int) -> NftPath | None:
    """The Service's path in the node's table, or None (no table: the node runs iptables mode)."""
    service_ips = _nft(netns, "list", "map", *TABLE, "service-ips")
    if service_ips is None:
        return None
    path = path_from_listings(service_ips, cluster_ip, proto, port)
    if path is None:
        return None
    chain = _nft(netns, "list", "chain", *TABLE, path.chain) or ""
    path.rules = chain_rules(chain)
    slots = slot_map(path)
    listing = _nft(netns, "list", "map", *TABLE, slots) if slots else None
    return path_from_listings(service_ips, cluster_ip, proto, port, chain, listing)
