"""The scheduler's pure parts: what a pod asks for, what a node has left, the filters (each returns
None when the node fits or the upstream reason string when it does not) and the scores (0-100).

Filters follow kube-scheduler's default plugins: NodeUnschedulable, NodeResourcesFit, NodeAffinity
(nodeSelector + required affinity), TaintToleration (NoSchedule/NoExecute), NodePorts; plus the node
Ready check of the old CheckNodeCondition predicate. Scores: NodeResourcesFit LeastAllocated and
spreading the pods of one owner (what SelectorSpread / default PodTopologySpread aim for).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nodeagent.controllers.objects import controller_ref, key_of, labels_of, meta, name_of
from nodeagent.controllers.taints import TAINT_UNSCHEDULABLE, node_taints, tolerates, untolerated
from nodeagent.machinery.quantity import resource_value

Obj = dict[str, Any]

# Upstream's non-zero defaults for pods that request nothing (pkg/scheduler/util/pod_resources.go),
# so that best-effort pods still spread by "load" in scoring.
DEFAULT_MILLI_CPU = 100
DEFAULT_MEMORY = 200 * 1024 * 1024

REASON_NOT_READY = "node(s) were not ready"
REASON_UNSCHEDULABLE = "node(s) were unschedulable"
REASON_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
REASON_PORTS = "node(s) didn't have free ports for the requested pod ports"
REASON_TOO_MANY_PODS = "Too many pods"


@dataclass
class PodInfo:
    key: str
    requests: dict[str, int]
    nonzero_cpu: int
    nonzero_mem: int
    host_ports: list[tuple[str, str, int]]
    owner_uid: str | None
    node_selector: dict[str, str]
    required_terms: list[Obj] | None
    tolerations: list[Obj]


def _container_requests(c: Obj) -> dict[str, int]:
    res = c.get("resources") or {}
    req = dict(res.get("requests") or {})
    for k, v in (res.get("limits") or {}).items():
        req.setdefault(k, v)  # upstream defaulting: requests default to limits
    return {k: resource_value(k, v) for k, v in req.items()}


def pod_info(pod: Obj) -> PodInfo:
    spec = pod.get("spec") or {}
    total: dict[str, int] = {}
    nz_cpu = nz_mem = 0
    ports: list[tuple[str, str, int]] = []
    for c in spec.get("containers") or []:
        r = _container_requests(c)
        for k, v in r.items():
            total[k] = total.get(k, 0) + v
        nz_cpu += r.get("cpu", DEFAULT_MILLI_CPU) or DEFAULT_MILLI_CPU
        nz_mem += r.get("memory", DEFAULT_MEMORY) or DEFAULT_MEMORY
        for p in c.get("ports") or []:
            hp = p.get("hostPort")
            if hp:
                ports.append((p.get("hostIP") or "0.0.0.0", p.get("protocol") or "TCP", int(hp)))
    # init containers run one at a time before the app containers: the pod needs the larger of
    # the biggest init container and the sum of the app containers (resource.PodRequests)
    for c in spec.get("initContainers") or []:
        for k, v in _container_requests(c).items():
            total[k] = max(total.get(k, 0), v)
    for k, v in (spec.get("overhead") or {}).items():
        total[k] = total.get(k, 0) + resource_value(k, v)
    ref = controller_ref(pod)
    affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution")
    return PodInfo(
        key=key_of(pod), requests=total, nonzero_cpu=nz_cpu, nonzero_mem=nz_mem, host_ports=ports,
        owner_uid=ref.get("uid") if ref else None, node_selector=dict(spec.get("nodeSelector") or {}),
        required_terms=list(affinity.get("nodeSelectorTerms") or []) if affinity else None,
        tolerations=list(spec.get("tolerations") or []),
    )


@dataclass
class NodeInfo:
    node: Obj
    allocatable: dict[str, int] = field(default_factory=dict)
    requested: dict[str, int] = field(default_factory=dict)
    nonzero_cpu: int = 0
    nonzero_mem: int = 0
    pods: dict[str, PodInfo] = field(default_factory=dict)
    owner_counts: dict[str, int] = field(default_factory=dict)
    ready: bool = False
    real: bool = False  # a Node object was seen (not just pods naming it)
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[Obj] = field(default_factory=list)  # the NoSchedule / NoExecute ones
    unschedulable: bool = False
    alloc_cpu: int = 0
    alloc_mem: int = 0
    alloc_pods: int | None = None

    @property
    def name(self) -> str:
        return name_of(self.node)

    def set_node(self, node: Obj) -> None:
        self.node = node
        status = node.get("status") or {}
        alloc = status.get("allocatable") or status.get("capacity") or {}
        self.allocatable = {k: resource_value(k, v) for k, v in alloc.items()}
        self.alloc_cpu = self.allocatable.get("cpu", 0)
        self.alloc_mem = self.allocatable.get("memory", 0)
        self.alloc_pods = self.allocatable.get("pods")
        self.ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                         for c in status.get("conditions") or [])
        self.real = True
        self.labels = labels_of(node)
        self.taints = [t for t in node_taints(node) if t.get("effect") in ("NoSchedule", "NoExecute")]
        self.unschedulable = bool((node.get("spec") or {}).get("unschedulable"))

    def add_pod(self, pi: PodInfo) -> None:
        if pi.key in self.pods:
            self.remove_pod(pi.key)
        self.pods[pi.key] = pi
        for k, v in pi.requests.items():
            self.requested[k] = self.requested.get(k, 0) + v
        self.nonzero_cpu += pi.nonzero_cpu
        self.nonzero_mem += pi.nonzero_mem
        if pi.owner_uid:
            self.owner_counts[pi.owner_uid] = self.owner_counts.get(pi.owner_uid, 0) + 1

    def remove_pod(self, key: str) -> None:
        pi = self.pods.pop(key, None)
        if pi is None:
            return
        for k, v in pi.requests.items():
            self.requested[k] = self.requested.get(k, 0) - v
        self.nonzero_cpu -= pi.nonzero_cpu
        self.nonzero_mem -= pi.nonzero_mem
        if pi.owner_uid:
            self.owner_counts[pi.owner_uid] = self.owner_counts.get(pi.owner_uid, 1) - 1


# -- filters -----------------------------------------------------------------------------------

def _match_expression(expr: Obj, value: str | None) -> bool:
    op = expr.get("operator")
    values = [str(v) for v in expr.get("values") or []]
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and values:
        try:
            a, b = int(value), int(values[0])
        except ValueError:
            return False
        return a > b if op == "Gt" else a < b
    return False


def node_matches_term(term: Obj, node: Obj) -> bool:
    """A NodeSelectorTerm: all expressions and fields must match; an empty term matches nothing."""
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False
    labels = labels_of(node)
    for e in exprs:
        if not _match_expression(e, labels.get(e.get("key", ""))):
            return False
    for f in fields:
        if f.get("key") != "metadata.name" or not _match_expression(f, name_of(node)):
            return False
    return True


def fits_affinity(pi: PodInfo, node: Obj, labels: dict[str, str] | None = None) -> bool:
    if not pi.node_selector and pi.required_terms is None:
        return True
    labels = labels_of(node) if labels is None else labels
    for k, v in pi.node_selector.items():
        if labels.get(k) != v:
            return False
    if pi.required_terms is not None:
        return any(node_matches_term(t, node) for t in pi.required_terms)
    return True


_UNLIMITED_IF_UNREPORTED = ("cpu", "memory", "ephemeral-storage")


def fits_resources(pi: PodInfo, ni: NodeInfo) -> list[str]:
    reasons: list[str] = []
    if ni.alloc_pods is not None and len(ni.pods) + 1 > ni.alloc_pods:
        reasons.append(REASON_TOO_MANY_PODS)
    allocatable, requested = ni.allocatable, ni.requested
    for res, want in pi.requests.items():
        if want <= 0:
            continue
        have = allocatable.get(res)
        if have is None:
            if res not in _UNLIMITED_IF_UNREPORTED:  # a node that reports no figure is not limited by it
                reasons.append(f"Insufficient {res}")
        elif requested.get(res, 0) + want > have:
            reasons.append(f"Insufficient {res}")
    return reasons


def _ports_conflict(a: tuple[str, str, int], b: tuple[str, str, int]) -> bool:
    if a[1] != b[1] or a[2] != b[2]:
        return False
    return a[0] == b[0] or "0.0.0.0" in (a[0], b[0])


def fits_ports(pi: PodInfo, ni: NodeInfo) -> bool:
    if not pi.host_ports:
        return True
    for other in ni.pods.values():
        for p in other.host_ports:
            for want in pi.host_ports:
                if _ports_conflict(p, want):
                    return False
    return True


def filter_node(pi: PodInfo, ni: NodeInfo) -> list[str]:
    """Reasons the pod cannot go to the node; empty when it fits. Checked in the default profile's
    order (NodeUnschedulable, TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit), stopping
    at the first failing plugin as the framework does."""
    if not ni.ready:
        return [REASON_NOT_READY]
    if ni.unschedulable:
        t = {"key": TAINT_UNSCHEDULABLE, "effect": "NoSchedule"}
        if not any(tolerates(tol, t) for tol in pi.tolerations):
            return [REASON_UNSCHEDULABLE]
    if ni.taints:
        taint = untolerated(ni.taints, pi.tolerations, ("NoSchedule", "NoExecute"))
        if taint is not None:
            return [f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}"]
    if not fits_affinity(pi, ni.node, ni.labels):
        return [REASON_AFFINITY]
    if pi.host_ports and not fits_ports(pi, ni):
        return [REASON_PORTS]
    reasons = fits_resources(pi, ni)
    return reasons


# -- scores ------------------------------------------------------------------------------------

def least_allocated(pi: PodInfo, ni: NodeInfo) -> float:
    """(free after placing the pod) / allocatable, averaged over cpu and memory, 0-100."""
    total, n = 0.0, 0
    if ni.alloc_cpu:
        total += max(0.0, (ni.alloc_cpu - ni.nonzero_cpu - pi.nonzero_cpu) * 100.0 / ni.alloc_cpu)
        n += 1
    if ni.alloc_mem:
        total += max(0.0, (ni.alloc_mem - ni.nonzero_mem - pi.nonzero_mem) * 100.0 / ni.alloc_mem)
        n += 1
    return total / n if n else 0.0


def spread_scores(pi: PodInfo, feasible: list[NodeInfo]) -> list[float]:
    """Fewer pods of the same owner on a node is better (100 = none there)."""
    if not pi.owner_uid:
        return [100.0] * len(feasible)
    counts = [ni.owner_counts.get(pi.owner_uid, 0) for ni in feasible]
    most = max(counts) if counts else 0
    if most == 0:
        return [100.0] * len(feasible)
    return [100.0 * (most - c) / most for c in counts]


SPREAD_WEIGHT = 2.0  # PodTopologySpread's default weight in the default profile; Fit's is 1


def score_nodes(pi: PodInfo, feasible: list[NodeInfo]) -> list[float]:
    spread = spread_scores(pi, feasible)
    return [least_allocated(pi, ni) + SPREAD_WEIGHT * s for ni, s in zip(feasible, spread, strict=True)]


def failure_message(total_nodes: int, reasons: dict[str, int]) -> str:
    """upstream FitError.Error(): "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) ..."."""
    if total_nodes == 0:
        return "no nodes available to schedule pods"
    parts = sorted(f"{n} {r}" for r, n in reasons.items())
    return f"0/{total_nodes} nodes are available: {', '.join(parts)}."


def is_pending_for_us(pod: Obj, scheduler_name: str = "default-scheduler") -> bool:
    spec = pod.get("spec") or {}
    if spec.get("nodeName") or meta(pod).get("deletionTimestamp"):
        return False
    if spec.get("schedulingGates"):
        return False  # held back until every gate is removed (PodSchedulingReadiness)
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return False
    return (spec.get("schedulerName") or "default-scheduler") == scheduler_name
