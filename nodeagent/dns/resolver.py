"""Answers for names in the cluster domain, from the ClusterIndex (no I/O).

Names follow the Kubernetes DNS-based service discovery specification (kubernetes/dns
docs/specification.md, schema 1.1.0) as CoreDNS's kubernetes plugin serves it:

    <svc>.<ns>.svc.<zone>                  A/AAAA ClusterIP, or the ready endpoints if headless,
                                           CNAME for type ExternalName; SRV for every named port
    <host>.<svc>.<ns>.svc.<zone>           A/AAAA of one endpoint of a headless Service (its
                                           hostname, else its dashed address)
    _<port>._<proto>.<svc>.<ns>.svc.<zone> SRV of a named port
    <a-b-c-d>.<ns>.pod.<zone>              A of a pod address ("pods insecure", kubeadm's default)
    dns-version.<zone>                     TXT "1.1.0"
    <zone>                                 SOA, NS (ns.dns.<zone> -> the kube-dns Service IP)
    d.c.b.a.in-addr.arpa, ...ip6.arpa      PTR of ClusterIPs and headless endpoints

A name that exists without records of the asked type gets NOERROR with no answer and the SOA in
the authority section (NODATA, RFC 2308 section 2.2); a name that does not exist gets NXDOMAIN with
the SOA. Names under the zone are never forwarded, so search-path expansions of outside names
(www.example.com.default.svc.cluster.local) end here at once with NXDOMAIN.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field

from dnslib import AAAA, CNAME, NS, PTR, QTYPE, RCODE, RR, SOA, SRV, TXT, A

from nodeagent.dns.index import ClusterIndex, Endpoint, cluster_ips, dashed, is_headless

SCHEMA_VERSION = "1.1.0"
REVERSE_ZONES = ("in-addr.arpa", "ip6.arpa")
MAX_CNAME_CHAIN = 8


@dataclass
class Answer:
    rcode: int
    answer: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    zone: str = "."  # the zone that answered ("." when the name is not ours), a metrics label
    forward: bool = False  # outside our zones: the server forwards it upstream or refuses it
    chase: str | None = None  # a CNAME target outside our zone, for the server to resolve upstream

    @property
    def authoritative(self) -> bool:
        return not self.forward


class Resolver:
    def __init__(self, index: ClusterIndex, domain: str = "cluster.local", ttl: int = 30,
                 dns_ip: str = "10.96.0.10") -> None:
        self.index = index
        self.domain = domain.strip(".").lower()
        self.ttl = ttl
        self.dns_ip = dns_ip
        self.serial = int(time.time()) & 0xFFFFFFFF
        self._zone_labels = tuple(self.domain.split("."))
        self._chain_depth = 0  # ExternalName targets being followed (resolution is synchronous)

    # ---- building blocks ----
    def soa(self, zone: str | None = None) -> RR:
        zone = zone or self.domain
        # CoreDNS's SOA: mname ns.dns.<zone>, rname hostmaster.<zone>, refresh 7200, retry 1800,
        # expire 86400, minimum = the TTL (negative answers are cached no longer than positive ones).
        return RR(zone + ".", QTYPE.SOA, ttl=self.ttl,
                  rdata=SOA(f"ns.dns.{self.domain}.", f"hostmaster.{self.domain}.",
                            (self.serial, 7200, 1800, 86400, self.ttl)))

    def _nodata(self, zone: str | None = None) -> Answer:
        return Answer(RCODE.NOERROR, authority=[self.soa(zone)], zone=self._zone_label(zone))

    def _nxdomain(self, zone: str | None = None) -> Answer:
        return Answer(RCODE.NXDOMAIN, authority=[self.soa(zone)], zone=self._zone_label(zone))

    def _zone_label(self, zone: str | None) -> str:
        return (zone or self.domain) + "."

    def _addr_rr(self, name: str, address: str) -> RR:
        if ipaddress.ip_address(address).version == 4:
            return RR(name, QTYPE.A, ttl=self.ttl, rdata=A(address))
        return RR(name, QTYPE.AAAA, ttl=self.ttl, rdata=AAAA(address))

    def _ok(self, answer: list[RR], additional: list[RR] | None = None) -> Answer:
        if not answer:
            return self._nodata()
        return Answer(RCODE.NOERROR, answer=answer, additional=additional or [], zone=self.domain + ".")

    @staticmethod
    def _wants(qtype: int, address: str) -> bool:
        version = ipaddress.ip_address(address).version
        if qtype == QTYPE.ANY:
            return True
        return (qtype == QTYPE.A and version == 4) or (qtype == QTYPE.AAAA and version == 6)

    # ---- entry point ----
    def resolve(self, qname: str, qtype: int) -> Answer:
        name = qname.rstrip(".").lower()
        labels = tuple(name.split(".")) if name else ()
        n = len(self._zone_labels)
        if labels[-n:] == self._zone_labels and len(labels) >= n:
            return self._in_zone(name, labels[:-n], qtype)
        for zone in REVERSE_ZONES:
            if name == zone or name.endswith("." + zone):
                return self._reverse(name, qtype, zone)
        return Answer(RCODE.REFUSED, forward=True)

    def _in_zone(self, fqdn: str, rel: tuple[str, ...], qtype: int) -> Answer:
        name = fqdn + "."
        if not rel:  # the apex
            if qtype == QTYPE.SOA:
                return self._ok([self.soa()])
            if qtype == QTYPE.NS:
                ns_name = f"ns.dns.{self.domain}."
                return self._ok([RR(name, QTYPE.NS, ttl=self.ttl, rdata=NS(ns_name))],
                                [self._addr_rr(ns_name, self.dns_ip)])
            return self._nodata()
        if rel == ("dns-version",):
            if qtype in (QTYPE.TXT, QTYPE.ANY):
                return self._ok([RR(name, QTYPE.TXT, ttl=self.ttl, rdata=TXT(SCHEMA_VERSION))])
            return self._nodata()
        if rel == ("ns", "dns"):
            return self._ok([self._addr_rr(name, self.dns_ip)] if self._wants(qtype, self.dns_ip) else [])
        if rel == ("dns",):
            return self._nodata()
        if rel[-1] == "svc":
            return self._svc(name, rel[:-1], qtype)
        if rel[-1] == "pod":
            return self._pod(name, rel[:-1], qtype)
        return self._nxdomain()

    # ---- <...>.svc.<zone> ----
    def _svc(self, name: str, rel: tuple[str, ...], qtype: int) -> Answer:
        if not rel:  # svc.<zone> itself: an empty non-terminal
            return self._nodata()
        if len(rel) == 1:
            return self._nodata() if self.index.has_namespace(rel[0]) else self._nxdomain()
        if len(rel) == 2:
            return self._service(name, rel[1], rel[0], qtype)
        if len(rel) == 3:
            if rel[0].startswith("_"):  # _<proto>.<svc>.<ns>: exists if a port has that protocol
                svc = self.index.service(rel[2], rel[1])
                protos = {p[1].lower() for p in self._ports(svc, rel[2], rel[1])} if svc else set()
                return self._nodata() if rel[0][1:] in protos else self._nxdomain()
            return self._endpoint(name, rel[0], rel[1], rel[2], qtype)
        if len(rel) == 4 and rel[0].startswith("_") and rel[1].startswith("_"):
            return self._srv_port(name, rel[0][1:], rel[1][1:], rel[2], rel[3], qtype)
        return self._nxdomain()

    def _service(self, name: str, ns: str, svc_name: str, qtype: int) -> Answer:
        svc = self.index.service(ns, svc_name)
        if svc is None:
            return self._nxdomain()
        spec = svc.get("spec") or {}
        if spec.get("type") == "ExternalName":
            return self._external_name(name, str(spec.get("externalName") or ""), qtype)
        if qtype == QTYPE.SRV:
            return self._srv_all(name, svc, ns, svc_name)
        if qtype not in (QTYPE.A, QTYPE.AAAA, QTYPE.ANY):
            return self._nodata()
        if is_headless(svc):
            addrs = [ep.address for ep in self.index.endpoints(ns, svc_name)]
        else:
            addrs = cluster_ips(svc)
        return self._ok([self._addr_rr(name, a) for a in addrs if self._wants(qtype, a)])

    def _external_name(self, name: str, target: str, qtype: int) -> Answer:
        target = target.rstrip(".").lower()
        if not target:
            return self._nodata()
        cname = RR(name, QTYPE.CNAME, ttl=self.ttl, rdata=CNAME(target + "."))
        if qtype == QTYPE.CNAME:
            return self._ok([cname])
        # Follow the chain inside the zone: resolving the target follows the rest of it, so the depth
        # of this recursion is the chain's length, bounded to stop a loop (a -> b -> a; RFC 1034
        # section 3.6.2). A target outside the zone is left for the server to resolve upstream
        # (CoreDNS does the same through its upstream lookup).
        if self._chain_depth >= MAX_CNAME_CHAIN:
            return Answer(RCODE.SERVFAIL, answer=[cname], zone=self.domain + ".")
        self._chain_depth += 1
        try:
            inner = self.resolve(target, qtype)
        finally:
            self._chain_depth -= 1
        if inner.forward:
            return Answer(RCODE.NOERROR, answer=[cname], zone=self.domain + ".", chase=target)
        # The chain's end decides the rcode (RFC 6604): NXDOMAIN when the last target does not exist.
        return Answer(inner.rcode, answer=[cname, *inner.answer], authority=inner.authority,
                      additional=inner.additional, zone=self.domain + ".", chase=inner.chase)

    def _endpoint(self, name: str, label: str, svc_name: str, ns: str, qtype: int) -> Answer:
        svc = self.index.service(ns, svc_name)
        if svc is None or not is_headless(svc):
            return self._nxdomain()
        matches = [ep for ep in self.index.endpoints(ns, svc_name) if ep.label == label]
        if not matches:
            return self._nxdomain()
        if qtype not in (QTYPE.A, QTYPE.AAAA, QTYPE.ANY):
            return self._nodata()
        return self._ok([self._addr_rr(name, ep.address) for ep in matches if self._wants(qtype, ep.address)])

    # ---- SRV ----
    def _ports(self, svc: dict, ns: str, svc_name: str) -> list[tuple[str, str, int]]:
        """(name, protocol, port) of the named ports: a headless Service's come from its slices
        (the endpoints' ports), a ClusterIP Service's from its spec (specification 2.3.2, 2.4.2)."""
        if is_headless(svc):
            return [(p.name, p.protocol, p.port) for p in self.index.endpoint_ports(ns, svc_name) if p.name]
        return [(str(p.get("name") or ""), str(p.get("protocol") or "TCP"), int(p.get("port") or 0))
                for p in (svc.get("spec") or {}).get("ports") or [] if p.get("name")]

    def _srv_records(self, owner: str, svc: dict, ns: str, svc_name: str,
                     ports: list[tuple[str, str, int]]) -> Answer:
        base = f"{svc_name}.{ns}.svc.{self.domain}."
        answer: list[RR] = []
        additional: list[RR] = []
        if is_headless(svc):
            eps: list[Endpoint] = self.index.endpoints(ns, svc_name)
            for _, _, port in ports:
                for ep in eps:
                    target = f"{ep.label}.{base}"
                    answer.append(RR(owner, QTYPE.SRV, ttl=self.ttl, rdata=SRV(0, 100, port, target)))
            additional = [self._addr_rr(f"{ep.label}.{base}", ep.address) for ep in eps]
        else:
            for _, _, port in ports:
                answer.append(RR(owner, QTYPE.SRV, ttl=self.ttl, rdata=SRV(0, 100, port, base)))
            if answer:
                additional = [self._addr_rr(base, ip) for ip in cluster_ips(svc)]
        return self._ok(answer, additional)

    def _srv_all(self, name: str, svc: dict, ns: str, svc_name: str) -> Answer:
        return self._srv_records(name, svc, ns, svc_name, self._ports(svc, ns, svc_name))

    def _srv_port(self, name: str, port: str, proto: str, svc_name: str, ns: str, qtype: int) -> Answer:
        svc = self.index.service(ns, svc_name)
        if svc is None:
            return self._nxdomain()
        ports = [p for p in self._ports(svc, ns, svc_name)
                 if p[0].lower() == port and p[1].lower() == proto]
        if not ports:
            return self._nxdomain()
        if qtype not in (QTYPE.SRV, QTYPE.ANY):
            return self._nodata()
        return self._srv_records(name, svc, ns, svc_name, ports)

    # ---- <a-b-c-d>.<ns>.pod.<zone> ----
    def _pod(self, name: str, rel: tuple[str, ...], qtype: int) -> Answer:
        if len(rel) <= 1:  # pod.<zone> and <ns>.pod.<zone>: empty non-terminals
            return self._nodata()
        if len(rel) != 2:
            return self._nxdomain()
        label = rel[0]
        try:
            ip = ipaddress.ip_address(label.replace("-", ".") if label.count("-") == 3 else label.replace("-", ":"))
        except ValueError:
            return self._nxdomain()
        if dashed(str(ip)) != label and ip.version == 4:
            return self._nxdomain()  # 010-1-2-3 is not a pod name
        return self._ok([self._addr_rr(name, str(ip))] if self._wants(qtype, str(ip)) else [])

    # ---- reverse zones ----
    def _reverse(self, name: str, qtype: int, zone: str) -> Answer:
        names = self.index.reverse(name, self.domain)
        if not names:
            return Answer(RCODE.REFUSED, forward=True)  # not ours: fall through (forward or refuse)
        if qtype not in (QTYPE.PTR, QTYPE.ANY):
            return Answer(RCODE.NOERROR, authority=[self.soa(zone)], zone=zone + ".")
        return Answer(RCODE.NOERROR, zone=zone + ".",
                      answer=[RR(name + ".", QTYPE.PTR, ttl=self.ttl, rdata=PTR(n + ".")) for n in names])
