"""Garbage collection cascades, DaemonSets and Jobs against the real apiserver with kubectl and
simulated kubelets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nodeagent.client import Client, ClientConfig
from tests.helpers.apiserver import ApiServerProcess
from tests.helpers.controllers_kubelet import EXIT_CODE, SimulatedKubelet
from tests.helpers.controllers_process import eventually, kubectl, start_controllers


@pytest.fixture
async def kc(apiserver: ApiServerProcess, tmp_path: Path) -> AsyncIterator[Path]:
    client = Client(ClientConfig.from_kubeconfig(apiserver.kubeconfig))
    kubelet = SimulatedKubelet(client, ["wl-a", "wl-b", "wl-c"])
    ctl = None
    try:
        await kubelet.start()
        ctl = start_controllers(apiserver.kubeconfig, tmp_path, "ctl-wl", "--no-leader-elect")
        yield apiserver.kubeconfig
    finally:
        if ctl is not None:
            ctl.stop()
        await kubelet.stop()
        await client.close()


async def apply(kc: Path, obj: dict[str, Any]) -> None:
    path = kc.parent / f"{obj['kind']}-{obj['metadata']['name']}.json"
    path.write_text(json.dumps(obj))
    await kubectl(kc, "create", "-f", str(path))


async def items(kc: Path, *args: str) -> list[dict[str, Any]]:
    return list(json.loads(await kubectl(kc, "get", *args, "-o", "json"))["items"])


def deployment(name: str, replicas: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "nodeagent.local/toolbox:1"}]}}}}


async def test_cascading_deletion_foreground_and_orphan(kc: Path) -> None:
    await apply(kc, deployment("fg", 2))
    await apply(kc, deployment("orph", 2))
    await kubectl(kc, "rollout", "status", "deployment/fg", "--timeout=60s")
    await kubectl(kc, "rollout", "status", "deployment/orph", "--timeout=60s")

    # foreground: kubectl waits for the Deployment to be gone, which needs its dependents gone first
    await kubectl(kc, "delete", "deployment", "fg", "--cascade=foreground", "--wait=true", "--timeout=60s")
    assert await items(kc, "rs", "-l", "app=fg") == []
    assert await items(kc, "pods", "-l", "app=fg") == []

    # orphan: the ReplicaSet and its pods stay, without the ownerReference
    await kubectl(kc, "delete", "deployment", "orph", "--cascade=orphan", "--wait=true", "--timeout=60s")
    rss = await items(kc, "rs", "-l", "app=orph")
    assert len(rss) == 1 and not rss[0]["metadata"].get("ownerReferences")
    pods = await items(kc, "pods", "-l", "app=orph")
    assert len(pods) == 2 and all(p["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet" for p in pods)


async def test_daemonset_rollout_and_job_completion(kc: Path) -> None:
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "default"},
          "spec": {"selector": {"matchLabels": {"app": "agent"}},
                   "template": {"metadata": {"labels": {"app": "agent"}},
                                "spec": {"containers": [{"name": "a", "image": "nodeagent.local/toolbox:1"}]}}}}
    await apply(kc, ds)
    out = await kubectl(kc, "rollout", "status", "daemonset/agent", "--timeout=60s")
    assert "successfully rolled out" in out
    pods = await items(kc, "pods", "-l", "app=agent")
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["wl-a", "wl-b", "wl-c"]
    await kubectl(kc, "set", "image", "daemonset/agent", "a=nodeagent.local/toolbox:2")
    await kubectl(kc, "rollout", "status", "daemonset/agent", "--timeout=60s")

    async def all_new() -> bool:
        live = [p for p in await items(kc, "pods", "-l", "app=agent") if not p["metadata"].get("deletionTimestamp")]
        return len(live) == 3 and {p["spec"]["containers"][0]["image"] for p in live} == {"nodeagent.local/toolbox:2"}
    await eventually(all_new, 60, what="daemon pods on the new image")
    hist = await kubectl(kc, "rollout", "history", "daemonset/agent")
    assert [ln.split()[0] for ln in hist.splitlines() if ln[:1].isdigit()] == ["1", "2"], hist
    await kubectl(kc, "rollout", "undo", "daemonset/agent")
    await kubectl(kc, "rollout", "status", "daemonset/agent", "--timeout=60s")

    async def all_old() -> bool:
        live = [p for p in await items(kc, "pods", "-l", "app=agent") if not p["metadata"].get("deletionTimestamp")]
        return len(live) == 3 and {p["spec"]["containers"][0]["image"] for p in live} == {"nodeagent.local/toolbox:1"}
    await eventually(all_old, 60, what="daemon pods back on the old image")

    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi", "namespace": "default"},
           "spec": {"completions": 3, "parallelism": 2, "template": {
               "metadata": {"annotations": {EXIT_CODE: "0"}},
               "spec": {"restartPolicy": "Never",
                        "containers": [{"name": "pi", "image": "nodeagent.local/toolbox:1"}]}}}}
    await apply(kc, job)
    await kubectl(kc, "wait", "--for=condition=complete", "job/pi", "--timeout=60s")
    j = json.loads(await kubectl(kc, "get", "job", "pi", "-o", "json"))
    assert j["status"]["succeeded"] == 3 and j["status"].get("completionTime")

    bad = json.loads(json.dumps(job))
    bad["metadata"]["name"] = "fails"
    bad["spec"] = {"backoffLimit": 0, "template": bad["spec"]["template"]}  # no retry: no 10 s backoff
    bad["spec"]["template"]["metadata"]["annotations"][EXIT_CODE] = "1"
    await apply(kc, bad)
    await kubectl(kc, "wait", "--for=condition=failed", "job/fails", "--timeout=60s")
    f = json.loads(await kubectl(kc, "get", "job", "fails", "-o", "json"))
    assert f["status"]["failed"] == 1
    reasons = {c["reason"] for c in f["status"]["conditions"]}
    assert "BackoffLimitExceeded" in reasons


async def test_namespace_deletion_removes_its_workloads(kc: Path) -> None:
    await apply(kc, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}})
    d = deployment("inner", 2)
    d["metadata"]["namespace"] = "doomed"
    await apply(kc, d)
    await kubectl(kc, "-n", "doomed", "rollout", "status", "deployment/inner", "--timeout=60s")
    await kubectl(kc, "expose", "-n", "doomed", "deployment", "inner", "--port", "80")
    await kubectl(kc, "delete", "namespace", "doomed", "--wait=true", "--timeout=60s")
    left = await kubectl(kc, "get", "namespace", "doomed", check=False)
    assert "NotFound" in left or "not found" in left
    assert await items(kc, "pods", "-A", "-l", "app=inner") == []
    assert await items(kc, "endpointslices", "-A", "-l", "kubernetes.io/service-name=inner") == []


async def test_steady_state_writes_nothing(kc: Path) -> None:
    """Level-based loops must converge: once everything is in place, no object is rewritten (a
    field the apiserver defaults differently from what a loop writes would show up as a hot loop)."""
    await apply(kc, deployment("calm", 3))
    await kubectl(kc, "rollout", "status", "deployment/calm", "--timeout=60s")
    await kubectl(kc, "expose", "deployment", "calm", "--port", "80")
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "calm-ds", "namespace": "default"},
          "spec": {"selector": {"matchLabels": {"app": "calm-ds"}},
                   "template": {"metadata": {"labels": {"app": "calm-ds"}},
                                "spec": {"containers": [{"name": "a", "image": "nodeagent.local/toolbox:1"}]}}}}
    await apply(kc, ds)
    await kubectl(kc, "rollout", "status", "daemonset/calm-ds", "--timeout=60s")

    async def versions() -> dict[str, str]:
        out: dict[str, str] = {}
        for kind in ("deployments", "replicasets", "daemonsets", "pods", "endpoints", "endpointslices",
                     "services", "controllerrevisions"):
            for o in await items(kc, kind, "-n", "default"):
                out[f"{kind}/{o['metadata']['name']}"] = o["metadata"]["resourceVersion"]
        for o in await items(kc, "nodes"):
            out[f"nodes/{o['metadata']['name']}/spec"] = json.dumps(o.get("spec"), sort_keys=True)
        return out

    async def settled() -> dict[str, str] | None:
        a = await versions()
        await asyncio.sleep(2)
        b = await versions()
        return a if a == b else None

    first = await eventually(settled, 30, interval=0.1, what="a quiet cluster")
    await asyncio.sleep(3)
    second = await versions()
    changed = sorted(k for k in first if first[k] != second.get(k))
    assert changed == [], f"rewritten without any change: {changed}"
