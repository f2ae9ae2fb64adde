"""The IPVS back end: virtual servers (rr) with real servers, through pyroute2's IPVS netlink.

As upstream pkg/proxy/ipvs: every cluster IP (and external / load-balancer IP) is put on a dummy
interface, kube-ipvs0, so the node accepts packets for it and IPVS (hooked at LOCAL_IN) rewrites
them to a real server; node ports become one virtual server per node IP. IPVS does no source NAT
by itself, so iptables rules (no ipset: plain rules per service) mark off-cluster and node-port
traffic for masquerade, and masquerade hairpin traffic (an endpoint reaching itself).

loadBalancerSourceRanges as upstream's IPVS proxier, minus its ipsets: filter INPUT/FORWARD ->
KUBE-PROXY-FIREWALL sends each filtered LB IP:port (its KUBE-LOAD-BALANCER-FW set) to
KUBE-SOURCE-RANGES-FIREWALL, which RETURNs the allowed sources (KUBE-LOAD-BALANCER-SOURCE-CIDR, and
-SOURCE-IP: the LB IP itself when a range holds a node IP) and DROPs the rest. The filter table sees
the packet before IPVS does (IPVS hooks LOCAL_IN after it), still addressed to the LB IP.
--nodeport-addresses, as upstream, chooses the node IPs that get node-port virtual servers.

The netlink calls sit behind `IpvsNetlink` so the logic is tested with a fake; this kernel has no
IP_VS (docs: ENVIRONMENT.md), the live test skips where /proc/net/ip_vs is absent.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Protocol

from nodeagent.proxy.backend import ProxyState, SyncResult
from nodeagent.proxy.iptables import names as n
from nodeagent.proxy.iptables.executor import Executor
from nodeagent.proxy.iptables.proxier import MASQUERADE_RULES, cleanup_iptables
from nodeagent.proxy.model import MASQ_MARK, Endpoint, ServicePort, categorize, ips_in

log = logging.getLogger(__name__)

DUMMY = "kube-ipvs0"
SCHEDULER = "rr"
PROTO = {"TCP": socket.IPPROTO_TCP, "UDP": socket.IPPROTO_UDP, "SCTP": 132}
IP_VS_SVC_F_PERSISTENT = 0x1
FWD_MASQ = 0  # IP_VS_CONN_F_MASQ: NAT to the real server
IPVS_CHAINS = (n.KUBE_SERVICES, n.KUBE_NODEPORTS, n.KUBE_POSTROUTING, n.KUBE_MARK_MASQ)
IPVS_FILTER_CHAINS = (n.KUBE_PROXY_FIREWALL, n.KUBE_SOURCE_RANGES_FIREWALL)
# as upstream's IPVS jumps, with no conntrack match: every packet is checked, so narrowing the
# source ranges cuts established connections too
FIREWALL_JUMP: dict[str, object] = {"comment": {"comment": "kube-proxy firewall rules"},
                                    "target": n.KUBE_PROXY_FIREWALL}


@dataclass(frozen=True, order=True)
class VirtualServer:
    ip: str
    port: int
    protocol: str  # TCP | UDP | SCTP
    scheduler: str = SCHEDULER
    persistent_seconds: int = 0  # sessionAffinity ClientIP

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.ip, self.port, self.protocol)


@dataclass(frozen=True, order=True)
class RealServer:
    ip: str
    port: int
    weight: int = 1


class IpvsNetlink(Protocol):
    def ensure_dummy(self, name: str) -> None: ...
    def delete_dummy(self, name: str) -> None: ...
    def list_addresses(self, name: str) -> set[str]: ...
    def add_address(self, name: str, ip: str) -> None: ...
    def delete_address(self, name: str, ip: str) -> None: ...
    def list_services(self) -> list[VirtualServer]: ...
    def add_service(self, vs: VirtualServer) -> None: ...
    def update_service(self, vs: VirtualServer) -> None: ...
    def delete_service(self, vs: VirtualServer) -> None: ...
    def list_dests(self, vs: VirtualServer) -> list[RealServer]: ...
    def add_dest(self, vs: VirtualServer, rs: RealServer) -> None: ...
    def delete_dest(self, vs: VirtualServer, rs: RealServer) -> None: ...


def ipvs_available() -> bool:
    return os.path.exists("/proc/net/ip_vs")


class PyrouteIpvs:
    """IpvsNetlink over pyroute2 (IPVS generic netlink + rtnetlink), in the calling thread's netns."""

    def __init__(self) -> None:
        from pyroute2 import IPVS, IPRoute  # heavy; only in IPVS mode

        self.ipr = IPRoute()
        self.ipvs = IPVS()

    def close(self) -> None:
        self.ipr.close()
        self.ipvs.close()

    def _index(self, name: str) -> int | None:
        found = self.ipr.link_lookup(ifname=name)
        return found[0] if found else None

    def ensure_dummy(self, name: str) -> None:
        if self._index(name) is None:
            self.ipr.link("add", ifname=name, kind="dummy")
        # kept down, like upstream: the addresses only need to be local, not reachable by ARP

    def delete_dummy(self, name: str) -> None:
        idx = self._index(name)
        if idx is not None:
            self.ipr.link("del", index=idx)

    def list_addresses(self, name: str) -> set[str]:
        idx = self._index(name)
        if idx is None:
            return set()
        return {a.get_attr("IFA_ADDRESS") for a in self.ipr.get_addr(index=idx, family=socket.AF_INET)}

    def add_address(self, name: str, ip: str) -> None:
        self.ipr.addr("add", index=self._index(name), address=ip, prefixlen=32)

    def delete_address(self, name: str, ip: str) -> None:
        self.ipr.addr("del", index=self._index(name), address=ip, prefixlen=32)

    def _svc(self, vs: VirtualServer):  # type: ignore[no-untyped-def]
        from pyroute2 import IPVSService

        kw: dict[str, object] = {"addr": vs.ip, "port": vs.port, "protocol": PROTO[vs.protocol],
                                 "sched_name": vs.scheduler}
        if vs.persistent_seconds:
            kw["flags"] = {"flags": IP_VS_SVC_F_PERSISTENT, "mask": 0xFFFF}
            kw["timeout"] = vs.persistent_seconds
            kw["netmask"] = "255.255.255.255"
        return IPVSService(**kw)

    def list_services(self) -> list[VirtualServer]:
        from pyroute2 import IPVSService

        out = []
        rev = {v: k for k, v in PROTO.items()}
        for msg in self.ipvs.service("dump"):
            s = IPVSService.from_message(msg)
            flags = (s.get("flags") or {}).get("flags", 0) if isinstance(s.get("flags"), dict) else 0
            out.append(VirtualServer(str(s["addr"]), int(s["port"]), rev.get(int(s["protocol"]), "TCP"),
                                     str(s.get("sched_name") or SCHEDULER),
                                     int(s.get("timeout") or 0) if flags & IP_VS_SVC_F_PERSISTENT else 0))
        return out

    def add_service(self, vs: VirtualServer) -> None:
        self.ipvs.service("add", service=self._svc(vs))

    def update_service(self, vs: VirtualServer) -> None:
        self.ipvs.service("set", service=self._svc(vs))

    def delete_service(self, vs: VirtualServer) -> None:
        self.ipvs.service("del", service=self._svc(vs))

    def list_dests(self, vs: VirtualServer) -> list[RealServer]:
        from pyroute2 import IPVSDest

        return [RealServer(str(d["addr"]), int(d["port"]), int(d.get("weight") or 0))
                for d in (IPVSDest.from_message(m) for m in self.ipvs.dest("dump", service=self._svc(vs)))]

    def add_dest(self, vs: VirtualServer, rs: RealServer) -> None:
        from pyroute2 import IPVSDest

        self.ipvs.dest("add", service=self._svc(vs),
                       dest=IPVSDest(addr=rs.ip, port=rs.port, weight=rs.weight, fwd_method=FWD_MASQ))

    def delete_dest(self, vs: VirtualServer, rs: RealServer) -> None:
        from pyroute2 import IPVSDest

        self.ipvs.dest("del", service=self._svc(vs), dest=IPVSDest(addr=rs.ip, port=rs.port))


