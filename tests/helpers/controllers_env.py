"""A harness for unit tests of the control-plane loops: FakeClient, shared informers, a fake clock,
and settle() to run informers and work queues until nothing is left to do."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nodeagent.clock import FakeClock
from nodeagent.controllers.base import Context, Controller, Options, SharedInformers
from nodeagent.controllers.objects import rfc3339
from nodeagent.machinery.kinds import PODS, Kind
from tests.helpers.fake_client import FakeClient


class Env:
    def __init__(self, options: Options | None = None) -> None:
        self.client = FakeClient()
        self.clock = FakeClock()
        self.informers = SharedInformers(self.client, resync_period=None)
        self.ctx = Context(client=self.client, informers=self.informers, options=options or Options(),
                           clock=self.clock)
        self.controllers: list[Controller] = []

    def add(self, factory: Callable[[Context], Any]) -> Any:
        c = factory(self.ctx)
        self.controllers.append(c)
        return c

    async def start(self) -> None:
        self.informers.start()
        await self.informers.wait_synced(5)

    async def settle(self, rounds: int = 200) -> None:
        """Let watch events reach the caches and drain every queue until all are quiet twice in a row."""
        quiet = 0
        for _ in range(rounds):
            for _ in range(5):
                await asyncio.sleep(0)
            ran = 0
            for c in self.controllers:
                ran += await c.drain()
                flush = getattr(c, "wait_binds", None)
                if flush is not None:
                    await flush()
            if ran == 0:
                quiet += 1
                if quiet >= 3:
                    return
            else:
                quiet = 0
        raise AssertionError("controllers did not settle: " + ", ".join(
            f"{c.name}={len(c.queue)}" for c in self.controllers))

    async def stop(self) -> None:
        for c in self.controllers:
            await c.stop()
        await self.informers.stop()
        await self.client.close()

    # -- object builders ----------------------------------------------------------------------

    def objects(self, kind: Kind) -> list[dict[str, Any]]:
        return self.client.objects(kind)

    def now(self) -> str:
        return rfc3339(self.clock.now())


def node(name: str, cpu: str = "4", memory: str = "8Gi", pods: str = "110", ready: bool = True,
         labels: dict[str, str] | None = None, taints: list[dict[str, Any]] | None = None,
         unschedulable: bool = False) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": {},
        "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": pods},
                   "capacity": {"cpu": cpu, "memory": memory, "pods": pods},
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False", "reason": "KubeletReady",
                                   "lastHeartbeatTime": "2027-01-01T00:00:00Z"}]},
    }
    if taints:
        obj["spec"]["taints"] = taints
    if unschedulable:
        obj["spec"]["unschedulable"] = True
    return obj


def pod(name: str, ns: str = "default", cpu: str | None = None, memory: str | None = None,
        labels: dict[str, str] | None = None, node_name: str | None = None, **spec: Any) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if cpu or memory:
        res = {"requests": {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {"containers": [{"name": "c", "image": "nodeagent.local/toolbox:1", "resources": res}],
                 "schedulerName": "default-scheduler", **({"nodeName": node_name} if node_name else {}), **spec},
        "status": {"phase": "Pending"},
    }


async def mark_ready(env: Env, ts: str | None = None) -> None:
    """Stand in for kubelets: every pod not yet running becomes Running and Ready now."""
    for p in env.objects(PODS):
        if p["metadata"].get("deletionTimestamp") or (p.get("status") or {}).get("phase") == "Running":
            continue
        t = ts or env.now()
        p["status"] = {"phase": "Running", "podIP": "10.244.1.5",
                       "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": t}]}
        await env.client.update_status(PODS, p)
