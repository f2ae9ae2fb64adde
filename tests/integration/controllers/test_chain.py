"""The seeds' chain against the real apiserver with real kubectl and simulated kubelets:
create deployment -> scale -> set image -> rollout status -> rollout undo -> expose -> delete."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nodeagent.client import Client, ClientConfig
from tests.helpers.apiserver import ApiServerProcess
from tests.helpers.controllers_kubelet import SimulatedKubelet
from tests.helpers.controllers_process import (
    ControllersProcess,
    eventually,
    http_get,
    kubectl,
    start_controllers,
)


@pytest.fixture
async def cluster(apiserver: ApiServerProcess, tmp_path: Path) -> AsyncIterator[tuple[Path, ControllersProcess]]:
    client = Client(ClientConfig.from_kubeconfig(apiserver.kubeconfig))
    kubelet = SimulatedKubelet(client, ["sim-a", "sim-b"])
    ctl = None
    try:
        await kubelet.start()
        ctl = start_controllers(apiserver.kubeconfig, tmp_path, "ctl-a", "--node-monitor-period", "1")
        yield apiserver.kubeconfig, ctl
    finally:
        if ctl is not None:
            ctl.stop()
        await kubelet.stop()
        await client.close()


async def create_deployment(kc: Path, name: str, image: str, replicas: int) -> None:
    """`kubectl create deployment`; kubectl 1.32 sends that body as protobuf, which our apiserver
    answers with 415 for now: then the same object goes as JSON (kubectl's own --dry-run output)."""
    args = ["create", "deployment", name, f"--image={image}", f"--replicas={replicas}"]
    try:
        await kubectl(kc, *args)
    except AssertionError as e:
        if "vnd.kubernetes.protobuf" not in str(e):
            raise
        manifest = await kubectl(kc, *args, "--dry-run=client", "-o", "json")
        path = kc.parent / f"deployment-{name}.json"
        path.write_text(manifest)
        await kubectl(kc, "create", "-f", str(path))


async def get_json(kc: Path, *args: str) -> Any:
    return json.loads(await kubectl(kc, "get", *args, "-o", "json"))


async def test_deployment_chain_with_kubectl(cluster: tuple[Path, ControllersProcess]) -> None:
    kc, ctl = cluster
    await create_deployment(kc, "web", "nodeagent.local/toolbox:1", 3)
    out = await kubectl(kc, "rollout", "status", "deployment/web", "--timeout=90s")
    assert 'deployment "web" successfully rolled out' in out, ctl.tail()
    pods = (await get_json(kc, "pods", "-l", "app=web"))["items"]
    assert len(pods) == 3 and all(p["spec"].get("nodeName") in ("sim-a", "sim-b") for p in pods)
    assert {p["spec"]["nodeName"] for p in pods} == {"sim-a", "sim-b"}  # spread across nodes
    nodes = (await get_json(kc, "nodes"))["items"]
    cidrs = sorted(n["spec"].get("podCIDR") for n in nodes)
    assert cidrs == ["10.244.0.0/24", "10.244.1.0/24"], cidrs

    await kubectl(kc, "scale", "deployment", "web", "--replicas=4")
    await kubectl(kc, "rollout", "status", "deployment/web", "--timeout=90s")
    d = await get_json(kc, "deployment", "web")
    assert d["status"]["availableReplicas"] == 4 and d["status"]["observedGeneration"] == d["metadata"]["generation"]

    await kubectl(kc, "set", "image", "deployment/web", "toolbox=nodeagent.local/toolbox:2")
    out = await kubectl(kc, "rollout", "status", "deployment/web", "--timeout=90s")
    assert "successfully rolled out" in out
    rss = (await get_json(kc, "rs", "-l", "app=web"))["items"]
    assert sorted(rs["spec"]["replicas"] for rs in rss) == [0, 4]
    hist = await kubectl(kc, "rollout", "history", "deployment/web")
    assert [ln.split()[0] for ln in hist.splitlines() if ln[:1].isdigit()] == ["1", "2"], hist

    out = await kubectl(kc, "rollout", "undo", "deployment/web")
    assert "rolled back" in out
    await kubectl(kc, "rollout", "status", "deployment/web", "--timeout=90s")
    d = await get_json(kc, "deployment", "web")
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "nodeagent.local/toolbox:1"
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    cond = {c["type"]: c for c in d["status"]["conditions"]}
    assert cond["Available"]["status"] == "True"
    assert cond["Progressing"]["reason"] == "NewReplicaSetAvailable"

    async def pods_on_image() -> bool:
        items = (await get_json(kc, "pods", "-l", "app=web"))["items"]
        live = [p for p in items if not p["metadata"].get("deletionTimestamp")]
        return len(live) == 4 and all(p["spec"]["containers"][0]["image"] == "nodeagent.local/toolbox:1"
                                      for p in live)
    await eventually(pods_on_image, 60, what="pods back on toolbox:1")

    await kubectl(kc, "expose", "deployment", "web", "--port", "80", "--type", "NodePort")

    async def slice_matches_pods() -> bool:
        items = (await get_json(kc, "pods", "-l", "app=web"))["items"]
        ips = sorted(p["status"]["podIP"] for p in items
                     if not p["metadata"].get("deletionTimestamp") and p["status"].get("podIP"))
        slices = (await get_json(kc, "endpointslices", "-l", "kubernetes.io/service-name=web"))["items"]
        ready = sorted(a for s in slices for e in s.get("endpoints") or []
                       if e["conditions"].get("ready") for a in e["addresses"])
        return len(ips) == 4 and ready == ips and all(
            s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
            for s in slices)
    await eventually(slice_matches_pods, 60, what="EndpointSlices with the ready pods")
    ep = await get_json(kc, "endpoints", "web")
    assert len(ep["subsets"][0]["addresses"]) == 4

    await kubectl(kc, "delete", "deployment", "web")

    async def all_gone() -> bool:
        rss = (await get_json(kc, "rs", "-l", "app=web"))["items"]
        pods = (await get_json(kc, "pods", "-l", "app=web"))["items"]
        return not rss and not pods
    await eventually(all_gone, 60, what="ReplicaSets and pods of the deleted deployment gone")

    events = await kubectl(kc, "get", "events", "-o", "json")
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert {"Scheduled", "ScalingReplicaSet", "SuccessfulCreate"} <= reasons

    _, metrics = await http_get(f"http://127.0.0.1:{ctl.metrics_port}/metrics")
    assert 'workqueue_adds_total{name="deployment"}' in metrics
    assert 'scheduler_schedule_attempts_total{profile="default-scheduler",result="scheduled"}' in metrics
    assert "scheduler_pod_scheduling_duration_seconds_bucket" in metrics
    assert await http_get(f"http://127.0.0.1:{ctl.metrics_port}/healthz") == (200, "ok")
