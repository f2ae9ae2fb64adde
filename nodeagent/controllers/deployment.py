"""The Deployment controller: one new ReplicaSet for the current template, old ones scaled down.

Follows pkg/controller/deployment: sync() handles scaling events (spec.replicas changed: resize the
one active set, or proportionally), rolloutRolling (grow the new set within maxSurge, shrink old
sets within maxUnavailable, clean unhealthy old replicas first) and rolloutRecreate (old sets to 0,
wait for their pods to go, then the new set). The new set carries the next revision in
deployment.kubernetes.io/revision (an old template coming back, as `kubectl rollout undo` does it,
gets a new revision and revision-history); old sets beyond revisionHistoryLimit are deleted.
Status and conditions are what `kubectl rollout status` reads.
"""

from __future__ import annotations

import logging
from typing import Any

from nodeagent.client.errors import AlreadyExists, NotFound
from nodeagent.controllers.base import Context, Controller
from nodeagent.controllers.objects import (
    controller_ref,
    creation_time,
    deep,
    is_deleting,
    is_pod_terminal,
    labels_of,
    meta,
    name_of,
    namespace_of,
    owner_reference,
    parse_time,
    selector_matches,
    split_key,
)
from nodeagent.controllers.podcontrol import claim
from nodeagent.controllers.rollout import (
    DESIRED_REPLICAS,
    HASH_LABEL,
    MAX_REPLICAS,
    REVISION,
    REVISION_HISTORY,
    SKIP_ANNOTATIONS,
    by_creation,
    calculate_status,
    condition,
    deployment_complete,
    deployment_progressing,
    equal_ignore_hash,
    find_new_rs,
    is_rolling,
    is_saturated,
    max_revision,
    max_surge,
    max_unavailable,
    new_rs_new_replicas,
    replicas_of,
    revision,
    set_condition,
    status_int,
    sum_spec,
    sum_status,
    template_hash,
)
from nodeagent.machinery.kinds import DEPLOYMENTS, PODS, REPLICASETS

log = logging.getLogger(__name__)

Obj = dict[str, Any]
WRITE_WAIT = 10.0  # seconds to wait for the informer to show our own ReplicaSet writes


def round_half_away(x: float) -> int:
    """integer.RoundToInt32."""
    return int(x - 0.5) if x < 0 else int(x + 0.5)


def replica_set_fraction(rs: Obj, d: Obj) -> int:
    """getReplicaSetFraction: how much this set grows (or shrinks) for the new deployment size."""
    if replicas_of(d) == 0:
        return -replicas_of(rs)
    max_now = replicas_of(d) + max_surge(d)
    try:
        before = int((meta(rs).get("annotations") or {}).get(MAX_REPLICAS) or 0)
    except ValueError:
        before = 0
    if before == 0:
        before = int((d.get("status") or {}).get("replicas") or 0)
        if before == 0:
            return 0
    return round_half_away(replicas_of(rs) * max_now / before) - replicas_of(rs)


