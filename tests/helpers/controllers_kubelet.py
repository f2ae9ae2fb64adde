"""A simulated kubelet for control-plane tests: registers Nodes (Ready, with allocatable), renews
their Leases in kube-node-lease, and marks pods bound to them Running and Ready with a podIP from
the node's podCIDR (or 10.244.<n>.0/24). Pods being deleted are finished with grace 0, as a kubelet
does once their containers stopped. A pod annotated sim.nodeagent.local/exit-code runs to completion:
phase Succeeded (code 0) or Failed (anything else), as a Job's pod would. Works over the real Client or FakeClient; other helpers' tests
may use it to stand in for kubelets.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from datetime import UTC, datetime
from typing import Any

from nodeagent.client.errors import AlreadyExists, ApiError, Conflict, NotFound
from nodeagent.machinery.kinds import LEASES, NAMESPACES, NODES, PODS

log = logging.getLogger(__name__)

Obj = dict[str, Any]
EXIT_CODE = "sim.nodeagent.local/exit-code"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SimulatedKubelet:
    def __init__(self, client: Any, nodes: list[str], cpu: str = "8", memory: str = "16Gi", pods: str = "110",
                 lease_interval: float = 1.0, ready_delay: float = 0.0) -> None:
        self.client = client
        self.nodes = list(nodes)
        self.capacity = {"cpu": cpu, "memory": memory, "pods": pods}
        self.lease_interval = lease_interval
        self.ready_delay = ready_delay
        self.stopped_leases: set[str] = set()
        self._next_ip: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._handled: set[str] = set()

    async def register(self) -> None:
        with contextlib.suppress(AlreadyExists):
            await self.client.create(NAMESPACES, {"metadata": {"name": "kube-node-lease"}})
        for i, name in enumerate(self.nodes):
            body = {"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
                    "spec": {}}
            try:
                created = await self.client.create(NODES, body)
            except AlreadyExists:
                created = await self.client.get(NODES, name)
            created["status"] = {
                "capacity": dict(self.capacity), "allocatable": dict(self.capacity),
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "kubelet is posting ready status", "lastHeartbeatTime": _now(),
                                "lastTransitionTime": _now()}],
                "addresses": [{"type": "InternalIP", "address": f"192.168.56.{10 + i}"},
                              {"type": "Hostname", "address": name}],
            }
            await self.client.update_status(NODES, created)
        await self.renew_leases()

    async def renew_leases(self) -> None:
        for name in self.nodes:
            if name in self.stopped_leases:
                continue
            spec = {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": _micro()}
            try:
                lease = await self.client.get(LEASES, name, "kube-node-lease")
                lease["spec"] = {**(lease.get("spec") or {}), **spec}
                await self.client.update(LEASES, lease)
            except NotFound:
                with contextlib.suppress(AlreadyExists):
                    await self.client.create(LEASES, {"metadata": {"name": name, "namespace": "kube-node-lease"},
                                                      "spec": spec})
            except Conflict:
                pass

    def stop_lease(self, node: str) -> None:
        """The node "dies": its Lease is no longer renewed and its pods are no longer served."""
        self.stopped_leases.add(node)

    async def resume(self, node: str) -> None:
        """The node is back: Ready posted again and its Lease renewed."""
        self.stopped_leases.discard(node)
        obj = await self.client.get(NODES, node)
        now = _now()
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c.get("type") == "Ready":
                c.update({"status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
                          "lastHeartbeatTime": now, "lastTransitionTime": now})
        await self.client.update_status(NODES, obj)
        await self.renew_leases()

    def _pod_ip(self, node: Obj) -> str:
        name = node["metadata"]["name"]
        cidr = (node.get("spec") or {}).get("podCIDR") or f"10.244.{self.nodes.index(name) + 100}.0/24"
        n = self._next_ip.get(name, 2)
        self._next_ip[name] = n + 1
        return str(ipaddress.ip_network(cidr)[n])

    async def _handle(self, pod: Obj) -> None:
        md, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        node_name = spec.get("nodeName")
        if node_name not in self.nodes or node_name in self.stopped_leases:
            return
        try:
            if md.get("deletionTimestamp"):
                with contextlib.suppress(NotFound, Conflict):
                    await self.client.delete(PODS, md["name"], namespace=md["namespace"], grace_period_seconds=0)
                return
            status = pod.get("status") or {}
            if status.get("phase") in ("Running", "Succeeded", "Failed") or md.get("uid") in self._handled:
                return
            self._handled.add(md.get("uid", ""))
            if self.ready_delay:
                await asyncio.sleep(self.ready_delay)
            node = await self.client.get(NODES, node_name)
            now = _now()
            pod = await self.client.get(PODS, md["name"], md["namespace"])
            pod["status"] = {
                **(pod.get("status") or {}), "phase": "Running", "podIP": self._pod_ip(node),
                "hostIP": next((a["address"] for a in (node.get("status") or {}).get("addresses") or []
                                if a.get("type") == "InternalIP"), "192.168.56.10"),
                "startTime": now,
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                    {"type": "Ready", "status": "True", "lastTransitionTime": now},
                ],
                "containerStatuses": [{"name": c["name"], "image": c.get("image", ""), "ready": True,
                                       "restartCount": 0, "started": True,
                                       "state": {"running": {"startedAt": now}}}
                                      for c in spec.get("containers") or []],
            }
            pod = await self.client.update_status(PODS, pod)
            code = ((pod.get("metadata") or {}).get("annotations") or {}).get(EXIT_CODE)
            if code is not None:
                await self._finish(pod, int(code))
        except (NotFound, Conflict):
            self._handled.discard(md.get("uid", ""))
        except ApiError as e:
            self._handled.discard(md.get("uid", ""))
            log.warning("simulated kubelet failed pod=%s error=%s", md.get("name"), e)

    async def _finish(self, pod: Obj, code: int) -> None:
        now = _now()
        pod["status"]["phase"] = "Succeeded" if code == 0 else "Failed"
        for c in pod["status"]["conditions"]:
            if c["type"] in ("Ready", "ContainersReady"):
                c.update({"status": "False", "reason": "PodCompleted", "lastTransitionTime": now})
        for cs in pod["status"]["containerStatuses"]:
            cs.update({"ready": False, "started": False, "state": {"terminated": {
                "exitCode": code, "reason": "Completed" if code == 0 else "Error", "startedAt": now,
                "finishedAt": now}}})
        await self.client.update_status(PODS, pod)

    async def _watch_pods(self) -> None:
        from nodeagent.client.informer import Informer

        inf = Informer(self.client, PODS)
        tasks: set[asyncio.Task[None]] = set()

        def kick(p: Obj) -> None:
            t = asyncio.ensure_future(self._handle(p))
            tasks.add(t)
            t.add_done_callback(tasks.discard)

        inf.add_handlers(on_add=kick, on_update=lambda _o, n: kick(n))
        await inf.run()

    async def _leases(self) -> None:
        while True:
            await asyncio.sleep(self.lease_interval)
            try:
                await self.renew_leases()
            except ApiError as e:
                log.warning("lease renewal failed error=%s", e)

    async def start(self) -> None:
        await self.register()
        self._tasks = [asyncio.create_task(self._watch_pods()), asyncio.create_task(self._leases())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
