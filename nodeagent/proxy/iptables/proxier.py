"""The iptables back end: renders the upstream chain layout and applies it with one restore.

Layout (upstream pkg/proxy/iptables/proxier.go, so `iptables-save` reads as users expect):

  nat PREROUTING, OUTPUT -> KUBE-SERVICES: one rule per service port's cluster IP / external IP
      -> KUBE-SVC-<h> (or KUBE-SVL-<h> for internalTrafficPolicy Local, KUBE-EXT-<h> for external
      destinations); the last rule sends local destinations to KUBE-NODEPORTS (with
      --nodeport-addresses, one such rule per CIDR: `-d CIDR -m addrtype --dst-type LOCAL`).
  KUBE-SVC-<h>: masquerade off-cluster sources, then one rule per endpoint, the i-th of n with
      `-m statistic --mode random --probability 1/(n-i)` and the last without (a uniform pick).
  KUBE-SEP-<h>: mark hairpin traffic (source is the endpoint) for masquerade, DNAT to ip:port.
  nat POSTROUTING -> KUBE-POSTROUTING: masquerade packets carrying mark 0x4000 (KUBE-MARK-MASQ).
  filter KUBE-SERVICES / KUBE-EXTERNAL-SERVICES: REJECT services with no endpoints (DROP when only
      the Local policy leaves none). filter KUBE-NODEPORTS (from INPUT) ACCEPTs healthCheckNodePorts.
  loadBalancerSourceRanges: KUBE-SERVICES sends a load-balancer IP to KUBE-FW-<h> (nat) instead of
      KUBE-EXT-<h>; it jumps to KUBE-EXT-<h> for each allowed source range (and for the LB IP
      itself as source when a range holds a node IP), so only allowed packets are DNATed. filter
      KUBE-PROXY-FIREWALL (from INPUT, FORWARD, OUTPUT, new connections) DROPs what still goes to
      the LB IP: everyone else. NodePorts and cluster IPs are not filtered, as upstream.

A sync writes the static chains and KUBE-SERVICES/KUBE-NODEPORTS in full (a partial sync skips
them when no line of theirs changed, e.g. only endpoints did); per-service chains only for
Services that changed (partial sync), or for all after a failure, at start, or when the canary
chain has vanished (someone flushed our tables): practice 6. With the nft back end a full sync is
split into several restores (split_full_sync: iptables-nft-restore is quadratic in one input).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from nodeagent.proxy.backend import ProxyState, SyncResult
from nodeagent.proxy.iptables import names as n
from nodeagent.proxy.iptables.executor import Executor, chains_in_save
from nodeagent.proxy.model import MASQ_MARK, Endpoint, ServicePort, ServicePortName, categorize, ips_in

log = logging.getLogger(__name__)

# KUBE-POSTROUTING masquerades what KUBE-MARK-MASQ marked (and clears the mark: a packet
# re-traversing the stack must not be masqueraded twice); IPVS mode writes the same rules
MASQUERADE_RULES = [
    f"-A {n.KUBE_POSTROUTING} -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
    f"-A {n.KUBE_POSTROUTING} -j MARK --xor-mark {MASQ_MARK}",
    f'-A {n.KUBE_POSTROUTING} -m comment --comment "kubernetes service traffic requiring SNAT" '
    "-j MASQUERADE --random-fully",
    f"-A {n.KUBE_MARK_MASQ} -j MARK --or-mark {MASQ_MARK}",
]
NODEPORTS_COMMENT = '"kubernetes service nodeports; NOTE: this must be the last rule in this chain"'

# Jumps from the built-in chains, ensured one by one with python-iptables (upstream iptablesJumpChains).
# Listed in each chain's order: upstream's firewall jump comes first in INPUT, FORWARD and OUTPUT.
FIREWALL_JUMP: dict[str, object] = {"conntrack": {"ctstate": "NEW"},
                                    "comment": {"comment": "kubernetes load balancer firewall"},
                                    "target": n.KUBE_PROXY_FIREWALL}
JUMPS: tuple[tuple[str, str, dict[str, object]], ...] = (
    ("filter", "INPUT", FIREWALL_JUMP),
    ("filter", "INPUT", {"conntrack": {"ctstate": "NEW"},
                         "comment": {"comment": "kubernetes externally-visible service portals"},
                         "target": n.KUBE_EXTERNAL_SERVICES}),
    ("filter", "INPUT", {"comment": {"comment": "kubernetes health check service ports"},
                         "target": n.KUBE_NODEPORTS}),
    ("filter", "FORWARD", FIREWALL_JUMP),
    ("filter", "FORWARD", {"comment": {"comment": "kubernetes forwarding rules"}, "target": n.KUBE_FORWARD}),
    ("filter", "FORWARD", {"conntrack": {"ctstate": "NEW"},
                           "comment": {"comment": "kubernetes service portals"},
                           "target": n.KUBE_SERVICES}),
    ("filter", "FORWARD", {"conntrack": {"ctstate": "NEW"},
                           "comment": {"comment": "kubernetes externally-visible service portals"},
                           "target": n.KUBE_EXTERNAL_SERVICES}),
    ("filter", "OUTPUT", FIREWALL_JUMP),
    ("filter", "OUTPUT", {"conntrack": {"ctstate": "NEW"},
                          "comment": {"comment": "kubernetes service portals"},
                          "target": n.KUBE_SERVICES}),
    ("nat", "OUTPUT", {"comment": {"comment": "kubernetes service portals"}, "target": n.KUBE_SERVICES}),
    ("nat", "PREROUTING", {"comment": {"comment": "kubernetes service portals"}, "target": n.KUBE_SERVICES}),
    ("nat", "POSTROUTING", {"comment": {"comment": "kubernetes postrouting rules"},
                            "target": n.KUBE_POSTROUTING}),
)
CANARY_TABLES = ("mangle", "nat", "filter")


def _has_jump(saved: str, chain: str, rule: dict[str, object]) -> bool:
    """Whether iptables-save text has a rule in `chain` jumping to rule's target with its comment."""
    spec = rule.get("comment")
    comment = str(spec.get("comment", "")) if isinstance(spec, dict) else ""
    prefix, target = f"-A {chain} ", f"-j {rule['target']}"
    return any(line.startswith(prefix) and target in line and comment in line for line in saved.splitlines())