class DeploymentController(Controller):
    name = "deployment"
    workers = 2

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder("deployment-controller")
        self.d_inf = self.watch_primary(DEPLOYMENTS)
        self.rs_inf = ctx.informers.get(REPLICASETS)
        self.pods = ctx.informers.get(PODS)
        self.rs_inf.add_handlers(on_add=self._rs_event, on_update=lambda _o, n: self._rs_event(n),
                                 on_delete=self._rs_event)
        self.pods.add_handlers(on_delete=self._pod_deleted)
        # resourceVersions of our own ReplicaSet writes not yet seen by the informer: acting on an
        # older cached copy would decide from stale sizes (a second proportional scale, say)
        self._written: dict[str, dict[str, tuple[str, float]]] = {}  # deployment -> {rs key: (rv, when)}

    def _remember(self, d: Obj, rs: Obj) -> Obj:
        rv = meta(rs).get("resourceVersion")
        if rv:
            self._written.setdefault(f"{namespace_of(d)}/{name_of(d)}", {})[
                f"{namespace_of(rs)}/{name_of(rs)}"] = (str(rv), self.clock.now())
        return rs

    def _cache_behind(self, dkey: str) -> bool:
        written = self._written.get(dkey)
        if not written:
            return False
        behind = False
        for key, (rv, when) in list(written.items()):
            cached = self.rs_inf.get(key)
            cached_rv = str(meta(cached).get("resourceVersion", "")) if cached else ""
            try:
                caught_up = cached is not None and int(cached_rv) >= int(rv)
            except ValueError:
                caught_up = cached is not None
            # a set deleted since (history cleanup, GC) never shows up: give up waiting after a while
            if caught_up or self.clock.now() - when > WRITE_WAIT:
                del written[key]
            else:
                behind = True
        if not written:
            del self._written[dkey]
        return behind

    def _rs_event(self, rs: Obj) -> None:
        ref = controller_ref(rs)
        if ref is not None:
            if ref.get("kind") == "Deployment":
                self.queue.add(f"{namespace_of(rs)}/{ref.get('name')}")
            return
        ns = namespace_of(rs)  # an orphan: whoever selects it may adopt it
        for d in self.d_inf.list():
            if namespace_of(d) == ns and selector_matches((d.get("spec") or {}).get("selector"), labels_of(rs)):
                self.enqueue(d)

    def _pod_deleted(self, pod: Obj) -> None:
        # Recreate waits for old pods to be gone
        ref = controller_ref(pod)
        if ref and ref.get("kind") == "ReplicaSet":
            rs = self.rs_inf.get(f"{namespace_of(pod)}/{ref.get('name')}")
            if rs is not None:
                self._rs_event(rs)

    # -- sync ---------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        d = self.d_inf.get(key)
        if d is None:
            self._written.pop(key, None)
            return
        ns, _ = split_key(key)
        if self._cache_behind(key):
            self.queue.add_after(key, 0.05)
            return
        d = deep(d)
        candidates = [rs for rs in self.rs_inf.list() if namespace_of(rs) == ns]
        rss = await claim(self.client, d, DEPLOYMENTS, REPLICASETS, candidates, (d.get("spec") or {}).get("selector"))
        if is_deleting(d):
            await self._sync_status(d, rss, find_new_rs(d, rss))
            return
        self._check_paused(d)
        if (d.get("spec") or {}).get("paused"):
            await self._sync(d, rss)
            return
        if self._is_scaling_event(d, rss):
            await self._sync(d, rss)
            return
        if is_rolling(d):
            await self._rollout_rolling(d, rss)
        else:
            await self._rollout_recreate(d, rss)

    def _check_paused(self, d: Obj) -> None:
        """checkPausedConditions: Progressing=Unknown DeploymentPaused / DeploymentResumed."""
        status = deep(d.get("status") or {})
        cur = condition(status, "Progressing")
        paused = bool((d.get("spec") or {}).get("paused"))
        if paused and (cur is None or cur.get("reason") != "DeploymentPaused"):
            set_condition(status, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused",
                          self.clock.now())
        elif not paused and cur is not None and cur.get("reason") == "DeploymentPaused":
            set_condition(status, "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed",
                          self.clock.now())
        else:
            return
        d["status"] = status

    def _is_scaling_event(self, d: Obj, rss: list[Obj]) -> bool:
        new_rs, old = self._split(d, rss)
        active = [rs for rs in ([new_rs] if new_rs else []) + old if replicas_of(rs) > 0]
        for rs in active:
            desired = (meta(rs).get("annotations") or {}).get(DESIRED_REPLICAS)
            if desired is not None and desired != str(replicas_of(d)):
                return True
        return False

    def _split(self, d: Obj, rss: list[Obj]) -> tuple[Obj | None, list[Obj]]:
        new_rs = find_new_rs(d, rss)
        old = [rs for rs in rss if new_rs is None or name_of(rs) != name_of(new_rs)]
        return new_rs, old

    async def _get_all(self, d: Obj, rss: list[Obj], create: bool) -> tuple[Obj | None, list[Obj]]:
        new_rs, old = self._split(d, rss)
        new_rs = await self._get_new_rs(d, rss, new_rs, old, create)
        return new_rs, old

    async def _get_new_rs(self, d: Obj, all_rss: list[Obj], existing: Obj | None, old: list[Obj],
                          create: bool) -> Obj | None:
        """getNewReplicaSet: bring an existing new set's annotations up to date, or create it."""
        new_revision = str(max_revision(old) + 1)
        rs: Obj
        if existing is not None:
            rs = deep(existing)
            changed = self._set_new_rs_annotations(d, rs, new_revision, exists=True)
            mrs = (d.get("spec") or {}).get("minReadySeconds") or 0
            if ((rs.get("spec") or {}).get("minReadySeconds") or 0) != mrs:
                rs["spec"]["minReadySeconds"] = mrs
                changed = True
            if changed:
                rs = self._remember(d, await self.client.update(REPLICASETS, rs))
            await self._set_deployment_revision(d, (meta(rs).get("annotations") or {}).get(REVISION, new_revision))
            if condition(d.get("status") or {}, "Progressing") is None:
                status = deep(d.get("status") or {})
                set_condition(status, "Progressing", "True", "FoundNewReplicaSet",
                              f'Found new replica set "{name_of(rs)}"', self.clock.now())
                d["status"] = status
            return rs
        if not create:
            return None
        spec = d.get("spec") or {}
        collisions = int((d.get("status") or {}).get("collisionCount") or 0)
        template = deep(spec.get("template") or {})
        h = template_hash(template, collisions)
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
        selector = deep(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = h
        rs = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"{name_of(d)}-{h}", "namespace": namespace_of(d),
                         "labels": dict(template["metadata"]["labels"]), "annotations": {},
                         "ownerReferences": [owner_reference(d, DEPLOYMENTS)]},
            "spec": {"replicas": 0, "minReadySeconds": spec.get("minReadySeconds") or 0,
                     "selector": selector, "template": template},
        }
        rs["spec"]["replicas"] = new_rs_new_replicas(d, all_rss, None)
        self._set_new_rs_annotations(d, rs, new_revision, exists=False)
        try:
            created = self._remember(d, await self.client.create(REPLICASETS, rs))
        except AlreadyExists:
            live = await self.client.get(REPLICASETS, name_of(rs), namespace_of(d))
            ref = controller_ref(live)
            if (ref and ref.get("uid") == meta(d).get("uid")
                    and equal_ignore_hash((live.get("spec") or {}).get("template") or {}, spec.get("template") or {})):
                return live
            # a hash collision: bump collisionCount so the next name differs (upstream does the same)
            status = deep(d.get("status") or {})
            status["collisionCount"] = collisions + 1
            d["status"] = status
            await self.client.update_status(DEPLOYMENTS, d)
            raise
        self.recorder.event(d, "Normal", "ScalingReplicaSet",
                            f"Scaled up replica set {name_of(created)} from 0 to {replicas_of(created)}")
        await self._set_deployment_revision(d, new_revision)
        status = deep(d.get("status") or {})
        set_condition(status, "Progressing", "True", "NewReplicaSetCreated",
                      f'Created new replica set "{name_of(created)}"', self.clock.now())
        d["status"] = status
        return created

    def _set_new_rs_annotations(self, d: Obj, rs: Obj, new_revision: str, exists: bool) -> bool:
        md = rs.setdefault("metadata", {})
        ann = dict(md.get("annotations") or {})
        before = dict(ann)
        for k, v in (meta(d).get("annotations") or {}).items():
            if k not in SKIP_ANNOTATIONS:
                ann[k] = v
        old_rev = ann.get(REVISION, "")
        if not old_rev or int(old_rev or 0) < int(new_revision):
            ann[REVISION] = new_revision
            if exists and old_rev:
                hist = [h for h in (ann.get(REVISION_HISTORY) or "").split(",") if h]
                ann[REVISION_HISTORY] = ",".join([*hist, old_rev])
        if not exists:
            ann[DESIRED_REPLICAS] = str(replicas_of(d))
            ann[MAX_REPLICAS] = str(replicas_of(d) + max_surge(d))
        md["annotations"] = ann
        return ann != before

    async def _set_deployment_revision(self, d: Obj, rev: str) -> None:
        ann = meta(d).get("annotations") or {}
        if ann.get(REVISION) == rev:
            return
        # an update, as upstream (the deployment controller's role has no patch on deployments)
        new = deep(d)
        new["metadata"].setdefault("annotations", {})[REVISION] = rev
        updated = await self.client.update(DEPLOYMENTS, new)
        d["metadata"]["annotations"] = (updated.get("metadata") or {}).get("annotations") or {REVISION: rev}
        d["metadata"]["resourceVersion"] = (updated.get("metadata") or {}).get("resourceVersion")

    # -- scaling --------------------------------------------------------------------------------

    async def _scale_rs(self, d: Obj, rs: Obj, size: int) -> Obj:
        desired, max_total = replicas_of(d), replicas_of(d) + max_surge(d)
        cur = replicas_of(rs)
        ann = meta(rs).get("annotations") or {}
        if (cur == size and ann.get(DESIRED_REPLICAS) == str(desired)
                and ann.get(MAX_REPLICAS) == str(max_total)):
            return rs
        new = deep(rs)
        new["spec"]["replicas"] = size
        new["metadata"].setdefault("annotations", {})
        new["metadata"]["annotations"][DESIRED_REPLICAS] = str(desired)
        new["metadata"]["annotations"][MAX_REPLICAS] = str(max_total)
        updated: Obj = self._remember(d, await self.client.update(REPLICASETS, new))
        if cur != size:
            verb = "up" if size > cur else "down"
            self.recorder.event(d, "Normal", "ScalingReplicaSet",
                                f"Scaled {verb} replica set {name_of(rs)} from {cur} to {size}")
        return updated

    async def _scale(self, d: Obj, new_rs: Obj | None, old: list[Obj]) -> None:
        """scale(): a spec.replicas change while sets exist."""
        all_rss = ([new_rs] if new_rs else []) + old
        active = [rs for rs in all_rss if replicas_of(rs) > 0]
        target: Obj | None = None
        if len(active) == 1:
            target = active[0]
        elif not active:
            target = new_rs or (by_creation(old)[-1] if old else None)
        if target is not None or not active:
            if target is not None:
                await self._scale_rs(d, target, replicas_of(d))
            return
        if is_saturated(d, new_rs):
            for rs in old:
                if replicas_of(rs):
                    await self._scale_rs(d, rs, 0)
            return
        if not is_rolling(d):
            return
        # proportional scaling (deployment/sync.go scale + GetReplicaSetProportion): each active
        # set grows or shrinks by its share of the old max size, larger sets first, and the
        # rounding leftover goes to the largest
        allowed = replicas_of(d) + max_surge(d) if replicas_of(d) > 0 else 0
        to_add = allowed - sum_spec(active)
        newer_first = sorted(active, key=lambda r: creation_time(r), reverse=to_add > 0)
        ordered = sorted(newer_first, key=lambda r: -replicas_of(r))
        sizes: dict[str, int] = {}
        added = 0
        for rs in ordered:
            share = 0
            if to_add != 0 and replicas_of(rs) and to_add != added:
                frac = replica_set_fraction(rs, d)
                share = min(frac, to_add - added) if to_add > 0 else max(frac, to_add - added)
            sizes[name_of(rs)] = replicas_of(rs) + share
            added += share
        for i, rs in enumerate(ordered):
            if i == 0 and to_add != 0:
                sizes[name_of(rs)] = max(0, sizes[name_of(rs)] + to_add - added)
            await self._scale_rs(d, rs, sizes[name_of(rs)])

    async def _sync(self, d: Obj, rss: list[Obj]) -> None:
        new_rs, old = await self._get_all(d, rss, create=False)
        await self._scale(d, new_rs, old)
        await self._sync_status(d, rss, new_rs)

    # -- rolling update -------------------------------------------------------------------------

    async def _rollout_rolling(self, d: Obj, rss: list[Obj]) -> None:
        new_rs, old = await self._get_all(d, rss, create=True)
        assert new_rs is not None
        all_rss = [new_rs, *old]
        if await self._reconcile_new_rs(d, all_rss, new_rs):
            await self._sync_rollout_status(d, all_rss, new_rs)
            return
        if await self._reconcile_old_rss(d, all_rss, [rs for rs in old if replicas_of(rs) > 0], new_rs):
            await self._sync_rollout_status(d, all_rss, new_rs)
            return
        if deployment_complete(d, calculate_status(d, all_rss, new_rs, self.clock.now())):
            await self._cleanup(d, old)
        await self._sync_rollout_status(d, all_rss, new_rs)

    async def _reconcile_new_rs(self, d: Obj, all_rss: list[Obj], new_rs: Obj) -> bool:
        want = replicas_of(d)
        cur = replicas_of(new_rs)
        if cur == want:
            return False
        if cur > want:
            await self._scale_rs(d, new_rs, want)
            return True
        size = new_rs_new_replicas(d, all_rss, new_rs)
        if size == cur:
            return False
        await self._scale_rs(d, new_rs, size)
        return True

    async def _reconcile_old_rss(self, d: Obj, all_rss: list[Obj], old: list[Obj], new_rs: Obj) -> bool:
        old_count = sum_spec(old)
        if old_count == 0:
            return False
        all_count = sum_spec(all_rss)
        min_available = replicas_of(d) - max_unavailable(d)
        new_unavailable = replicas_of(new_rs) - status_int(new_rs, "availableReplicas")
        max_scaled_down = all_count - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        # first the old replicas that are not available anyway (cleanupUnhealthyReplicas)
        cleaned = 0
        remaining: list[Obj] = []
        for rs in by_creation(old):
            unhealthy = replicas_of(rs) - status_int(rs, "availableReplicas")
            if cleaned < max_scaled_down and replicas_of(rs) and unhealthy > 0:
                n = min(max_scaled_down - cleaned, unhealthy)
                rs = await self._scale_rs(d, rs, replicas_of(rs) - n)
                cleaned += n
            remaining.append(rs)
        # then available ones, keeping minAvailable (scaleDownOldReplicaSetsForRollingUpdate)
        available = sum_status([new_rs, *remaining], "availableReplicas")
        scaled = 0
        if available > min_available:
            total = available - min_available
            for rs in by_creation(remaining):
                if scaled >= total:
                    break
                if replicas_of(rs) == 0:
                    continue
                n = min(replicas_of(rs), total - scaled)
                await self._scale_rs(d, rs, replicas_of(rs) - n)
                scaled += n
        return cleaned + scaled > 0

    # -- recreate -------------------------------------------------------------------------------

    async def _rollout_recreate(self, d: Obj, rss: list[Obj]) -> None:
        new_rs, old = await self._get_all(d, rss, create=False)
        scaled = False
        for rs in old:
            if replicas_of(rs) > 0:
                await self._scale_rs(d, rs, 0)
                scaled = True
        all_rss = ([new_rs] if new_rs else []) + old
        if scaled:
            await self._sync_rollout_status(d, all_rss, new_rs)
            return
        old_names = {name_of(rs) for rs in old}
        running = [p for p in self.pods.list() if namespace_of(p) == namespace_of(d)
                   and (controller_ref(p) or {}).get("name") in old_names and not is_pod_terminal(p)]
        if running:
            await self._sync_rollout_status(d, all_rss, new_rs)
            return
        if new_rs is None:
            new_rs, old = await self._get_all(d, rss, create=True)
            assert new_rs is not None
            all_rss = [new_rs, *old]
        if replicas_of(new_rs) != replicas_of(d):
            new_rs = await self._scale_rs(d, new_rs, replicas_of(d))
            all_rss = [new_rs, *old]
        if deployment_complete(d, calculate_status(d, all_rss, new_rs, self.clock.now())):
            await self._cleanup(d, old)
        await self._sync_rollout_status(d, all_rss, new_rs)

    # -- history and status ---------------------------------------------------------------------

    async def _cleanup(self, d: Obj, old: list[Obj]) -> None:
        limit = (d.get("spec") or {}).get("revisionHistoryLimit")
        limit = 10 if limit is None else int(limit)
        cleanable = [rs for rs in old if replicas_of(rs) == 0 and status_int(rs, "replicas") == 0
                     and not is_deleting(rs)]
        excess = len(cleanable) - limit
        if excess <= 0:
            return
        for rs in sorted(cleanable, key=revision)[:excess]:
            try:
                await self.client.delete(REPLICASETS, name_of(rs), namespace=namespace_of(rs))
            except NotFound:
                pass

    async def _sync_status(self, d: Obj, rss: list[Obj], new_rs: Obj | None) -> None:
        status = calculate_status(d, rss, new_rs, self.clock.now())
        await self._write_status(d, status)

    async def _sync_rollout_status(self, d: Obj, all_rss: list[Obj], new_rs: Obj | None) -> None:
        """syncRolloutStatus: Available from calculate_status, Progressing from progress.go."""
        now = self.clock.now()
        old_status = d.get("status") or {}
        status = calculate_status(d, all_rss, new_rs, now)
        deadline = (d.get("spec") or {}).get("progressDeadlineSeconds", 600)
        cur = condition(status, "Progressing")
        complete_already = (int(status.get("replicas") or 0) == int(status.get("updatedReplicas") or 0)
                            and cur is not None and cur.get("reason") == "NewReplicaSetAvailable")
        if deadline is not None and not complete_already and new_rs is not None:
            if deployment_complete(d, status):
                set_condition(status, "Progressing", "True", "NewReplicaSetAvailable",
                              f'ReplicaSet "{name_of(new_rs)}" has successfully progressed.', now)
            elif deployment_progressing(old_status, status):
                set_condition(status, "Progressing", "True", "ReplicaSetUpdated",
                              f'ReplicaSet "{name_of(new_rs)}" is progressing.', now)
            elif cur is not None and cur.get("status") == "True":
                since = parse_time(cur.get("lastUpdateTime")) or now
                if since + int(deadline) < now:
                    set_condition(status, "Progressing", "False", "ProgressDeadlineExceeded",
                                  f'ReplicaSet "{name_of(new_rs)}" has timed out progressing.', now)
                else:
                    self.queue.add_after(f"{namespace_of(d)}/{name_of(d)}", since + int(deadline) - now + 1)
        await self._write_status(d, status)

    async def _write_status(self, d: Obj, status: Obj) -> None:
        if status == (d.get("status") or {}):
            return
        body = deep(d)
        body["status"] = status
        await self.client.update_status(DEPLOYMENTS, body)