@dataclass
class FakeIpvs:
    """In-memory IpvsNetlink for unit tests; it refuses what the kernel would (duplicates, dests of a
    missing service, addresses on a missing interface)."""

    links: dict[str, set[str]] = field(default_factory=dict)
    services: dict[tuple[str, int, str], VirtualServer] = field(default_factory=dict)
    dests: dict[tuple[str, int, str], dict[tuple[str, int], RealServer]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def ensure_dummy(self, name: str) -> None:
        self.links.setdefault(name, set())

    def delete_dummy(self, name: str) -> None:
        self.links.pop(name, None)

    def list_addresses(self, name: str) -> set[str]:
        return set(self.links.get(name, set()))

    def add_address(self, name: str, ip: str) -> None:
        if name not in self.links:
            raise OSError(f"no such device {name}")
        if ip in self.links[name]:
            raise OSError(f"address {ip} exists on {name}")
        self.links[name].add(ip)
        self.calls.append(f"addr add {ip}")

    def delete_address(self, name: str, ip: str) -> None:
        self.links[name].remove(ip)
        self.calls.append(f"addr del {ip}")

    def list_services(self) -> list[VirtualServer]:
        return list(self.services.values())

    def add_service(self, vs: VirtualServer) -> None:
        if vs.key in self.services:
            raise OSError(f"virtual server {vs.key} exists")
        self.services[vs.key] = vs
        self.dests[vs.key] = {}
        self.calls.append(f"service add {vs.ip}:{vs.port}/{vs.protocol}")

    def update_service(self, vs: VirtualServer) -> None:
        if vs.key not in self.services:
            raise OSError(f"no virtual server {vs.key}")
        self.services[vs.key] = vs
        self.calls.append(f"service set {vs.ip}:{vs.port}/{vs.protocol}")

    def delete_service(self, vs: VirtualServer) -> None:
        del self.services[vs.key]
        del self.dests[vs.key]
        self.calls.append(f"service del {vs.ip}:{vs.port}/{vs.protocol}")

    def list_dests(self, vs: VirtualServer) -> list[RealServer]:
        return list(self.dests[vs.key].values())

    def add_dest(self, vs: VirtualServer, rs: RealServer) -> None:
        if vs.key not in self.services:
            raise OSError(f"no virtual server {vs.key}")
        if (rs.ip, rs.port) in self.dests[vs.key]:
            raise OSError(f"real server {rs.ip}:{rs.port} exists")
        self.dests[vs.key][(rs.ip, rs.port)] = rs
        self.calls.append(f"dest add {vs.ip}:{vs.port}/{vs.protocol} -> {rs.ip}:{rs.port}")

    def delete_dest(self, vs: VirtualServer, rs: RealServer) -> None:
        del self.dests[vs.key][(rs.ip, rs.port)]
        self.calls.append(f"dest del {vs.ip}:{vs.port}/{vs.protocol} -> {rs.ip}:{rs.port}")


def desired_servers(sp: ServicePort, endpoints: tuple[Endpoint, ...],
                    node_ips: tuple[str, ...], zone: str = "") -> dict[VirtualServer, set[RealServer]]:
    """Virtual servers of one service port with their real servers."""
    cat = categorize(sp, endpoints, zone=zone)
    internal = cat.local if sp.internal_policy_local else cat.cluster
    external = cat.local if sp.external_policy_local else cat.cluster

    def rs(eps: list[Endpoint]) -> set[RealServer]:
        return {RealServer(e.ip, e.port) for e in eps}

    out: dict[VirtualServer, set[RealServer]] = {}
    aff = sp.session_affinity_seconds
    out[VirtualServer(sp.cluster_ip, sp.port, sp.protocol, persistent_seconds=aff)] = rs(internal)
    for ip in (*sp.external_ips, *sp.load_balancer_ips):
        out[VirtualServer(ip, sp.port, sp.protocol, persistent_seconds=aff)] = rs(external)
    if sp.node_port:
        for ip in node_ips:
            out[VirtualServer(ip, sp.node_port, sp.protocol, persistent_seconds=aff)] = rs(external)
    return out


class IpvsBackend:
    name = "ipvs"

    def __init__(self, netlink: IpvsNetlink, executor: Executor) -> None:
        self.nl = netlink
        self.ipt = executor
        self.last_restore = ""

    def render_iptables(self, state: ProxyState) -> str:
        """The masquerade rules IPVS needs, without ipset: one rule per service address."""
        out = ["*nat"] + [f":{c} - [0:0]" for c in IPVS_CHAINS]
        out += MASQUERADE_RULES
        hairpin: list[str] = []
        for spn in sorted(state.services):
            sp = state.services[spn]
            m = f"-m {sp.proto} -p {sp.proto}"
            if state.cluster_cidr:
                out.append(f'-A {n.KUBE_SERVICES} -m comment --comment "{spn} cluster IP" {m} -d {sp.cluster_ip} '
                           f"--dport {sp.port} ! -s {state.cluster_cidr} -j {n.KUBE_MARK_MASQ}")
            for ip in (*sp.external_ips, *sp.load_balancer_ips):
                if not sp.external_policy_local:
                    out.append(f'-A {n.KUBE_SERVICES} -m comment --comment "{spn} external IP" {m} -d {ip} '
                               f"--dport {sp.port} -j {n.KUBE_MARK_MASQ}")
            if sp.node_port and not sp.external_policy_local:
                out.append(f"-A {n.KUBE_NODEPORTS} -m comment --comment {spn} {m} --dport {sp.node_port} "
                           f"-j {n.KUBE_MARK_MASQ}")
            for e in categorize(sp, state.endpoints.get(spn, ()), zone=state.node.zone).all_reachable:
                hairpin.append(f'-A {n.KUBE_POSTROUTING} -m comment --comment "{spn} hairpin" {m} -s {e.ip} '
                               f"-d {e.ip} --dport {e.port} -j MASQUERADE")
        out.append(f"-A {n.KUBE_SERVICES} -m addrtype --dst-type LOCAL -j {n.KUBE_NODEPORTS}")
        # hairpin first: such packets carry no mark
        idx = out.index(f"-A {n.KUBE_POSTROUTING} -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN")
        out[idx:idx] = hairpin
        out.append("COMMIT")
        out += self.render_firewall(state)
        return "\n".join(out) + "\n"

    @staticmethod
    def render_firewall(state: ProxyState) -> list[str]:
        """The filter table's source-range rules. Upstream matches ipsets; without ipset each set
        entry becomes one rule: (LB IP, port) in KUBE-PROXY-FIREWALL, (LB IP, port, source) in
        KUBE-SOURCE-RANGES-FIREWALL."""
        out = ["*filter"] + [f":{c} - [0:0]" for c in IPVS_FILTER_CHAINS]
        allowed: list[str] = []
        for spn in sorted(state.services):
            sp = state.services[spn]
            if not sp.load_balancer_source_ranges:
                continue
            # the LB IP is an allowed source too when a range holds the node (upstream allowFromNode)
            from_node = bool(ips_in(sp.load_balancer_source_ranges, state.node.ips))
            for ip in sp.load_balancer_ips:
                dst = f"-m {sp.proto} -p {sp.proto} -d {ip} --dport {sp.port}"
                out.append(f'-A {n.KUBE_PROXY_FIREWALL} -m comment --comment "{spn} loadbalancer IP" {dst} '
                           f"-j {n.KUBE_SOURCE_RANGES_FIREWALL}")
                sources = [*sp.load_balancer_source_ranges, *([ip] if from_node else [])]
                allowed += [f'-A {n.KUBE_SOURCE_RANGES_FIREWALL} -m comment --comment "{spn} loadbalancer '
                            f'source range" {dst} -s {src} -j RETURN' for src in sources]
        out += allowed
        out.append(f"-A {n.KUBE_SOURCE_RANGES_FIREWALL} -j DROP")
        out.append("COMMIT")
        return out

    def _ensure_iptables_base(self) -> None:
        for chain in IPVS_CHAINS:
            self.ipt.ensure_chain("nat", chain)
        for chain in IPVS_FILTER_CHAINS:
            self.ipt.ensure_chain("filter", chain)
        for table, chain, rule in (
            ("nat", "POSTROUTING", {"comment": {"comment": "kubernetes postrouting rules"},
                                    "target": n.KUBE_POSTROUTING}),
            ("nat", "OUTPUT", {"comment": {"comment": "kubernetes service portals"}, "target": n.KUBE_SERVICES}),
            ("nat", "PREROUTING", {"comment": {"comment": "kubernetes service portals"}, "target": n.KUBE_SERVICES}),
            ("filter", "INPUT", FIREWALL_JUMP),
            ("filter", "FORWARD", FIREWALL_JUMP),
        ):
            self.ipt.ensure_rule(table, chain, rule)

    def sync(self, state: ProxyState, changed: set[str] | None) -> SyncResult:
        """Reconcile the kernel with the desired virtual servers (a diff against a dump, so always
        complete and cheap), then the addresses on kube-ipvs0, then the masquerade rules."""
        desired: dict[VirtualServer, set[RealServer]] = {}
        # --nodeport-addresses: node ports only on the node IPs inside them (upstream GetNodeIPs;
        # the Node's addresses here, as without the flag)
        nodeport_ips = ips_in(state.nodeport_addresses, state.node.ips) if state.nodeport_addresses else state.node.ips
        for spn in sorted(state.services):
            desired.update(desired_servers(state.services[spn], state.endpoints.get(spn, ()), nodeport_ips,
                                           zone=state.node.zone))
        by_key = {vs.key: vs for vs in desired}
        current = {vs.key: vs for vs in self.nl.list_services()}
        for key, vs in current.items():
            if key not in by_key:
                self.nl.delete_service(vs)
        for key, vs in by_key.items():
            if key not in current:
                self.nl.add_service(vs)
            elif current[key] != vs:
                self.nl.update_service(vs)
            want = desired[vs]
            have = set(self.nl.list_dests(vs)) if key in current else set()
            for rs in sorted(have - want):
                self.nl.delete_dest(vs, rs)
            for rs in sorted(want - have):
                self.nl.add_dest(vs, rs)

        self.nl.ensure_dummy(DUMMY)
        node_ips = set(state.node.ips)
        want_addrs = {vs.ip for vs in desired} - node_ips
        have_addrs = self.nl.list_addresses(DUMMY)
        for ip in sorted(have_addrs - want_addrs):
            self.nl.delete_address(DUMMY, ip)
        for ip in sorted(want_addrs - have_addrs):
            self.nl.add_address(DUMMY, ip)

        self._ensure_iptables_base()
        text = self.render_iptables(state)
        self.ipt.restore(text, noflush=True)
        self.last_restore = text
        return SyncResult(full=changed is None)

    def cleanup(self) -> None:
        cleanup_ipvs(self.nl)
        cleanup_iptables(self.ipt)  # the masquerade and firewall chains


def cleanup_ipvs(nl: IpvsNetlink) -> None:
    """Remove every virtual server and the dummy interface (`--cleanup`)."""
    for vs in nl.list_services():
        nl.delete_service(vs)
    nl.delete_dummy(DUMMY)