def _spn_key(spn: ServicePortName) -> tuple[str, str, str, str]:
    # sorting by a tuple compares in C; the dataclass's own ordering is 20x slower at 10k services
    return (spn.namespace, spn.name, spn.port, spn.protocol)


@dataclass
class _ServiceRender:
    """What one service port contributes: lines in the shared chains, and its own chains."""

    nat_services: list[str] = field(default_factory=list)
    nat_nodeports: list[str] = field(default_factory=list)
    filter_services: list[str] = field(default_factory=list)
    filter_external: list[str] = field(default_factory=list)
    filter_firewall: list[str] = field(default_factory=list)  # KUBE-PROXY-FIREWALL
    filter_nodeports: list[str] = field(default_factory=list)  # health check node ports (filter KUBE-NODEPORTS)
    chains: dict[str, list[str]] = field(default_factory=dict)  # nat chain -> its rules


def _shared_lines(r: _ServiceRender) -> tuple[list[str], ...]:
    """The lines a service port puts in the shared chains (KUBE-SERVICES and friends)."""
    return (r.nat_services, r.nat_nodeports, r.filter_services, r.filter_external, r.filter_firewall,
            r.filter_nodeports)


def nodeport_destinations(nodeport_addresses: tuple[str, ...]) -> tuple[str, ...]:
    """The destination matches of "a NodePort of this node": any local address, or with
    --nodeport-addresses a local address inside each CIDR. Upstream lists the node's addresses in
    the CIDRs one by one; `-d CIDR` plus addrtype LOCAL accepts the same packets and stays right
    when an address comes or goes, with no re-sync."""
    if not nodeport_addresses:
        return ("-m addrtype --dst-type LOCAL",)
    return tuple(f"-d {cidr} -m addrtype --dst-type LOCAL" for cidr in nodeport_addresses)




