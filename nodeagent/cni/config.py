"""The network configuration our plugin reads from stdin, validated into dataclasses.

Keys follow the reference bridge + host-local plugins so that one conflist works with either:
bridge, isGateway, isDefaultGateway, ipMasq, mtu, hairpinMode, promiscMode, and under "ipam"
the host-local keys ranges/subnet/rangeStart/rangeEnd/gateway/routes/dataDir. Our additions:
daemonSocket (read by the shim) and clusterCIDR (what ipMasq leaves alone).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from nodeagent.cni.errors import INVALID_CONFIG, CNIError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_BRIDGE = "cni0"
DEFAULT_IPAM_DATA_DIR = "/var/lib/cni/networks"
DEFAULT_DAEMON_SOCKET = "/var/run/nodeagent/cni/daemon.sock"


def _bad(msg: str, details: str = "") -> CNIError:
    return CNIError(INVALID_CONFIG, msg, details)


@dataclass(frozen=True)
class Range:
    """One host-local range: addresses rangeStart..rangeEnd of subnet, gateway excluded."""

    subnet: IPNetwork
    range_start: IPAddress
    range_end: IPAddress
    gateway: IPAddress

    def __contains__(self, ip: object) -> bool:
        return isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address) and (
            self.range_start <= ip <= self.range_end  # type: ignore[operator]
        )

    def prefixed(self, ip: IPAddress) -> str:
        return f"{ip}/{self.subnet.prefixlen}"


@dataclass(frozen=True)
class Route:
    dst: IPNetwork
    gw: IPAddress | None = None


@dataclass(frozen=True)
class IPAMConfig:
    type: str
    range_sets: tuple[tuple[Range, ...], ...]
    routes: tuple[Route, ...]
    data_dir: str


@dataclass(frozen=True)
class NetConf:
    cni_version: str
    name: str
    type: str
    bridge: str = DEFAULT_BRIDGE
    is_gateway: bool = False
    is_default_gateway: bool = False
    ip_masq: bool = False
    mtu: int = 0
    hairpin_mode: bool = False
    promisc_mode: bool = False
    cluster_cidr: IPNetwork | None = None
    daemon_socket: str = DEFAULT_DAEMON_SOCKET
    ipam: IPAMConfig | None = None
    prev_result: dict[str, Any] | None = None
    valid_attachments: tuple[tuple[str, str], ...] | None = None
    dns: dict[str, Any] = field(default_factory=dict)


def _bool(raw: dict[str, Any], key: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise _bad(f"invalid {key}", f"{key} must be true or false, got {value!r}")
    return value


def _network(value: Any, what: str) -> IPNetwork:
    if not isinstance(value, str):
        raise _bad(f"invalid {what}", f"{what} must be a CIDR string, got {value!r}")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError as e:
        raise _bad(f"invalid {what}", f"{value!r}: {e}") from None


def _address(value: Any, what: str) -> IPAddress:
    if not isinstance(value, str):
        raise _bad(f"invalid {what}", f"{what} must be an IP address string, got {value!r}")
    try:
        return ipaddress.ip_address(value)
    except ValueError as e:
        raise _bad(f"invalid {what}", f"{value!r}: {e}") from None


def parse_range(raw: Any) -> Range:
    """host-local's Range.Canonicalize: default start/end/gateway, all inside the subnet."""
    if not isinstance(raw, dict) or "subnet" not in raw:
        raise _bad("invalid ipam range", f"each range needs a subnet, got {raw!r}")
    subnet = _network(raw["subnet"], "ipam subnet")
    if subnet.num_addresses < 4 and subnet.version == 4:
        raise _bad("invalid ipam subnet", f"{subnet} is too small to allocate from")
    first = subnet.network_address + 1
    last = subnet.broadcast_address - 1 if subnet.version == 4 else subnet.broadcast_address
    start = _address(raw["rangeStart"], "rangeStart") if raw.get("rangeStart") else first
    end = _address(raw["rangeEnd"], "rangeEnd") if raw.get("rangeEnd") else last
    gateway = _address(raw["gateway"], "gateway") if raw.get("gateway") else first
    for what, ip in (("rangeStart", start), ("rangeEnd", end), ("gateway", gateway)):
        if ip not in subnet:
            raise _bad(f"invalid {what}", f"{ip} is not in subnet {subnet}")
    if start > end:  # type: ignore[operator]
        raise _bad("invalid ipam range", f"rangeStart {start} is after rangeEnd {end}")
    return Range(subnet, start, end, gateway)


