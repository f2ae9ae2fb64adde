"""The Job controller: run pods until spec.completions succeed, at most spec.parallelism at a time,
and fail the Job after more than spec.backoffLimit failed pods (pkg/controller/job, non-indexed).

Pods carry the upstream labels (batch.kubernetes.io/controller-uid, batch.kubernetes.io/job-name and
their legacy short forms) and a controller ownerReference; they are counted by ownerReference.
The finished Job gets a Complete (CompletionsReached) or Failed (BackoffLimitExceeded, or
DeadlineExceeded after activeDeadlineSeconds) condition, completionTime, and its remaining active
pods are deleted; with ttlSecondsAfterFinished it is deleted that long after it finished (the
ttl-after-finished controller's job, background propagation so its pods go too).
"""

from __future__ import annotations

from typing import Any

from nodeagent.client.errors import NotFound
from nodeagent.controllers.base import Context, PodOwnerController
from nodeagent.controllers.objects import (
    controller_ref,
    deep,
    is_deleting,
    is_pod_ready,
    meta,
    name_of,
    namespace_of,
    parse_time,
    pod_phase,
    rfc3339,
    split_key,
    uid_of,
)
from nodeagent.controllers.podcontrol import pod_from_template
from nodeagent.machinery.kinds import JOBS, PODS

Obj = dict[str, Any]
BACKOFF_BASE = 10.0  # DefaultJobPodFailureBackOff
MAX_BACKOFF = 360.0  # MaxJobPodFailureBackOff


def finished(job: Obj) -> str | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return str(c["type"])
    return None


