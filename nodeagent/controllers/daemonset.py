"""The DaemonSet controller: one pod per eligible node (pkg/controller/daemon).

Eligible = the template's nodeSelector / required node affinity match and every NoSchedule /
NoExecute taint is tolerated (with the tolerations upstream adds to daemon pods). Each pod is pinned
with required node affinity on metadata.name and placed by the scheduler, as upstream does since
ScheduleDaemonSetPods. The template's revision is a ControllerRevision; its hash is the pods'
controller-revision-hash label, and RollingUpdate replaces old pods at most maxUnavailable at a time.
"""

from __future__ import annotations

import logging
from typing import Any

from nodeagent.client.errors import AlreadyExists, NotFound
from nodeagent.controllers.base import Context, PodOwnerController
from nodeagent.controllers.objects import (
    controller_ref,
    deep,
    is_deleting,
    is_pod_active,
    is_pod_available,
    is_pod_ready,
    labels_of,
    meta,
    name_of,
    namespace_of,
    owner_reference,
    split_key,
    uid_of,
)
from nodeagent.controllers.podcontrol import claim, pod_from_template
from nodeagent.controllers.rollout import scaled_value, template_hash
from nodeagent.controllers.scheduling import fits_affinity, pod_info
from nodeagent.controllers.taints import node_taints, untolerated
from nodeagent.machinery.kinds import CONTROLLERREVISIONS, DAEMONSETS, NODES, PODS

log = logging.getLogger(__name__)

Obj = dict[str, Any]
HASH_LABEL = "controller-revision-hash"

# pkg/controller/daemon/util AddOrUpdateDaemonPodTolerations
DAEMON_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
]


def daemon_pod_template(ds: Obj, h: str) -> Obj:
    t = deep((ds.get("spec") or {}).get("template") or {})
    t.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
    spec = t.setdefault("spec", {})
    tols = list(spec.get("tolerations") or [])
    extra = list(DAEMON_TOLERATIONS)
    if spec.get("hostNetwork"):
        extra.append({"key": "node.kubernetes.io/network-unavailable", "operator": "Exists", "effect": "NoSchedule"})
    for tol in extra:
        if tol not in tols:
            tols.append(tol)
    spec["tolerations"] = tols
    return t


def node_should_run(template: Obj, node: Obj) -> tuple[bool, bool]:
    """(should run, should continue running) as NodeShouldRunDaemonPod: an untolerated NoSchedule
    taint keeps new pods off the node but leaves a running one alone; NoExecute removes it."""
    pod = {"metadata": {"name": "x", "namespace": "x"}, "spec": template.get("spec") or {}}
    pi = pod_info(pod)
    if not fits_affinity(pi, node):
        return False, False
    taints = node_taints(node)
    if untolerated(taints, pi.tolerations, ("NoExecute",)) is not None:
        return False, False
    return untolerated(taints, pi.tolerations, ("NoSchedule",)) is None, True