def parse_ipam(raw: Any) -> IPAMConfig:
    if not isinstance(raw, dict) or not raw.get("type"):
        raise _bad("missing ipam", "the network config needs an \"ipam\" object with a \"type\"")
    if raw["type"] != "host-local":
        raise _bad("unsupported ipam type", f"{raw['type']!r}: this plugin implements host-local only")
    sets: list[tuple[Range, ...]] = []
    if raw.get("ranges"):
        if not isinstance(raw["ranges"], list):
            raise _bad("invalid ipam ranges", "ranges must be a list of range sets (lists)")
        for rs in raw["ranges"]:
            if not isinstance(rs, list) or not rs:
                raise _bad("invalid ipam ranges", f"each range set must be a non-empty list, got {rs!r}")
            sets.append(tuple(parse_range(r) for r in rs))
    elif raw.get("subnet"):
        sets.append((parse_range(raw),))
    else:
        raise _bad("invalid ipam", "ipam needs \"ranges\" or \"subnet\"")
    for rs in sets:
        for i, a in enumerate(rs):
            for b in rs[i + 1 :]:
                if a.subnet.version != b.subnet.version:
                    raise _bad("invalid ipam ranges", "a range set mixes IPv4 and IPv6")
                if a.range_start <= b.range_end and b.range_start <= a.range_end:  # type: ignore[operator]
                    raise _bad("invalid ipam ranges", f"ranges {a.subnet} and {b.subnet} overlap")
    routes = []
    for r in raw.get("routes") or []:
        if not isinstance(r, dict) or "dst" not in r:
            raise _bad("invalid ipam route", f"each route needs a dst, got {r!r}")
        routes.append(Route(_network(r["dst"], "route dst"), _address(r["gw"], "route gw") if r.get("gw") else None))
    data_dir = raw.get("dataDir") or DEFAULT_IPAM_DATA_DIR
    return IPAMConfig("host-local", tuple(sets), tuple(routes), data_dir)


def parse_netconf(raw: Any, *, need_ipam: bool = True) -> NetConf:
    """Validate the decoded stdin; raise CNIError(7) naming the bad key."""
    if not isinstance(raw, dict):
        raise _bad("invalid network config", "stdin must be a JSON object")
    name = raw.get("name")
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise _bad("invalid network name", f"name must be a non-empty string without '/', got {name!r}")
    mtu = raw.get("mtu", 0)
    if not isinstance(mtu, int) or isinstance(mtu, bool) or not (mtu == 0 or 68 <= mtu <= 65535):
        raise _bad("invalid mtu", f"mtu must be an integer 68..65535, got {mtu!r}")
    bridge = raw.get("bridge") or DEFAULT_BRIDGE
    if not isinstance(bridge, str) or len(bridge) > 15 or "/" in bridge or " " in bridge:
        raise _bad("invalid bridge", f"bridge must be an interface name (<=15 chars), got {bridge!r}")
    is_default_gw = _bool(raw, "isDefaultGateway")
    ipam = None
    if need_ipam or raw.get("ipam"):
        ipam = parse_ipam(raw.get("ipam"))
    valid = None
    if "cni.dev/valid-attachments" in raw:
        atts = raw["cni.dev/valid-attachments"]
        if not isinstance(atts, list):
            raise _bad("invalid cni.dev/valid-attachments", "must be a list of {containerID, ifname}")
        valid = tuple((str(a.get("containerID", "")), str(a.get("ifname", ""))) for a in atts if isinstance(a, dict))
    prev = raw.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise _bad("invalid prevResult", "prevResult must be an object")
    return NetConf(
        cni_version=raw["cniVersion"],
        name=name,
        type=str(raw.get("type", "")),
        bridge=bridge,
        # isDefaultGateway implies isGateway, as in the reference bridge plugin.
        is_gateway=_bool(raw, "isGateway") or is_default_gw,
        is_default_gateway=is_default_gw,
        ip_masq=_bool(raw, "ipMasq"),
        mtu=mtu,
        hairpin_mode=_bool(raw, "hairpinMode"),
        promisc_mode=_bool(raw, "promiscMode"),
        cluster_cidr=_network(raw["clusterCIDR"], "clusterCIDR") if raw.get("clusterCIDR") else None,
        daemon_socket=str(raw.get("daemonSocket") or DEFAULT_DAEMON_SOCKET),
        ipam=ipam,
        prev_result=prev,
        valid_attachments=valid,
        dns=dict(raw["dns"]) if isinstance(raw.get("dns"), dict) else {},
    )