def _endpoint_jumps(chain: str, sp: ServicePort, eps: list[Endpoint], out: list[str], large: bool) -> None:
    spn = str(sp.name)

    def comment(e: Endpoint) -> str:
        return "" if large else f' -m comment --comment "{spn} -> {e.address}"'

    if sp.session_affinity_seconds:
        for e in eps:
            sep = n.sep_chain(spn, sp.protocol, e.address)
            out.append(f"-A {chain}{comment(e)} -m recent --name {sep} "
                       f"--rcheck --seconds {sp.session_affinity_seconds} --reap -j {sep}")
    count = len(eps)
    for i, e in enumerate(eps):
        sep = n.sep_chain(spn, sp.protocol, e.address)
        if i < count - 1:
            out.append(f"-A {chain}{comment(e)} -m statistic --mode random "
                       f"--probability {1.0 / (count - i):0.10f} -j {sep}")
        else:
            out.append(f"-A {chain}{comment(e)} -j {sep}")


class _Inputs(NamedTuple):
    """What every port's text depends on besides its own (a change re-renders them all)."""

    cluster_cidr: str | None
    large: bool  # comment mode (LARGE_CLUSTER_ENDPOINTS)
    node_ips: tuple[str, ...]  # loadBalancerSourceRanges' allowFromNode
    nodeport_addresses: tuple[str, ...]
    zone: str = ""  # topology hints: which endpoints Cluster-policy traffic uses


# Above this many endpoints in all, per-endpoint rules carry no comment (upstream's
# largeClusterEndpointsThreshold): comments are 40% of the text and restore time grows with it.
LARGE_CLUSTER_ENDPOINTS = 1000


def _firewall(sp: ServicePort, ext: str, node_ips: tuple[str, ...], r: _ServiceRender) -> str:
    """loadBalancerSourceRanges, as upstream: KUBE-FW-<h> (nat) passes allowed sources on to
    KUBE-EXT-<h> (so they are DNATed to an endpoint); anything else leaves the chain still
    addressed to the LB IP, and KUBE-PROXY-FIREWALL (filter) drops exactly that. Returns the chain
    KUBE-SERVICES sends the LB IPs to."""
    spn, proto = str(sp.name), sp.proto
    fw = n.fw_chain(spn, proto)
    head = f'-A {fw} -m comment --comment "{spn} loadbalancer IP"'
    rules = [f"{head} -s {cidr} -j {ext}" for cidr in sp.load_balancer_source_ranges]
    if ips_in(sp.load_balancer_source_ranges, node_ips):
        # a range holds the node: then the LB IP is an allowed source too, as a VIP-style load
        # balancer often puts its IP on the node, and the node's own request to it then leaves
        # with the LB IP as source (upstream allowFromNode)
        rules += [f"{head} -s {ip} -j {ext}" for ip in sp.load_balancer_ips]
    # no target (a counter only): it says in iptables-save where the rest goes
    rules.append(f'-A {fw} -m comment --comment "other traffic to {spn} will be dropped by KUBE-PROXY-FIREWALL"')
    r.chains[fw] = rules
    r.filter_firewall += [f'-A {n.KUBE_PROXY_FIREWALL} -m comment --comment "{spn} traffic not accepted by {fw}" '
                          f"-m {proto} -p {proto} -d {ip} --dport {sp.port} -j DROP" for ip in sp.load_balancer_ips]
    return fw


