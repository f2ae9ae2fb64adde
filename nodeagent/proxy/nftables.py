"""The nftables back end: one table of our own, `ip kube-proxy`.

Layout (after upstream pkg/proxy/nftables/proxier.go, so the names read the same):
  nat-prerouting / nat-output -> services:
      ip daddr . meta l4proto . th dport vmap @service-ips       (cluster, external and LB IPs)
      fib daddr type local [ip daddr @nodeport-ips] meta l4proto . th dport vmap @service-nodeports
  service-<h>-ns/name/proto/port: masquerade off-cluster sources, then one rule
      meta l4proto P dnat ip addr . port to numgen random mod 65536 offset BASE map @endpoint-slots-P-S
      where the interval map splits BASE..BASE+65535 into one near-equal interval per endpoint,
      each holding it as `ip . port` (nft_slots.py)
  endpoint-<h>-...__ip/port: only with sessionAffinity ClientIP (records the client, dnat; the
      service chain then picks with `numgen random mod (n-i) == 0 goto`, as before)
  external-<h>-...: masquerade (or the Local-policy short-circuits), then the policy chain
  filter-prerouting-pre-dnat / filter-output-pre-dnat -> firewall-check: LB IPs with
      loadBalancerSourceRanges -> @firewall-ips -> firewall-<h>-...: `ip saddr != {ranges} drop`
  filter hooks: ct state new -> @no-endpoint-services / @no-endpoint-nodeports -> reject / drop
  nat-postrouting: DNATed packets whose `saddr . daddr` is in @hairpin-endpoints (a local backend
      reaching itself) are marked; -> masquerading: masquerade packets carrying mark 0x4000.
A packet's first lookup is one map lookup whatever the number of Services (the point of this mode).

A full sync empties the table and writes everything with one `nft -f` (one transaction, so no
packet sees a half table). A partial sync writes only the changed Services: map elements over
netlink (nft_netlink.py), chains and rules, when they change, with `nft -f`.

Why endpoints are data, and why netlink (measured, kernel 6.18, nft 1.0.6, perf, 10k Services x 10
endpoints, benchmarks/proxy.py):
- the kernel validates the whole table at commit (nf_tables_commit -> nf_tables_validate) when a
  transaction adds a rule with a verdict, dnat or meta expression, or a verdict-map element with
  jump/goto: it walks every chain reachable from every base chain through the verdict maps (twice
  here: nat-prerouting and nat-output both reach `services`), 10-20 ms. With one dnat rule per
  endpoint any changed Service cost ~110 ms. Endpoints as elements of data maps skip it; as
  intervals of a fixed key range, so does a change in their number (the rule's modulus is fixed).
- `nft -f` first dumps the table to check its input (chains, sets, and every element of an
  interval map it touches): ~35 ms for a few hash-map elements, ~350 ms for interval elements.
  The same change as one netlink batch: under 1 ms, kept on one open socket (closing a socket
  that deleted elements waits for an RCU grace period, 8-15 ms).
- the kernel checks each added map element against every rule bound to the map (nft_add_set_elem
  walks set->bindings), and binding a map to a new rule walks its elements: hence SLOT_SHARDS maps
  per protocol, and a full sync adds slot elements after all rules (one map: 18 s).
Interval maps make a full sync's load slower than hash maps did (nft -f 2.5 s instead of 1.4 s
for 10k x 10: nft sorts and checks 100k intervals, the kernel inserts twice as many elements), in
exchange for every endpoint change costing ~5 ms instead of 35-70 ms.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import socket
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache

from nodeagent.proxy import nft_netlink
from nodeagent.proxy.backend import ProxyState, SyncResult
from nodeagent.proxy.loader import stream_to
from nodeagent.proxy.model import MASQ_MARK, Endpoint, ServicePort, ServicePortName, categorize, ips_in
from nodeagent.proxy.nft_slots import SHARDS as SLOT_SHARDS
from nodeagent.proxy.nft_slots import SPAN, SlotAllocator, intervals

log = logging.getLogger(__name__)

TABLE = "kube-proxy"
FAMILY = "ip"
T = f"{FAMILY} {TABLE}"
# per-service chains and sets: prefix, an 8-char base32 hash, then the readable name
SERVICE_CHAIN_RE = re.compile(r"^(service|local|external|endpoint|firewall)-[A-Z2-7]{8}-")

NftRunner = Callable[[Iterable[str]], object]


class NftError(RuntimeError):
    pass


def run_nft(text: str | Iterable[str]) -> None:
    """`nft -f -` with the input on stdin; the whole input is one transaction."""
    rc, err = stream_to(["nft", "-f", "-"], text)
    if rc != 0:
        raise NftError(f"nft -f failed (exit {rc}): {err}; nothing was changed (the input is one transaction)")


def nft_cmd(*args: str) -> str:
    proc = subprocess.run(["nft", *args], capture_output=True)
    if proc.returncode != 0:
        raise NftError(f"nft {' '.join(args)} failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode()


@cache
def _hash(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()[:5]).decode()  # = the first 8 chars


def _spn_key(spn: ServicePortName) -> tuple[str, str, str, str]:
    return (spn.namespace, spn.name, spn.port, spn.protocol)


def _base(sp: ServicePort) -> str:
    n = sp.name
    base = f"{n.namespace}/{n.name}/{sp.proto}/{n.port or sp.port}"
    return f"{_hash(base)}-{base}"


def endpoint_chain(sp: ServicePort, e: Endpoint) -> str:
    base = f"{sp.name.namespace}/{sp.name.name}/{sp.proto}/{sp.name.port or sp.port}__{e.ip}/{e.port}"
    return f"endpoint-{_hash(base)}-{base}"


def affinity_set(sp: ServicePort, e: Endpoint) -> str:
    return "affinity-" + endpoint_chain(sp, e)[len("endpoint-"):]


# endpoint-slots maps per protocol: nft 1.0.6 reads a `th dport` typeof back from the kernel and then
# rejects it beside `meta l4proto tcp` ("conflicting protocols specified: tcp vs. th"). And sharded:
# the kernel checks every added map element against every rule bound to the map
# (nft_add_set_elem walks set->bindings), so one map for 10k Services x 10 endpoints took 18 s to
# load; a policy chain's shard comes with its slot (nft_slots.py). Interval maps: a chain's endpoints
# split its key range, so their number is data too.
SLOT_MAPS = "".join(
    f"add map {T} endpoint-slots-{proto}-{i} {{ typeof numgen random mod 1 : ip daddr . {proto} dport ; flags interval ; }}\n"
    for proto in ("tcp", "udp", "sctp") for i in range(SLOT_SHARDS))

STATIC = f"""add table {T} {{ comment "rules for kube-proxy" ; }}
add chain {T} nat-prerouting {{ type nat hook prerouting priority -100 ; }}
add chain {T} nat-output {{ type nat hook output priority -100 ; }}
add chain {T} nat-postrouting {{ type nat hook postrouting priority 100 ; }}
add chain {T} filter-input {{ type filter hook input priority -110 ; }}
add chain {T} filter-forward {{ type filter hook forward priority -110 ; }}
add chain {T} filter-output {{ type filter hook output priority -110 ; }}
add chain {T} filter-prerouting-pre-dnat {{ type filter hook prerouting priority -110 ; }}
add chain {T} filter-output-pre-dnat {{ type filter hook output priority -110 ; }}
add chain {T} firewall-check
add chain {T} services
add chain {T} masquerading
add chain {T} mark-for-masquerade
add chain {T} service-endpoints-check
add chain {T} nodeport-endpoints-check
add chain {T} reject-chain
add map {T} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}
add map {T} service-nodeports {{ type inet_proto . inet_service : verdict ; }}
add map {T} no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}
add map {T} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; }}
add map {T} firewall-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }}
add set {T} nodeport-ips {{ type ipv4_addr ; flags interval ; comment "--nodeport-addresses" ; }}
{SLOT_MAPS}add set {T} hairpin-endpoints {{ type ipv4_addr . ipv4_addr ; }}
"""

# a full sync empties every map and set it fills (`flush table` empties only chains); affinity sets
# keep their clients
FLUSH_MAPS = "".join(
    f"flush {kind} {T} {name}\n" for kind, name in (
        ("map", "service-ips"), ("map", "service-nodeports"), ("map", "no-endpoint-services"),
        ("map", "no-endpoint-nodeports"), ("map", "firewall-ips"), ("set", "hairpin-endpoints"),
        ("set", "nodeport-ips"),
        *(("map", f"endpoint-slots-{proto}-{i}") for proto in ("tcp", "udp", "sctp") for i in range(SLOT_SHARDS))))

STATIC_RULES = f"""add rule {T} nat-prerouting jump services
add rule {T} nat-output jump services
add rule {T} nat-postrouting ct status dnat ip saddr . ip daddr @hairpin-endpoints jump mark-for-masquerade
add rule {T} nat-postrouting jump masquerading
add rule {T} filter-input ct state new jump nodeport-endpoints-check
add rule {T} filter-input ct state new jump service-endpoints-check
add rule {T} filter-forward ct state new jump service-endpoints-check
add rule {T} filter-output ct state new jump service-endpoints-check
add rule {T} mark-for-masquerade mark set mark or {MASQ_MARK}
add rule {T} masquerading mark and {MASQ_MARK} == 0 return
add rule {T} masquerading mark set mark xor {MASQ_MARK}
add rule {T} masquerading masquerade fully-random
add rule {T} reject-chain reject
add rule {T} services ip daddr . meta l4proto . th dport vmap @service-ips
add rule {T} services fib daddr type local ip daddr != 127.0.0.0/8 {{nodeport_ips}}meta l4proto . th dport vmap @service-nodeports
add rule {T} service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
add rule {T} nodeport-endpoints-check fib daddr type local ip daddr != 127.0.0.0/8 {{nodeport_ips}}meta l4proto . th dport vmap @no-endpoint-nodeports
add rule {T} filter-prerouting-pre-dnat jump firewall-check
add rule {T} filter-output-pre-dnat jump firewall-check
add rule {T} firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
"""


def static_rules(nodeport_addresses: tuple[str, ...] = ()) -> str:
    """The fixed rules; with --nodeport-addresses, NodePorts only on local addresses in them."""
    if not nodeport_addresses:
        return STATIC_RULES.replace("{nodeport_ips}", "")
    return (STATIC_RULES.replace("{nodeport_ips}", "ip daddr @nodeport-ips ")
            + f"add element {T} nodeport-ips {{ {', '.join(nodeport_addresses)} }}\n")


@dataclass
class _Render:
    port: ServicePortName | None = None
    chains: dict[str, list[str]] = field(default_factory=dict)  # chain -> rule bodies
    sets: list[str] = field(default_factory=list)  # affinity set names
    elements: list[tuple[str, str, str]] = field(default_factory=list)  # (map, key, verdict)
    affinity_seconds: int = 0
    # chain owning a slot -> its intervals in an endpoint-slots map: (map, "lo-hi", "ip . port")
    slots: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    hairpin: set[str] = field(default_factory=set)  # endpoint IPs that can hairpin on this node


def _endpoint_dispatch(chain: str, sp: ServicePort, eps: list[Endpoint], r: _Render, rules: list[str],
                       slots: SlotAllocator) -> None:
    """The rules of a policy chain after its masquerade check. Endpoints are data, not rules:
    one rule picks slot `numgen random mod N` of the chain's range in one of the table's
    `endpoint-slots-<proto>-<shard>` maps, so an endpoint replaced is a map element swapped and
    the kernel skips its table-wide validation (no verdict changes). No per-Service sets or maps: the kernel finds
    a set by name with a linear scan, so one anonymous map per Service made loading 10k Services
    take 44 s (nft 1.0.6, kernel 6.18)."""
    # hairpin: a backend reaching its own Service must be masqueraded, or the reply would go
    # straight back to it from its own address. Only backends on this node (or of unknown node)
    # can send through this node's rules; nat-postrouting masquerades a DNATed packet whose
    # `saddr . daddr` is in @hairpin-endpoints (the exact hairpin, as iptables mode marks it).
    r.hairpin.update(e.ip for e in eps if e.is_local or not e.node_name)
    if sp.session_affinity_seconds:
        # affinity needs per-endpoint chains to record the client (upstream's layout); a uniform
        # pick as in iptables mode: the i-th of n taken with probability 1/(n-i), the last always
        count = len(eps)
        for e in eps:
            rules.append(f"ip saddr @{affinity_set(sp, e)} goto {endpoint_chain(sp, e)}")
        for i, e in enumerate(eps):
            target = f"goto {endpoint_chain(sp, e)}"
            rules.append(f"numgen random mod {count - i} == 0 {target}" if i < count - 1 else target)
        return
    shard, base = slots.slot(chain)
    slot_map = f"endpoint-slots-{sp.proto}-{shard}"
    r.slots[chain] = [(slot_map, f"{lo}-{hi}", f"{e.ip} . {e.port}")
                      for (lo, hi), e in zip(intervals(base, len(eps)), eps, strict=True)]
    rules.append(f"meta l4proto {sp.proto} dnat ip addr . port to numgen random mod {SPAN} offset {base} "
                 f"map @{slot_map}")


def render_service(sp: ServicePort, endpoints: tuple[Endpoint, ...], cluster_cidr: str | None,
                   slots: SlotAllocator | None = None, node_ips: tuple[str, ...] = (), zone: str = "") -> _Render:
    slots = slots if slots is not None else SlotAllocator()
    r = _Render(port=sp.name, affinity_seconds=sp.session_affinity_seconds)
    cat = categorize(sp, endpoints, zone=zone)
    base = _base(sp)
    svc, local, ext = f"service-{base}", f"local-{base}", f"external-{base}"
    uses_cluster = (not sp.internal_policy_local) or (sp.externally_accessible and not sp.external_policy_local)
    cluster_eps = cat.cluster if uses_cluster else []
    local_eps = cat.local
    internal_chain, internal_eps = (local, local_eps) if sp.internal_policy_local else (svc, cluster_eps)
    external_eps = local_eps if sp.external_policy_local else cluster_eps
    has_any = bool(cat.cluster) or bool(cat.local)
    proto, port = sp.proto, sp.port

    def no_ep_verdict(policy_local: bool) -> str:
        return "drop" if has_any and policy_local else "goto reject-chain"

    if sp.load_balancer_source_ranges and sp.load_balancer_ips:
        # checked before DNAT (filter-prerouting-pre-dnat): traffic to a load-balancer IP from
        # outside the ranges is dropped; ClusterIP and NodePort traffic is not filtered (upstream).
        # The node itself counts as inside when a range holds one of its IPs: its packets to the
        # LB IP leave from the LB IP when the node holds it (upstream's allowFromNode)
        allowed = list(sp.load_balancer_source_ranges)
        if ips_in(sp.load_balancer_source_ranges, node_ips):
            allowed += sp.load_balancer_ips
        fw = f"firewall-{base}"
        r.chains[fw] = [f"ip saddr != {{ {', '.join(allowed)} }} drop"]
        r.elements += [("firewall-ips", f"{ip} . {proto} . {port}", f"goto {fw}") for ip in sp.load_balancer_ips]
    if internal_eps:
        r.elements.append(("service-ips", f"{sp.cluster_ip} . {proto} . {port}", f"goto {internal_chain}"))
    else:
        r.elements.append(("no-endpoint-services", f"{sp.cluster_ip} . {proto} . {port}",
                           no_ep_verdict(sp.internal_policy_local)))
    if sp.externally_accessible:
        for ip in (*sp.external_ips, *sp.load_balancer_ips):
            if external_eps:
                r.elements.append(("service-ips", f"{ip} . {proto} . {port}", f"goto {ext}"))
            else:
                r.elements.append(("no-endpoint-services", f"{ip} . {proto} . {port}",
                                   no_ep_verdict(sp.external_policy_local)))
        if sp.node_port:
            if external_eps:
                r.elements.append(("service-nodeports", f"{proto} . {sp.node_port}", f"goto {ext}"))
            else:
                r.elements.append(("no-endpoint-nodeports", f"{proto} . {sp.node_port}",
                                   no_ep_verdict(sp.external_policy_local)))
        if external_eps:
            rules: list[str] = []
            if sp.external_policy_local:
                if cluster_eps and cluster_cidr:
                    rules.append(f"ip saddr {cluster_cidr} goto {svc}")
                if cluster_eps:
                    rules.append("fib saddr type local jump mark-for-masquerade")
                    rules.append(f"fib saddr type local goto {svc}")
                rules.append(f"goto {local}")
            else:
                rules.append("jump mark-for-masquerade")
                rules.append(f"goto {svc}")
            r.chains[ext] = rules
    if cluster_eps:
        rules = []
        if cluster_cidr:
            rules.append(f"ip daddr {sp.cluster_ip} {proto} dport {port} ip saddr != {cluster_cidr} "
                         "jump mark-for-masquerade")
        _endpoint_dispatch(svc, sp, cluster_eps, r, rules, slots)
        r.chains[svc] = rules
    if local_eps:
        rules = []
        _endpoint_dispatch(local, sp, local_eps, r, rules, slots)
        r.chains[local] = rules
    if sp.session_affinity_seconds:
        for e in cat.all_reachable:
            s = affinity_set(sp, e)
            r.sets.append(s)
            r.chains[endpoint_chain(sp, e)] = [
                f"update @{s} {{ ip saddr }}",
                f"meta l4proto {proto} dnat ip to {e.ip}:{e.port}",
            ]
    return r


def _set_lines(r: _Render) -> list[str]:
    return [f"add set {T} {x} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {r.affinity_seconds}s ; }}"
            for x in r.sets]


def _element_lines(op: str, items: list[tuple[str, str]]) -> list[str]:
    """`add`/`delete element` commands, one per map with all its elements (nft parses one long
    line faster than many short ones)."""
    by_map: dict[str, list[str]] = {}
    for m, elem in items:
        by_map.setdefault(m, []).append(elem)
    return [f"{op} element {T} {m} {{ {', '.join(elems)} }}" for m, elems in by_map.items()]


# one element change: ("add" | "delete", map or set, key, data or verdict or None)
ElementOp = tuple[str, str, str, str | None]
ElementWriter = Callable[[list[ElementOp]], object]


class NetlinkElementWriter:
    """Applies element ops as one netlink transaction (nft_netlink.py: nft itself would first
    dump the table)."""

    def __init__(self) -> None:
        self.transport = nft_netlink.Transport()

    def __call__(self, ops: list[ElementOp]) -> None:
        if not ops:
            return
        batch = nft_netlink.ElementBatch(socket.AF_INET, TABLE)
        for op, set_name, key, value in ops:
            if op == "delete":
                batch.delete(set_name, [key])
            else:
                batch.add(set_name, [(key, value)])
        self.transport.send(batch)

    def close(self) -> None:
        self.transport.close()


@dataclass
class _PartialOps:
    """What a partial sync changes besides chain text."""

    deletes: list[tuple[str, str]] = field(default_factory=list)  # verdict-map and set elements
    adds: list[tuple[str, str, str | None]] = field(default_factory=list)
    slot_deletes: list[tuple[str, str]] = field(default_factory=list)  # intervals of kept slots
    slot_adds: list[tuple[str, str, str]] = field(default_factory=list)
    released: list[tuple[str, str]] = field(default_factory=list)  # intervals of slots whose chain goes
    stale_chains: set[str] = field(default_factory=set)
    stale_sets: set[str] = field(default_factory=set)


class NftablesBackend:
    name = "nftables"

    def __init__(self, runner: NftRunner = run_nft, lister: Callable[[], str] | None = None,
                 prober: Callable[[], str] | None = None, element_writer: ElementWriter | None = None) -> None:
        self.run = runner
        self.write_elements = element_writer or NetlinkElementWriter()
        self.list_chains = lister or (lambda: nft_cmd("list", "chains", FAMILY))
        self.probe = prober or (lambda: nft_cmd("list", "chain", FAMILY, TABLE, "services"))
        self.needs_full_sync = True
        self.recreate = False  # the next full sync deletes the table first
        self._renders: dict[str, list[_Render]] = {}  # ns/name -> what we wrote for it
        # render_service is pure: reuse a service port's render while its inputs are unchanged
        self._cache: dict[ServicePortName, tuple[ServicePort, tuple[Endpoint, ...], str | None, _Render]] = {}
        self._slots = SlotAllocator()
        self._hairpin: Counter[str] = Counter()  # endpoint IP -> renders that list it as hairpin-able
        self._hairpin_next: Counter[str] = Counter()  # the same after the transaction being sent
        self.last_input = ""
        self.last_elements: list[ElementOp] = []

    def _existing_service_chains(self) -> set[str]:
        try:
            text = self.list_chains()
        except NftError:
            return set()
        out: set[str] = set()
        in_table = False
        for line in text.splitlines():
            s = line.strip()
            if s.startswith("table "):
                in_table = s.startswith(f"table {T} ")
            m = re.match(r"chain (\S+) \{", s)
            if in_table and m and SERVICE_CHAIN_RE.match(m.group(1)):
                out.add(m.group(1))
        return out

    def _render_port(self, state: ProxyState, spn: ServicePortName) -> _Render:
        sp, eps = state.services[spn], state.endpoints.get(spn, ())
        hit = self._cache.get(spn)
        if hit is not None and hit[0] == sp and hit[1] == eps and hit[2] == state.cluster_cidr:
            return hit[3]
        # the node's IPs and zone are not in the key: a change of either forces a full sync, which
        # empties this cache
        r = render_service(sp, eps, state.cluster_cidr, self._slots, state.node.ips, zone=state.node.zone)
        self._cache[spn] = (sp, eps, state.cluster_cidr, r)
        return r

    def _diff_service(self, olds: list[_Render], mine: list[_Render], text: list[str], ops: _PartialOps) -> None:
        """Add to `text` (for nft) and `ops` (for netlink) what turns one Service's `olds` into
        `mine`. Only what differs is sent: a rule with a verdict, or a verdict element, makes
        the kernel validate the whole table; data elements do not."""
        new_chains = {c: rules for r in mine for c, rules in r.chains.items()}
        old_chains = {c: rules for old in olds for c, rules in old.chains.items()}
        new_elems = {(m, key): v for r in mine for m, key, v in r.elements}
        old_elems = {(m, key): v for old in olds for m, key, v in old.elements}
        new_slots = {c: els for r in mine for c, els in r.slots.items()}
        new_sets = {x for r in mine for x in r.sets}
        for old in olds:
            ops.stale_sets |= set(old.sets) - new_sets
            for c, els in old.slots.items():
                if c in new_slots:  # the chain keeps its slot: swap the intervals that differ
                    now = {(m, key): v for m, key, v in new_slots[c]}
                    ops.slot_deletes += [(m, key) for m, key, v in els if now.get((m, key)) != v]
                else:  # the chain goes (or stops using a slot): its rule first, then its elements
                    self._slots.release(c)
                    ops.released += [(m, key) for m, key, _ in els]
        old_slot_data = {(m, key): v for old in olds for els in old.slots.values() for m, key, v in els}
        ops.slot_adds += [(m, key, v) for els in new_slots.values() for m, key, v in els
                          if old_slot_data.get((m, key)) != v]
        ops.deletes += [(m, key) for (m, key), v in old_elems.items() if new_elems.get((m, key)) != v]
        ops.adds += [(m, key, v) for (m, key), v in new_elems.items() if old_elems.get((m, key)) != v]
        for r in mine:
            text += _set_lines(r)
            rewrite = [c for c, rules in r.chains.items() if old_chains.get(c) != rules]
            for chain in rewrite:
                text.append(f"add chain {T} {chain}")
                if chain in old_chains:
                    text.append(f"flush chain {T} {chain}")
            for chain in reversed(rewrite):
                text += [f"add rule {T} {chain} {body}" for body in r.chains[chain]]
        ops.stale_chains |= old_chains.keys() - new_chains.keys()

    def render_chunks(self, state: ProxyState, changed: set[str] | None, existing: set[str] | None,
                      renders_out: dict[str, list[_Render]]) -> Iterator[str]:
        """The nft input of a full sync (the table flushed and rewritten), in pieces. Fills
        `renders_out` with what each Service has afterwards."""
        self._cache.clear()  # a fresh layout: slots handed out in sorted order, as a restarted proxy would
        self._slots = SlotAllocator()
        renders: dict[str, list[_Render]] = {}
        # after a failed full sync, start from no table at all (one transaction still): a table
        # left by another layout (a map with other flags, say) would fail `add map` forever
        yield ((f"add table {T}\ndelete table {T}\n" if self.recreate else "") + STATIC + f"flush table {T}\n"
               + FLUSH_MAPS)
        hairpin: Counter[str] = Counter()
        # the endpoint-slots elements go after every rule: binding a map to a new rule makes the
        # kernel walk all its elements (nf_tables_bind_set checks map data for loops), so adding
        # them with each Service made loading quadratic
        slot_adds: dict[str, list[str]] = {}  # map -> "key : data"
        block: list[str] = []
        for svc in sorted({spn.service for spn in state.services}):
            mine = renders[svc] = [self._render_port(state, spn)
                                   for spn in sorted(state.ports_of(svc), key=_spn_key)]
            for r in mine:
                hairpin.update(r.hairpin)
                block += _set_lines(r)
                block += [f"add chain {T} {chain}" for chain in r.chains]
                # endpoint chains are written before the service chains that jump to them
                for chain, bodies in reversed(r.chains.items()):
                    block += [f"add rule {T} {chain} {body}" for body in bodies]
                for els in r.slots.values():
                    for m, key, data in els:
                        slot_adds.setdefault(m, []).append(f"{key} : {data}")
            block += _element_lines("add", [(m, f"{key} : {verdict}") for r in mine
                                            for m, key, verdict in r.elements])
            if len(block) > 2000:
                yield "\n".join(block) + "\n"
                block = []
        block.append(static_rules(state.nodeport_addresses))
        alive = {c for rs in renders.values() for r in rs for c in r.chains}
        stale_chains = ((existing or set()) | {c for rs in self._renders.values() for r in rs for c in r.chains})
        stale_chains -= alive
        stale_sets = {x for rs in self._renders.values() for r in rs for x in r.sets}
        stale_sets -= {x for rs in renders.values() for r in rs for x in r.sets}
        renders_out.update(renders)
        self._hairpin_next = +hairpin
        block += _element_lines("add", [("hairpin-endpoints", f"{ip} . {ip}") for ip in sorted(self._hairpin_next)])
        for m, elems in slot_adds.items():
            block += [f"add element {T} {m} {{ {', '.join(elems[i:i + 5000])} }}"
                      for i in range(0, len(elems), 5000)]
        block += [f"delete chain {T} {c}" for c in sorted(stale_chains)]
        block += [f"delete set {T} {x}" for x in sorted(stale_sets)]
        yield "\n".join(block) + "\n"

    def render_partial(self, state: ProxyState, changed: set[str],
                       renders_out: dict[str, list[_Render]]) -> tuple[str, list[ElementOp], list[ElementOp]]:
        """A partial sync: (nft text, element ops sent before it, element ops sent after it).
        Endpoint changes are map data only, so the common sync has no text at all: one netlink
        transaction. With text (a new or changed chain), nft applies it between two netlink
        transactions: the intervals of kept and new slots before (nothing points at a new slot
        yet), those of slots whose chains nft deletes after; verdict and hairpin elements go with
        the text then, in the order chains need them (a chain is deleted after the last element
        naming it)."""
        for spn in {r.port for svc in changed for r in self._renders.get(svc, [])
                    if r.port is not None and r.port not in state.services}:
            self._cache.pop(spn, None)
        renders: dict[str, list[_Render]] = {}
        hairpin_delta: Counter[str] = Counter()
        text: list[str] = []
        ops = _PartialOps()
        for svc in sorted(changed):
            olds = self._renders.get(svc, [])
            mine = renders[svc] = [self._render_port(state, spn)
                                   for spn in sorted(state.ports_of(svc), key=_spn_key)]
            for r in mine:
                hairpin_delta.update(r.hairpin)
            for old in olds:
                hairpin_delta.subtract(old.hairpin)
            self._diff_service(olds, mine, text, ops)
        # an IP several Services list stays in the set until the last of them lets it go
        self._hairpin_next = self._hairpin.copy() if hairpin_delta else self._hairpin
        for ip, n in sorted(hairpin_delta.items()):
            before = self._hairpin_next.get(ip, 0)
            after = before + n
            if after > 0:
                self._hairpin_next[ip] = after
            else:
                self._hairpin_next.pop(ip, None)
            if before <= 0 < after:
                ops.adds.append(("hairpin-endpoints", f"{ip} . {ip}", None))
            elif after <= 0 < before:
                ops.deletes.append(("hairpin-endpoints", f"{ip} . {ip}"))
        renders_out.update(self._renders)
        for svc in changed:
            renders_out.pop(svc, None)
        renders_out.update({svc: rs for svc, rs in renders.items() if rs})
        slots_before: list[ElementOp] = [("delete", m, key, None) for m, key in ops.slot_deletes]
        slots_before += [("add", m, key, v) for m, key, v in ops.slot_adds]
        released: list[ElementOp] = [("delete", m, key, None) for m, key in ops.released]
        if not text and not ops.stale_chains and not ops.stale_sets:
            deletes: list[ElementOp] = [("delete", m, key, None) for m, key in ops.deletes]
            adds: list[ElementOp] = [("add", m, key, v) for m, key, v in ops.adds]
            return "", deletes + slots_before + adds + released, []
        text = (_element_lines("delete", ops.deletes) + text
                + _element_lines("add", [(m, f"{key} : {v}" if v else key) for m, key, v in ops.adds])
                + [f"flush chain {T} {c}" for c in sorted(ops.stale_chains)]
                + [f"delete chain {T} {c}" for c in sorted(ops.stale_chains)]
                + [f"delete set {T} {x}" for x in sorted(ops.stale_sets)])
        return "\n".join(text) + "\n", slots_before, released

    def render(self, state: ProxyState, changed: set[str] | None,
               existing: set[str] | None = None) -> tuple[str, dict[str, list[_Render]]]:
        """The whole nft input of a full sync at once (tests)."""
        renders: dict[str, list[_Render]] = {}
        return "".join(self.render_chunks(state, changed, existing, renders)), renders

    def table_intact(self) -> bool:
        """Our canary: the `services` chain still holds its map lookup (a flushed or deleted
        table loses it)."""
        try:
            return "@service-ips" in self.probe()
        except NftError:
            return False

    def sync(self, state: ProxyState, changed: set[str] | None) -> SyncResult:
        full = changed is None or self.needs_full_sync
        if not full and not changed:  # a periodic sync: check nobody flushed us
            full = not self.table_intact()
        renders: dict[str, list[_Render]] = {}
        try:
            if full:
                existing = self._existing_service_chains()
                # rendered whole, then handed to nft: streamed into its stdin while rendering, the
                # same full sync took 15% longer (nft parses all of its input before it applies
                # any, so there is nothing to overlap, only two processes taking turns)
                self.last_input = "".join(self.render_chunks(state, None, existing, renders))
                self.run(self.last_input)
            else:
                text, before, after = self.render_partial(state, changed or set(), renders)
                self.write_elements(before)
                if text:
                    self.run(text)
                self.write_elements(after)
                self.last_input = text
                self.last_elements = before + after
        except Exception:
            self.recreate = full
            self.needs_full_sync = True
            raise
        self.recreate = False
        self._renders = renders
        self._slots.commit()
        self._hairpin = self._hairpin_next
        self.needs_full_sync = False
        return SyncResult(full=full)

    def cleanup(self) -> None:
        cleanup_nftables(self.run)
        close = getattr(self.write_elements, "close", None)
        if close is not None:  # the socket holds its network namespace alive
            close()


def cleanup_nftables(runner: NftRunner = run_nft) -> None:
    """Delete our table (adding it first makes the delete succeed when it is absent)."""
    runner(f"add table {T}\ndelete table {T}\n")