class JobController(PodOwnerController):
    name = "job"
    owner_kind = "Job"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder("job-controller")
        self.backoff_base = float(ctx.options.extra.get("job_backoff_base", BACKOFF_BASE))
        self._failures_seen: dict[str, tuple[int, float]] = {}  # job -> (failed count, when we saw it)
        self.jobs = self.watch_primary(JOBS)
        self.pods = self.watch_owned_pods()

    async def reconcile(self, key: str) -> None:
        job = self.jobs.get(key)
        if job is None:
            self.expectations.forget(key)
            self._failures_seen.pop(key, None)
            return
        ns, _ = split_key(key)
        uid = uid_of(job)
        pods = [p for p in self.pods.list() if namespace_of(p) == ns and (controller_ref(p) or {}).get("uid") == uid]
        succeeded = sum(1 for p in pods if pod_phase(p) == "Succeeded")
        failed = sum(1 for p in pods if pod_phase(p) == "Failed")
        active = [p for p in pods if pod_phase(p) not in ("Succeeded", "Failed") and not is_deleting(p)]
        spec = job.get("spec") or {}
        completions = spec.get("completions")
        parallelism = int(spec.get("parallelism", 1) if spec.get("parallelism") is not None else 1)
        backoff = int(spec.get("backoffLimit", 6) if spec.get("backoffLimit") is not None else 6)
        now = self.clock.now()
        status: Obj = deep(job.get("status") or {})
        status.setdefault("startTime", rfc3339(now))
        done = finished(job)
        new_cond: tuple[str, str, str] | None = None
        deadline = spec.get("activeDeadlineSeconds")
        started = parse_time(status.get("startTime")) or now
        if done is None:
            if deadline is not None and now - started >= int(deadline):
                new_cond = ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
            elif failed > backoff:
                new_cond = ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
            elif (completions is not None and succeeded >= int(completions)) or (
                    completions is None and succeeded >= 1 and not active):
                new_cond = ("Complete", "CompletionsReached", "Reached expected number of succeeded pods")
        if done or new_cond:
            for p in active:  # a finished Job keeps no running pods
                try:
                    await self.client.delete(PODS, name_of(p), namespace=ns)
                except NotFound:
                    pass
            active = []
        elif self.expectations.satisfied(key) and not is_deleting(job) and not spec.get("suspend"):
            if completions is None:
                want = parallelism if succeeded == 0 else 0
            else:
                want = min(parallelism, int(completions) - succeeded)
            diff = want - len(active)
            wait = self._backoff_remaining(key, failed, now)
            if diff > 0 and wait > 0:
                self.queue.add_after(key, wait + 0.05)
            elif diff > 0:
                self.expectations.expect(key, adds=diff)
                await self._create(job, diff)
            elif diff < 0:
                victims = sorted(active, key=is_pod_ready)[:-diff]
                self.expectations.expect(key, deleted_uids={uid_of(p) for p in victims})
                for p in victims:
                    try:
                        await self.client.delete(PODS, name_of(p), namespace=ns)
                    except NotFound:
                        self.expectations.deletion_observed(key, uid_of(p))
        status.update({"active": len(active), "succeeded": succeeded, "failed": failed,
                       "ready": sum(1 for p in active if is_pod_ready(p))})
        for k in ("active", "succeeded", "failed"):
            if not status[k]:
                status.pop(k)
        if new_cond:
            ctype, reason, message = new_cond
            ts = rfc3339(now)
            status["conditions"] = [*(status.get("conditions") or []), {
                "type": ctype, "status": "True", "reason": reason, "message": message,
                "lastProbeTime": ts, "lastTransitionTime": ts}]
            if ctype == "Complete":
                status["completionTime"] = ts
                self.recorder.event(job, "Normal", "Completed", "Job completed")
            else:
                self.recorder.event(job, "Warning", reason, message)
        if done is None and not new_cond and deadline is not None:
            self.queue.add_after(key, max(0.5, started + int(deadline) - now + 0.1))
        if status != (job.get("status") or {}):
            body = deep(job)
            body["status"] = status
            await self.client.update_status(JOBS, body)
        if done or new_cond:
            await self._expire(job, key, status, now)

    def _backoff_remaining(self, key: str, failed: int, now: float) -> float:
        """Seconds until a replacement for failed pods may start: 10 s doubled per failure, at most
        6 min, counted from when we saw the latest failure (upstream's pod failure backoff)."""
        if failed == 0:
            self._failures_seen.pop(key, None)
            return 0.0
        seen = self._failures_seen.get(key)
        if seen is None or seen[0] != failed:
            self._failures_seen[key] = seen = (failed, now)
        delay = min(self.backoff_base * 2 ** (failed - 1), MAX_BACKOFF)
        return max(0.0, seen[1] + delay - now)

    async def _expire(self, job: Obj, key: str, status: Obj, now: float) -> None:
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None or is_deleting(job):
            return
        finished_at = max((parse_time(c.get("lastTransitionTime")) or now for c in status.get("conditions") or []
                           if c.get("type") in ("Complete", "Failed") and c.get("status") == "True"), default=now)
        due = finished_at + int(ttl)
        if now < due:
            self.queue.add_after(key, due - now + 0.1)
            return
        try:
            # upstream's ttl-after-finished controller does this, under its own identity
            ttl_client = self.ctx.extra_clients.get("ttl-after-finished", self.client)
            await ttl_client.delete(JOBS, name_of(job), namespace=namespace_of(job), propagation_policy="Background",
                                     preconditions={"uid": uid_of(job)})
        except NotFound:
            pass

    async def _create(self, job: Obj, n: int) -> None:
        template = deep((job.get("spec") or {}).get("template") or {})
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        uid, name = uid_of(job), name_of(job)
        labels.update({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                       "controller-uid": uid, "job-name": name})
        for _ in range(n):
            pod = pod_from_template(job, template, JOBS, name)
            try:
                created = await self.client.create(PODS, pod)
            except Exception:
                self.expectations.creation_failed(meta(job).get("namespace", "") + "/" + name)
                raise
            self.recorder.event(job, "Normal", "SuccessfulCreate", f"Created pod: {name_of(created)}")