def render_service(sp: ServicePort, endpoints: tuple[Endpoint, ...], cluster_cidr: str | None,
                   large: bool = False, node_ips: tuple[str, ...] = (),
                   nodeport_addresses: tuple[str, ...] = (), zone: str = "") -> _ServiceRender:
    """All rules of one service port (pure: same input, same text)."""
    r = _ServiceRender()
    spn = str(sp.name)
    proto = sp.proto
    cat = categorize(sp, endpoints, zone=zone)
    uses_cluster = (not sp.internal_policy_local) or (sp.externally_accessible and not sp.external_policy_local)
    cluster_eps = cat.cluster if uses_cluster else []
    local_eps = cat.local
    svc, svl, ext = n.svc_chain(spn, proto), n.svl_chain(spn, proto), n.ext_chain(spn, proto)
    internal_chain, internal_eps = (svl, local_eps) if sp.internal_policy_local else (svc, cluster_eps)
    external_eps = local_eps if sp.external_policy_local else cluster_eps
    match = f"-m {proto} -p {proto}"
    has_any = bool(cat.cluster) or bool(cat.local)

    def no_endpoints(policy_local: bool) -> tuple[str, str]:
        if has_any and policy_local:
            return f'"{spn} has no local endpoints"', "DROP"
        return f'"{spn} has no endpoints"', "REJECT"

    if sp.health_check_node_port:
        # accepted before the host's own INPUT rules can drop it: the load balancer's health
        # checks must reach the proxy's listener even on a locked-down node (upstream)
        r.filter_nodeports.append(f'-A {n.KUBE_NODEPORTS} -m comment --comment "{spn} health check node port" '
                                  f"-m tcp -p tcp --dport {sp.health_check_node_port} -j ACCEPT")
    # cluster IP
    if internal_eps:
        r.nat_services.append(f'-A {n.KUBE_SERVICES} -m comment --comment "{spn} cluster IP" {match} '
                              f"-d {sp.cluster_ip} --dport {sp.port} -j {internal_chain}")
    else:
        comment, target = no_endpoints(sp.internal_policy_local)
        r.filter_services.append(f"-A {n.KUBE_SERVICES} -m comment --comment {comment} {match} "
                                 f"-d {sp.cluster_ip} --dport {sp.port} -j {target}")

    # external destinations: external IPs, load-balancer IPs, node ports -> KUBE-EXT-<h>
    if sp.externally_accessible:
        comment, target = no_endpoints(sp.external_policy_local)
        # with loadBalancerSourceRanges the LB IPs go through KUBE-FW-<h> first (upstream
        # usesFWChain); without endpoints KUBE-EXTERNAL-SERVICES below turns them all away anyway
        lb_chain = (_firewall(sp, ext, node_ips, r)
                    if external_eps and sp.load_balancer_ips and sp.load_balancer_source_ranges else ext)
        for kind, ips, chain in (("external IP", sp.external_ips, ext),
                                 ("loadbalancer IP", sp.load_balancer_ips, lb_chain)):
            for ip in ips:
                if external_eps:
                    r.nat_services.append(f'-A {n.KUBE_SERVICES} -m comment --comment "{spn} {kind}" {match} '
                                          f"-d {ip} --dport {sp.port} -j {chain}")
                else:
                    r.filter_external.append(f"-A {n.KUBE_EXTERNAL_SERVICES} -m comment --comment {comment} "
                                             f"{match} -d {ip} --dport {sp.port} -j {target}")
        if sp.node_port:
            if external_eps:
                r.nat_nodeports.append(f"-A {n.KUBE_NODEPORTS} -m comment --comment {spn} {match} "
                                       f"--dport {sp.node_port} -j {ext}")
            else:
                # only where the node port is served: a local process may own the port elsewhere
                r.filter_external += [f"-A {n.KUBE_EXTERNAL_SERVICES} -m comment --comment {comment} "
                                      f"{dst} {match} --dport {sp.node_port} -j {target}"
                                      for dst in nodeport_destinations(nodeport_addresses)]
        if external_eps:
            rules: list[str] = []
            if sp.external_policy_local:
                # keep the client's source IP: only traffic that must be masqueraded anyway (from
                # this node itself) may use remote endpoints (upstream "short-circuit" rules)
                if cluster_eps and cluster_cidr:
                    rules.append(f'-A {ext} -m comment --comment "pod traffic for {spn} external destinations" '
                                 f"-s {cluster_cidr} -j {svc}")
                if cluster_eps:
                    rules.append(f'-A {ext} -m comment --comment "masquerade LOCAL traffic for {spn} external '
                                 f'destinations" -m addrtype --src-type LOCAL -j {n.KUBE_MARK_MASQ}')
                    rules.append(f'-A {ext} -m comment --comment "route LOCAL traffic for {spn} external '
                                 f'destinations" -m addrtype --src-type LOCAL -j {svc}')
                rules.append(f"-A {ext} -j {svl}")
            else:
                rules.append(f'-A {ext} -m comment --comment "masquerade traffic for {spn} external destinations" '
                             f"-j {n.KUBE_MARK_MASQ}")
                rules.append(f"-A {ext} -j {svc}")
            r.chains[ext] = rules

    if cluster_eps:
        rules = []
        if cluster_cidr:
            rules.append(f'-A {svc} -m comment --comment "{spn} cluster IP" {match} -d {sp.cluster_ip} '
                         f"--dport {sp.port} ! -s {cluster_cidr} -j {n.KUBE_MARK_MASQ}")
        _endpoint_jumps(svc, sp, cluster_eps, rules, large)
        r.chains[svc] = rules
    if local_eps:
        rules = []
        _endpoint_jumps(svl, sp, local_eps, rules, large)
        r.chains[svl] = rules

    affinity = (" -m recent --name {sep} --set" if sp.session_affinity_seconds else "")
    sep_comment = "" if large else f" -m comment --comment {spn}"
    for e in cat.all_reachable:
        sep = n.sep_chain(spn, proto, e.address)
        r.chains[sep] = [
            f"-A {sep}{sep_comment} -s {e.ip} -j {n.KUBE_MARK_MASQ}",
            f"-A {sep}{sep_comment}{affinity.format(sep=sep)} {match} -j DNAT --to-destination {e.address}",
        ]
    return r


