"""DaemonSet and Job controllers against FakeClient (with the scheduler for DaemonSet placement)."""

from __future__ import annotations

from typing import Any

from nodeagent.controllers.daemonset import DaemonSetController
from nodeagent.controllers.job import JobController
from nodeagent.controllers.scheduler import Scheduler
from nodeagent.machinery.kinds import CONTROLLERREVISIONS, DAEMONSETS, JOBS, NODES, PODS
from tests.helpers.controllers_env import Env, mark_ready, node


def ds(image: str = "nodeagent.local/toolbox:1", **tspec: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "template": {"metadata": {"labels": {"app": "agent"}},
                                  "spec": {"containers": [{"name": "a", "image": image}], **tspec}}}}


def job(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi", "namespace": "default"},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "pi", "image": "nodeagent.local/toolbox:1"}]}},
                     **spec}}


def live(env: Env) -> list[dict[str, Any]]:
    return [p for p in env.objects(PODS) if not p["metadata"].get("deletionTimestamp")]


async def test_daemonset_one_pod_per_eligible_node_and_rolling_update() -> None:
    env = Env()
    env.add(DaemonSetController)
    env.add(Scheduler)
    env.client.seed(NODES, node("n1", labels={"role": "edge"}))
    env.client.seed(NODES, node("n2", labels={"role": "edge"}))
    env.client.seed(NODES, node("n3", labels={"role": "core"}))
    env.client.seed(NODES, node("n4", labels={"role": "edge"}, taints=[{"key": "x", "effect": "NoSchedule"}]))
    try:
        await env.start()
        await env.client.create(DAEMONSETS, ds(nodeSelector={"role": "edge"}))
        await env.settle()
        pods = live(env)
        assert sorted(p["spec"]["nodeName"] for p in pods) == ["n1", "n2"]
        assert all(p["metadata"]["labels"]["controller-revision-hash"] for p in pods)
        assert len(env.objects(CONTROLLERREVISIONS)) == 1
        await mark_ready(env)
        await env.settle()
        st = env.objects(DAEMONSETS)[0]["status"]
        assert (st["desiredNumberScheduled"], st["currentNumberScheduled"], st["numberReady"],
                st["updatedNumberScheduled"]) == (2, 2, 2, 2)
        # a new node joins
        await env.client.create(NODES, node("n5", labels={"role": "edge"}))
        await env.settle()
        assert sorted(p["spec"]["nodeName"] for p in live(env)) == ["n1", "n2", "n5"]
        # new template: pods replaced, at most one unavailable at a time
        d = env.objects(DAEMONSETS)[0]
        d["spec"]["template"]["spec"]["containers"][0]["image"] = "nodeagent.local/toolbox:2"
        await env.client.update(DAEMONSETS, d)
        for _ in range(10):
            await env.settle()
            not_ready = [p for p in live(env) if (p.get("status") or {}).get("phase") != "Running"]
            assert len(not_ready) <= 1
            await mark_ready(env)
        await env.settle()
        assert {p["spec"]["containers"][0]["image"] for p in live(env)} == {"nodeagent.local/toolbox:2"}
        assert len(live(env)) == 3 and len(env.objects(CONTROLLERREVISIONS)) == 2
    finally:
        await env.stop()


async def finish_pods(env: Env, phase: str) -> None:
    for p in env.objects(PODS):
        if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        p["status"] = {"phase": phase}
        await env.client.update_status(PODS, p)


async def test_job_completions_and_parallelism() -> None:
    env = Env()
    env.add(JobController)
    try:
        await env.start()
        await env.client.create(JOBS, job(completions=3, parallelism=2))
        await env.settle()
        pods = env.objects(PODS)
        assert len(pods) == 2
        assert pods[0]["metadata"]["labels"]["batch.kubernetes.io/job-name"] == "pi"
        await finish_pods(env, "Succeeded")
        await env.settle()
        assert len([p for p in env.objects(PODS) if (p.get("status") or {}).get("phase") != "Succeeded"]) == 1
        await finish_pods(env, "Succeeded")
        await env.settle()
        j = env.objects(JOBS)[0]
        assert j["status"]["succeeded"] == 3 and "active" not in j["status"]
        assert [(c["type"], c["status"]) for c in j["status"]["conditions"]] == [("Complete", "True")]
        assert j["status"]["completionTime"]
    finally:
        await env.stop()


async def test_job_backoff_limit_fails_the_job() -> None:
    env = Env()
    env.add(JobController)
    try:
        await env.start()
        await env.client.create(JOBS, job(backoffLimit=1))
        await env.settle()
        await finish_pods(env, "Failed")
        await env.settle()
        assert len(env.objects(PODS)) == 1  # the replacement waits out the 10 s backoff
        env.clock.advance(9)
        env.controllers[0].queue.add("default/pi")
        await env.settle()
        assert len(env.objects(PODS)) == 1
        env.clock.advance(2)
        env.controllers[0].queue.add("default/pi")
        await env.settle()
        assert len(env.objects(PODS)) == 2
        await finish_pods(env, "Failed")
        await env.settle()
        j = env.objects(JOBS)[0]
        assert j["status"]["failed"] == 2
        cond = j["status"]["conditions"][0]
        assert (cond["type"], cond["reason"]) == ("Failed", "BackoffLimitExceeded")
        assert len(env.objects(PODS)) == 2  # no more pods after the failure
    finally:
        await env.stop()


async def test_job_active_deadline_and_ttl_after_finished() -> None:
    env = Env()
    env.add(JobController)
    try:
        await env.start()
        await env.client.create(JOBS, job(activeDeadlineSeconds=30, ttlSecondsAfterFinished=60))
        await env.settle()
        assert len(env.objects(PODS)) == 1
        env.clock.advance(31)
        env.controllers[0].queue.add("default/pi")
        await env.settle()
        j = env.objects(JOBS)[0]
        cond = j["status"]["conditions"][0]
        assert (cond["type"], cond["reason"]) == ("Failed", "DeadlineExceeded")
        assert live(env) == []  # its running pod was deleted
        env.clock.advance(61)
        env.controllers[0].queue.add("default/pi")
        await env.settle()
        assert env.objects(JOBS) == []
    finally:
        await env.stop()


async def test_daemon_pods_stay_on_a_node_that_turns_not_ready() -> None:
    env = Env()
    env.add(DaemonSetController)
    env.client.seed(NODES, node("n1"))
    try:
        await env.start()
        await env.client.create(DAEMONSETS, ds())
        await env.settle()
        (p,) = live(env)
        n = env.objects(NODES)[0]
        n["spec"]["taints"] = [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"},
                               {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]
        await env.client.update(NODES, n)
        await env.settle()
        assert [q["metadata"]["name"] for q in live(env)] == [p["metadata"]["name"]]
        n = env.objects(NODES)[0]
        n["spec"]["taints"] = [{"key": "evict-all", "effect": "NoExecute"}]
        await env.client.update(NODES, n)
        await env.settle()
        assert live(env) == []
    finally:
        await env.stop()