def pin_to_node(pod: Obj, node: str) -> None:
    """ReplaceDaemonSetPodNodeNameNodeAffinity: required affinity on metadata.name = node."""
    aff = pod["spec"].setdefault("affinity", {}).setdefault("nodeAffinity", {})
    aff["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}


def pod_node(pod: Obj) -> str | None:
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        return str(node)
    terms = ((((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or []
    for t in terms:
        for f in t.get("matchFields") or []:
            if f.get("key") == "metadata.name" and f.get("operator") == "In" and len(f.get("values") or []) == 1:
                return str(f["values"][0])
    return None


class DaemonSetController(PodOwnerController):
    name = "daemonset"
    owner_kind = "DaemonSet"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder("daemonset-controller")
        self.ds_inf = self.watch_primary(DAEMONSETS)
        self.pods = self.watch_owned_pods()
        self.nodes = ctx.informers.get(NODES)
        self.revs = ctx.informers.get(CONTROLLERREVISIONS)
        self.nodes.add_handlers(on_add=self._all, on_update=lambda o, n: self._all(n) if o is not n else None,
                                on_delete=self._all)

    def _all(self, _node: Obj) -> None:
        for ds in self.ds_inf.list():
            self.enqueue(ds)

    async def _ensure_revision(self, ds: Obj, h: str) -> None:
        name = f"{name_of(ds)}-{h}"
        ns = namespace_of(ds)
        if self.revs.get(f"{ns}/{name}") is not None:
            return
        owned = [r for r in self.revs.list() if namespace_of(r) == ns and (controller_ref(r) or {}).get("uid") == uid_of(ds)]
        rev = max((int(r.get("revision") or 0) for r in owned), default=0) + 1
        body = {"apiVersion": "apps/v1", "kind": "ControllerRevision",
                "metadata": {"name": name, "namespace": ns,
                             "labels": {**labels_of((ds.get("spec") or {}).get("template") or {}), HASH_LABEL: h},
                             "ownerReferences": [owner_reference(ds, DAEMONSETS)]},
                "data": {"spec": {"template": {**((ds.get("spec") or {}).get("template") or {}), "$patch": "replace"}}},
                "revision": rev}
        try:
            await self.client.create(CONTROLLERREVISIONS, body)
        except AlreadyExists:
            pass

    async def reconcile(self, key: str) -> None:
        ds = self.ds_inf.get(key)
        if ds is None:
            self.expectations.forget(key)
            return
        ns, _ = split_key(key)
        spec = ds.get("spec") or {}
        h = template_hash(spec.get("template") or {})
        template = daemon_pod_template(ds, h)
        if not is_deleting(ds):
            await self._ensure_revision(ds, h)
        candidates = [p for p in self.pods.list() if namespace_of(p) == ns and is_pod_active(p)]
        pods = await claim(self.client, ds, DAEMONSETS, PODS, candidates, spec.get("selector"))
        nodes = {name_of(n): n for n in self.nodes.list()}
        by_node: dict[str, list[Obj]] = {}
        for p in pods:
            by_node.setdefault(pod_node(p) or "", []).append(p)
        verdicts = {n: node_should_run(template, node) for n, node in nodes.items()}
        # nodes where a daemon pod belongs: new ones where it should run, kept where it may continue
        eligible = {n for n, (run, cont) in verdicts.items() if run or (cont and by_node.get(n))}
        now = self.clock.now()
        mrs = int(spec.get("minReadySeconds") or 0)
        if self.expectations.satisfied(key) and not is_deleting(ds):
            create = sorted(n for n in eligible if not by_node.get(n))
            delete: list[Obj] = []
            for n, ps in by_node.items():
                if n not in eligible:
                    delete.extend(ps)
                elif len(ps) > 1:
                    delete.extend(sorted(ps, key=lambda p: (is_pod_ready(p), meta(p).get("creationTimestamp")))[:-1])
            # RollingUpdate: replace old-hash pods within maxUnavailable
            strategy = spec.get("updateStrategy") or {}
            if strategy.get("type", "RollingUpdate") == "RollingUpdate":
                max_unavail = scaled_value((strategy.get("rollingUpdate") or {}).get("maxUnavailable"),
                                           len(eligible), True, "1") or 1
                unavailable = sum(1 for n in eligible if not any(is_pod_available(p, mrs, now)
                                                                 for p in by_node.get(n, [])))
                budget = max_unavail - unavailable
                old = [p for n in sorted(eligible) for p in by_node.get(n, [])
                       if labels_of(p).get(HASH_LABEL) != h and p not in delete]
                old.sort(key=lambda p: is_pod_available(p, mrs, now))  # unavailable old pods first
                for p in old:
                    if not is_pod_available(p, mrs, now):
                        delete.append(p)
                    elif budget > 0:
                        delete.append(p)
                        budget -= 1
            self.expectations.expect(key, adds=len(create), deleted_uids={uid_of(p) for p in delete})
            for n in create:
                pod = pod_from_template(ds, template, DAEMONSETS, name_of(ds))
                pin_to_node(pod, n)
                try:
                    created = await self.client.create(PODS, pod)
                    self.recorder.event(ds, "Normal", "SuccessfulCreate", f"Created pod: {name_of(created)}")
                except Exception:
                    self.expectations.creation_failed(key)
                    raise
            for p in delete:
                try:
                    await self.client.delete(PODS, name_of(p), namespace=ns)
                    self.recorder.event(ds, "Normal", "SuccessfulDelete", f"Deleted pod: {name_of(p)}")
                except NotFound:
                    self.expectations.deletion_observed(key, uid_of(p))
        # status counts as upstream: desired = nodes where a pod should run; pods elsewhere (also
        # those only allowed to continue) are misscheduled
        await self._update_status(ds, by_node, {n for n, (run, _) in verdicts.items() if run}, h, now, mrs)

    async def _update_status(self, ds: Obj, by_node: dict[str, list[Obj]], eligible: set[str], h: str,
                             now: float, mrs: int) -> None:
        scheduled = [n for n in eligible if by_node.get(n)]
        on_eligible = [p for n in eligible for p in by_node.get(n, [])]
        ready = [p for p in on_eligible if is_pod_ready(p)]
        available = [p for p in on_eligible if is_pod_available(p, mrs, now)]
        new = {
            "desiredNumberScheduled": len(eligible),
            "currentNumberScheduled": len(scheduled),
            "numberMisscheduled": sum(len(ps) for n, ps in by_node.items() if n not in eligible),
            "numberReady": len(ready),
            "numberAvailable": len(available),
            "numberUnavailable": max(0, len(eligible) - len(available)),
            "updatedNumberScheduled": sum(1 for n in eligible
                                          if any(labels_of(p).get(HASH_LABEL) == h for p in by_node.get(n, []))),
            "observedGeneration": meta(ds).get("generation", 1),
        }
        status = dict(ds.get("status") or {})
        if all(status.get(k, 0) == v for k, v in new.items()):
            return
        body = deep(ds)
        body["status"] = {**status, **new}
        await self.client.update_status(DAEMONSETS, body)