class IptablesBackend:
    """Renders ProxyState to restore text and applies it; full or partial (practice 6)."""

    name = "iptables"

    def __init__(self, executor: Executor, split_full_sync: bool | None = None) -> None:
        self.ipt = executor
        # iptables-nft-restore 1.8.9 spends time quadratic in the size of one input (3k Services:
        # > 100 s in one go, 1.6 s in pieces of 2000 lines): the nft back end splits full syncs
        self.split_full_sync = (bool(getattr(executor, "split_full_sync", False)) if split_full_sync is None
                                else split_full_sync)
        self.needs_full_sync = True
        # chains we created per Service (ns/name) at the last successful sync
        self._chains_by_service: dict[str, set[str]] = {}
        self.last_restore = ""  # the text of the last sync, for tests and `trace`
        self.last_transactions: list[str] = []  # the restores of the last split full sync
        # render_service is pure: keep each service port's text while its inputs are unchanged, so
        # a partial sync costs O(changed) rendering plus joining the shared chains
        self._cache: dict[ServicePortName, tuple[ServicePort, tuple[Endpoint, ...], _Inputs, _ServiceRender]] = {}
        self._inputs = _Inputs(None, False, (), ())
        self._pos: dict[ServicePortName, int] = {}  # place of each port in the (sorted) output
        self._ordered: list[_ServiceRender] = []  # the renders in that order
        self._ports_by_service: dict[str, list[ServicePortName]] = {}
        # whether the last _update_renders changed any line of the shared chains
        self._shared_changed = True

    # -- set-up of the parts restore does not own ---------------------------------------------
    def _ensure_base(self, saved: dict[str, str]) -> None:
        """Chains and built-in jumps, then the canary last, so a missing canary always means 'redo
        all of this'. What exists is read from `saved` (iptables-save per table, taken once):
        each python-iptables call reloads a whole table, which costs seconds when nat holds
        100k rules, so only what is missing is added with it."""
        have = {t: set(chains_in_save(text)) for t, text in saved.items()}
        for table, chains in (("nat", n.NAT_STATIC), ("filter", n.FILTER_STATIC)):
            for chain in chains:
                if chain not in have[table]:
                    self.ipt.ensure_chain(table, chain)
        # each is prepended, so go backwards to end up in the listed (upstream) order
        for table, chain, rule in reversed(JUMPS):
            if not _has_jump(saved[table], chain, rule):
                self.ipt.ensure_rule(table, chain, rule, position="prepend")
        for table in CANARY_TABLES:
            if n.KUBE_CANARY not in have[table]:
                self.ipt.ensure_chain(table, n.KUBE_CANARY)

    def canary_present(self) -> bool:
        return self.ipt.chain_exists("mangle", n.KUBE_CANARY)

    # -- rendering -----------------------------------------------------------------------------
    @staticmethod
    def _global_inputs(state: ProxyState) -> _Inputs:
        return _Inputs(state.cluster_cidr, sum(len(e) for e in state.endpoints.values()) > LARGE_CLUSTER_ENDPOINTS,
                       state.node.ips, state.nodeport_addresses, state.node.zone)

    def _update_renders(self, state: ProxyState, changed: set[str] | None) -> set[ServicePortName]:
        """Bring the per-service-port render cache up to `state`; returns the ports re-rendered or
        removed. render_service is pure, so a port whose inputs are unchanged keeps its text: a
        partial sync costs O(changed) rendering plus joining the shared chains."""
        inputs = self._global_inputs(state)
        if changed is None or inputs != self._inputs:
            candidates: set[ServicePortName] = set(state.services) | set(self._cache)
        else:
            candidates = {spn for svc in changed for spn in self._ports_by_service.get(svc, ())}
            candidates.update(spn for svc in changed for spn in state.ports_of(svc))
        touched: set[ServicePortName] = set()
        self._shared_changed = False
        for spn in candidates:
            sp = state.services.get(spn)
            if sp is None:
                if self._cache.pop(spn, None) is not None:
                    touched.add(spn)
                    self._shared_changed = True
                continue
            eps = state.endpoints.get(spn, ())
            hit = self._cache.get(spn)
            if hit is not None and hit[0] == sp and hit[1] == eps and hit[2] == inputs:
                continue
            r = render_service(sp, eps, inputs.cluster_cidr, inputs.large, inputs.node_ips, inputs.nodeport_addresses,
                               zone=inputs.zone)
            if hit is None or _shared_lines(hit[3]) != _shared_lines(r):
                self._shared_changed = True
            self._cache[spn] = (sp, eps, inputs, r)
            touched.add(spn)
        self._inputs = inputs
        if changed is None or any(spn not in self._pos or spn not in self._cache for spn in touched):
            order = sorted(self._cache, key=_spn_key)
            self._pos = {spn: i for i, spn in enumerate(order)}
            self._ordered = [self._cache[spn][3] for spn in order]
            by_service: dict[str, list[ServicePortName]] = {}
            for spn in order:
                by_service.setdefault(spn.service, []).append(spn)
            self._ports_by_service = by_service
        else:
            for spn in touched:
                self._ordered[self._pos[spn]] = self._cache[spn][3]
        return touched

    def render_chunks(self, state: ProxyState, changed: set[str] | None,
                      existing_nat_chains: list[str] | None, owned_out: dict[str, set[str]]) -> Iterator[str]:
        """Restore text for `state`, in pieces, so that iptables-restore parses one Service's
        chains while the next is rendered (both cores work; restore handles each line as it
        arrives). With `changed` None every service chain is written; else only those of changed
        Services, and the shared chains (KUBE-SERVICES ...) only if a line of theirs changed.
        Fills `owned_out` with the chains each Service owns afterwards."""
        self._update_renders(state, changed)
        if changed is not None and not self._shared_changed:
            # e.g. endpoints changed: the shared chains would be rewritten as they are. Skipping
            # them keeps the nft back end's transaction proportional to the change (a flushed
            # KUBE-SERVICES is 10k rule deletes and adds at 10k Services); a stale chain is
            # referenced only by the changed Service's own chains, rewritten here too.
            yield from self._service_chains_only(changed, owned_out)
            return
        cache = self._cache
        nat_services: list[str] = []
        nat_nodeports: list[str] = []
        filter_services: list[str] = []
        filter_external: list[str] = []
        filter_firewall: list[str] = []
        filter_nodeports: list[str] = []
        for r in self._ordered:
            if r.nat_services:
                nat_services += r.nat_services
            if r.nat_nodeports:
                nat_nodeports += r.nat_nodeports
            if r.filter_services:
                filter_services += r.filter_services
            if r.filter_external:
                filter_external += r.filter_external
            if r.filter_firewall:
                filter_firewall += r.filter_firewall
            if r.filter_nodeports:
                filter_nodeports += r.filter_nodeports

        out: list[str] = ["*filter"]
        out += [f":{c} - [0:0]" for c in n.FILTER_STATIC]
        out += filter_services
        out += filter_external
        out += filter_firewall
        out += filter_nodeports
        out += [
            f"-A {n.KUBE_FORWARD} -m conntrack --ctstate INVALID -j DROP",
            f'-A {n.KUBE_FORWARD} -m comment --comment "kubernetes forwarding rules" '
            f"-m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT",
            f'-A {n.KUBE_FORWARD} -m comment --comment "kubernetes forwarding conntrack rule" '
            "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "COMMIT",
            "*nat",
        ]
        # declaring a chain creates or flushes it: the shared chains first, so that nothing
        # references a Service chain that is about to be deleted
        out += [f":{c} - [0:0]" for c in n.NAT_STATIC]
        out += MASQUERADE_RULES
        yield "\n".join(out) + "\n"

        # the Services whose chains this sync writes: all on a full sync, else the changed ones.
        # Each Service declares all its chains, then their rules (a jump needs its target).
        written = list(self._ports_by_service) if changed is None else sorted(changed)
        owned: dict[str, set[str]] = {}
        block: list[str] = []
        for svc in written:
            mine = owned.setdefault(svc, set())
            for spn in self._ports_by_service.get(svc, ()):
                r = cache[spn][3]
                mine.update(r.chains)
                block += [f":{chain} - [0:0]" for chain in r.chains]
                for rules in r.chains.values():
                    block += rules
            if len(block) > 2000:
                yield "\n".join(block) + "\n"
                block = []

        # stale chains: those a written Service owned before but not now (deleted Services too),
        # and on a full sync any service chain the kernel has that nobody owns
        if changed is None:
            stale = {c for c in existing_nat_chains or () if c.startswith(n.SERVICE_CHAIN_PREFIXES)}
            for chains in self._chains_by_service.values():
                stale |= chains
            stale -= set().union(*owned.values()) if owned else set()
            owned_out.update(owned)
        else:
            stale = self._owned_after(changed, owned, owned_out)
        # a stale chain is flushed (declared) before the deletes at the end
        block += [f":{c} - [0:0]" for c in sorted(stale)]
        block += nat_services
        block += [f"-A {n.KUBE_SERVICES} -m comment --comment {NODEPORTS_COMMENT} {dst} -j {n.KUBE_NODEPORTS}"
                  for dst in nodeport_destinations(state.nodeport_addresses)]
        block += nat_nodeports
        block += [f"-X {c}" for c in sorted(stale)]
        block.append("COMMIT")
        yield "\n".join(block) + "\n"

    def _owned_after(self, changed: set[str], owned: dict[str, set[str]],
                     owned_out: dict[str, set[str]]) -> set[str]:
        """After a partial sync wrote `owned` (chains per changed Service): fill `owned_out` with
        every Service's chains and return the chains the changed Services no longer own."""
        stale: set[str] = set()
        for svc in changed:
            stale |= self._chains_by_service.get(svc, set()) - owned.get(svc, set())
        owned_out.update(self._chains_by_service)
        for svc in changed:
            owned_out.pop(svc, None)
        owned_out.update({svc: chains for svc, chains in owned.items() if chains})
        return stale

    def _service_chains_only(self, changed: set[str], owned_out: dict[str, set[str]]) -> Iterator[str]:
        """A partial restore of the changed Services' own chains, in the nat table only."""
        block = ["*nat"]
        owned: dict[str, set[str]] = {}
        for svc in sorted(changed):
            mine = owned.setdefault(svc, set())
            for spn in self._ports_by_service.get(svc, ()):
                r = self._cache[spn][3]
                mine.update(r.chains)
                block += [f":{chain} - [0:0]" for chain in r.chains]
                for rules in r.chains.values():
                    block += rules
        stale = self._owned_after(changed, owned, owned_out)
        block += [f":{c} - [0:0]" for c in sorted(stale)]
        block += [f"-X {c}" for c in sorted(stale)]
        block.append("COMMIT")
        yield "\n".join(block) + "\n"

    def render(self, state: ProxyState, changed: set[str] | None,
               existing_nat_chains: list[str] | None = None) -> tuple[str, dict[str, set[str]]]:
        """The whole restore text at once (tests, `trace`)."""
        owned: dict[str, set[str]] = {}
        text = "".join(self.render_chunks(state, changed, existing_nat_chains, owned))
        return text, owned

    # -- the sync -------------------------------------------------------------------------------
    def sync(self, state: ProxyState, changed: set[str] | None) -> SyncResult:
        full = (changed is None or self.needs_full_sync or self._global_inputs(state) != self._inputs
                or not self.canary_present())
        existing: list[str] | None = None
        if full:
            self.needs_full_sync = True  # stays set until this full sync succeeds
            saved = {table: self.ipt.save(table) for table in ("nat", "filter", "mangle")}
            self._ensure_base(saved)
            existing = chains_in_save(saved["nat"])
        owned: dict[str, set[str]] = {}
        sent: list[str] = []

        def chunks() -> Iterator[str]:
            for chunk in self.render_chunks(state, None if full else changed, existing, owned):
                sent.append(chunk)
                yield chunk

        try:
            if full and self.split_full_sync:
                self._restore_in_transactions(list(chunks()))
            else:
                self.ipt.restore(chunks(), noflush=True)
        except Exception:
            self.needs_full_sync = True
            raise
        self.last_restore = "".join(sent)
        self._chains_by_service = owned
        self.needs_full_sync = False
        return SyncResult(full=full)

    def _restore_in_transactions(self, pieces: list[str]) -> None:
        """A full sync as several restores: each middle piece (whole Services' chains, about
        2000 lines) on its own, then the shared chains with the rest in one last transaction, so
        KUBE-SERVICES only ever jumps to complete chains and a stale chain goes after nothing
        points at it. Each Service still changes atomically; the whole sync does not."""
        first, middle, last = pieces[0], pieces[1:-1], pieces[-1]
        self.last_transactions = [f"*nat\n{piece}COMMIT\n" for piece in middle] + [first + last]
        for text in self.last_transactions:
            self.ipt.restore(text, noflush=True)

    def cleanup(self) -> None:
        cleanup_iptables(self.ipt)


