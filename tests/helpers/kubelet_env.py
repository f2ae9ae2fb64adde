"""A kubelet over FakeClient and the fake CRI, with fast loops, for unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nodeagent.clock import FakeClock
from nodeagent.kubelet.config import KubeletConfig
from nodeagent.kubelet.kubelet import Kubelet
from nodeagent.machinery.kinds import EVENTS, PODS
from tests.helpers.fake_client import FakeClient
from tests.helpers.kubelet_fake_cri import FakeRuntime

NODE = "node-a"


async def wait_for(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll until pred() is truthy (a wait, not a timing assertion); fail with `what` on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        v = pred()
        if asyncio.iscoroutine(v):
            v = await v
        if v:
            return v
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def make_pod(name: str, containers: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": NODE, "containers": containers or [{"name": "c", "image": "nodeagent.local/toolbox:1"}],
                 **spec},
    }


def with_image(pod: dict[str, Any], name: str, image: str) -> dict[str, Any]:
    """A copy of the pod with container `name` on another image (`kubectl set image`)."""
    containers = [{**c, "image": image} if c["name"] == name else c for c in pod["spec"]["containers"]]
    return {**pod, "spec": {**pod["spec"], "containers": containers}}


@dataclass
class Harness:
    client: FakeClient
    runtime: FakeRuntime
    clock: FakeClock
    kubelet: Kubelet
    tmp: str

    async def create(self, pod: dict[str, Any]) -> dict[str, Any]:
        return await self.client.create(PODS, pod, namespace="default")

    def pod(self, name: str) -> dict[str, Any] | None:
        for p in self.client.objects(PODS):
            if p["metadata"]["name"] == name:
                return p
        return None

    def status(self, name: str) -> dict[str, Any]:
        p = self.pod(name)
        return (p or {}).get("status") or {}

    def cstatus(self, name: str, container: str = "c") -> dict[str, Any]:
        for s in self.status(name).get("containerStatuses") or []:
            if s["name"] == container:
                return dict(s)
        return {}

    def event_reasons(self, pod_name: str) -> list[str]:
        return [e["reason"] for e in self.client.objects(EVENTS) if e["involvedObject"]["name"] == pod_name]

    def condition(self, name: str, ctype: str) -> str:
        for c in self.status(name).get("conditions") or []:
            if c["type"] == ctype:
                return str(c["status"])
        return ""


def make_harness(tmp: str, runtime: FakeRuntime | None = None, client: FakeClient | None = None,
                 **config: Any) -> Harness:
    clock = FakeClock()
    rt = runtime or FakeRuntime(clock)
    rt.clock = clock
    client = client or FakeClient()
    cfg = KubeletConfig(node_name=NODE, data_dir=tmp, node_ip="192.168.56.10", pleg_relist_period=0.05,
                        housekeeping_interval=0.05, sync_frequency=0.5, resolv_conf="/nonexistent", **config)
    rt.logs_dir = cfg.logs_dir  # the runtime service lays out the pods' logs under the kubelet's --logs-dir
    k = Kubelet(client, rt, cfg, clock=clock)
    return Harness(client, rt, clock, k, tmp)