CLEANUP_PIECE = 2000  # chains per restore when the executor wants its work split


def cleanup_iptables(ipt: Executor) -> None:
    """Remove every KUBE-* chain and every jump to one, in each table (`--cleanup`)."""
    for table in ("filter", "nat", "mangle"):
        saved = ipt.save(table)
        ours = [c for c in chains_in_save(saved) if c.startswith("KUBE-")]
        deletes: list[str] = []
        for line in saved.splitlines():
            if not line.startswith("-A "):
                continue
            parts = line.split()
            chain = parts[1]
            target = parts[parts.index("-j") + 1] if "-j" in parts else ""
            if not chain.startswith("KUBE-") and target.startswith("KUBE-"):
                deletes.append("-D" + line[2:])
        if not ours and not deletes:
            continue
        if getattr(ipt, "split_full_sync", False):
            # iptables-nft-restore is quadratic in one input's size (see IptablesBackend): the
            # jumps in, then flushes, then deletes, each in pieces (nothing refers to a chain
            # by the time it is deleted)
            pieces = [deletes] + [[f":{c} - [0:0]" for c in ours[i:i + CLEANUP_PIECE]]
                                  for i in range(0, len(ours), CLEANUP_PIECE)]
            pieces += [[f"-X {c}" for c in ours[i:i + CLEANUP_PIECE]] for i in range(0, len(ours), CLEANUP_PIECE)]
        else:
            pieces = [[f":{c} - [0:0]" for c in ours] + deletes + [f"-X {c}" for c in ours]]
        for lines in pieces:
            if lines:
                ipt.restore("\n".join([f"*{table}", *lines, "COMMIT"]) + "\n", noflush=True)
        log.info("cleanup table=%s chains=%d jumps=%d", table, len(ours), len(deletes))
