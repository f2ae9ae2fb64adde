"""Node registration, node status and the node Lease (upstream kubelet_node_status.go,
nodestatus/setters.go and pkg/kubelet/nodelease).

The Lease in kube-node-lease is the cheap heartbeat (renewed every 10 s, 40 s duration); the full
node status is written every 10 s when something in it changed and every 5 minutes otherwise.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import platform
import socket
from collections.abc import Callable
from typing import Any

import psutil

from nodeagent.clock import Clock
from nodeagent.kubelet.config import KubeletConfig
from nodeagent.machinery.kinds import LEASES, NODES

log = logging.getLogger(__name__)

KUBELET_VERSION = "v1.32.0-nodeagent"
LEASE_NAMESPACE = "kube-node-lease"
# upstream's default hard eviction thresholds decide the pressure conditions
MEMORY_AVAILABLE_MIN = 100 * 1024 * 1024
NODEFS_AVAILABLE_MIN_FRACTION = 0.10
PID_AVAILABLE_MIN_FRACTION = 0.05


def rfc3339(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return "Linux"


def arch() -> str:
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


def detect_node_ip() -> str:
    """The first global IPv4 address of this network namespace (upstream picks the default route's)."""
    best = ""
    for name, addrs in sorted(psutil.net_if_addrs().items()):
        if name == "lo":
            continue
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                if name.startswith(("cni", "veth", "docker")):
                    best = best or a.address
                    continue
                return str(a.address)
    return best or "127.0.0.1"


def capacity(data_dir: str, max_pods: int) -> tuple[dict[str, str], dict[str, str]]:
    """(capacity, allocatable) from psutil; allocatable holds back the eviction threshold."""
    mem = psutil.virtual_memory().total
    disk = psutil.disk_usage(data_dir if os.path.exists(data_dir) else "/").total
    cap = {"cpu": str(psutil.cpu_count() or 1), "memory": f"{mem // 1024}Ki",
           "ephemeral-storage": f"{disk // 1024}Ki", "pods": str(max_pods), "hugepages-2Mi": "0"}
    alloc = dict(cap)
    alloc["memory"] = f"{(mem - MEMORY_AVAILABLE_MIN) // 1024}Ki"
    alloc["ephemeral-storage"] = str(int(disk * (1 - NODEFS_AVAILABLE_MIN_FRACTION)))
    return cap, alloc


def pressure(data_dir: str) -> dict[str, bool]:
    mem_avail = psutil.virtual_memory().available
    du = psutil.disk_usage(data_dir if os.path.exists(data_dir) else "/")
    pid_max = int(_read("/proc/sys/kernel/pid_max") or 32768)
    return {
        "MemoryPressure": mem_avail < MEMORY_AVAILABLE_MIN,
        "DiskPressure": du.free < du.total * NODEFS_AVAILABLE_MIN_FRACTION,
        "PIDPressure": len(psutil.pids()) > pid_max * (1 - PID_AVAILABLE_MIN_FRACTION),
    }


_CONDITION_TEXT = {
    # type: (reason when False, message when False, reason when True, message when True)
    "MemoryPressure": ("KubeletHasSufficientMemory", "kubelet has sufficient memory available",
                       "KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
    "DiskPressure": ("KubeletHasNoDiskPressure", "kubelet has no disk pressure",
                     "KubeletHasDiskPressure", "kubelet has disk pressure"),
    "PIDPressure": ("KubeletHasSufficientPID", "kubelet has sufficient PID available",
                    "KubeletHasInsufficientPID", "kubelet has insufficient PID available"),
}


class NodeStatusManager:
    def __init__(self, client: Any, config: KubeletConfig, clock: Clock,
                 runtime_version: Callable[[], str],
                 readiness: Callable[[], tuple[bool, str]]) -> None:
        self.client = client
        self.config = config
        self.clock = clock
        self.runtime_version = runtime_version
        self.readiness = readiness
        self.node_ip = config.node_ip or detect_node_ip()
        self.pod_cidr = config.pod_cidr
        self._last_conditions: dict[str, dict[str, Any]] = {}
        self._last_reported: dict[str, Any] | None = None
        self._last_report_time = 0.0
        self.registered = asyncio.Event()

    # ------------------------------------------------------------------ the Node object
    def labels(self) -> dict[str, str]:
        return {"kubernetes.io/hostname": self.config.node_name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch(), "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": arch()}

    def initial_node(self) -> dict[str, Any]:
        node: dict[str, Any] = {
            "metadata": {"name": self.config.node_name, "labels": self.labels(),
                         "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
            "spec": {},
        }
        if self.pod_cidr:
            node["spec"]["podCIDR"] = self.pod_cidr
            node["spec"]["podCIDRs"] = [self.pod_cidr]
        return node

    def _condition(self, ctype: str, status: bool, reason: str, message: str, now: float) -> dict[str, Any]:
        s = "True" if status else "False"
        prev = self._last_conditions.get(ctype)
        transition = prev["lastTransitionTime"] if prev and prev["status"] == s else rfc3339(now)
        c = {"type": ctype, "status": s, "lastHeartbeatTime": rfc3339(now), "lastTransitionTime": transition,
             "reason": reason, "message": message}
        self._last_conditions[ctype] = c
        return c

    def build_status(self) -> dict[str, Any]:
        now = self.clock.now()
        cap, alloc = capacity(self.config.data_dir, self.config.max_pods)
        conds = []
        for ctype, hot in pressure(self.config.data_dir).items():
            fr, fm, tr, tm = _CONDITION_TEXT[ctype]
            conds.append(self._condition(ctype, hot, tr if hot else fr, tm if hot else fm, now))
        ok, why = self.readiness()
        conds.append(self._condition("Ready", ok, "KubeletReady" if ok else "KubeletNotReady",
                                     "kubelet is posting ready status" if ok else why, now))
        if self.pod_cidr:
            conds.append(self._condition("NetworkUnavailable", False, "RouteCreated",
                                         "pod network configured for the node's podCIDR", now))
        else:
            conds.append(self._condition("NetworkUnavailable", True, "NoRouteCreated",
                                         "the node has no podCIDR yet", now))
        uname = os.uname()
        return {
            "capacity": cap,
            "allocatable": alloc,
            "conditions": conds,
            "addresses": [{"type": "InternalIP", "address": self.node_ip},
                          {"type": "Hostname", "address": self.config.node_name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.config.port}},
            "nodeInfo": {
                "machineID": _read("/etc/machine-id"),
                "systemUUID": _read("/sys/class/dmi/id/product_uuid") or _read("/etc/machine-id"),
                "bootID": _read("/proc/sys/kernel/random/boot_id"),
                "kernelVersion": uname.release,
                "osImage": os_image(),
                "containerRuntimeVersion": self.runtime_version(),
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": arch(),
            },
        }

    @property
    def ready_reported(self) -> bool:
        """The last status the apiserver accepted says Ready=True."""
        conds = (self._last_reported or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    # ------------------------------------------------------------------ API calls
    async def register(self) -> dict[str, Any]:
        """Create the Node, or reconcile an existing one (a re-registering kubelet)."""
        from nodeagent.client import AlreadyExists

        backoff = 0.1  # upstream registerWithAPIServer: 100 ms, doubling to 7 s
        while True:
            try:
                try:
                    node = await self.client.create(NODES, self.initial_node())
                    log.info("registered node node=%s", self.config.node_name)
                except AlreadyExists:
                    node = await self.client.get(NODES, self.config.node_name)
                    patch: dict[str, Any] = {"metadata": {"labels": self.labels()}}
                    if self.pod_cidr and not node.get("spec", {}).get("podCIDR"):
                        patch["spec"] = {"podCIDR": self.pod_cidr, "podCIDRs": [self.pod_cidr]}
                    node = await self.client.patch(NODES, self.config.node_name, patch)
                    log.info("node already registered node=%s", self.config.node_name)
                break
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("registering node failed node=%s err=%s retry_in=%.1fs", self.config.node_name, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 7.0)
        self.pod_cidr = self.pod_cidr or node.get("spec", {}).get("podCIDR", "")
        self.registered.set()
        await self.update_status(force=True)
        return dict(node)

    async def update_status(self, force: bool = False) -> bool:
        """Write the status if it changed (heartbeats aside) or the report interval passed."""
        if not self.pod_cidr:
            try:
                node = await self.client.get(NODES, self.config.node_name)
                self.pod_cidr = node.get("spec", {}).get("podCIDR", "")
            except Exception as e:
                log.debug("reading node failed err=%s", e)
        status = self.build_status()
        comparable = {**status, "conditions": [{k: v for k, v in c.items() if k != "lastHeartbeatTime"}
                                               for c in status["conditions"]]}
        # ephemeral figures drift: compare without them
        comparable = {k: v for k, v in comparable.items() if k not in ("allocatable", "capacity")}
        now = self.clock.now()
        due = now - self._last_report_time >= self.config.node_status_report_frequency
        if not force and not due and comparable == self._last_reported:
            return False
        from nodeagent.client import NotFound

        try:
            await self.client.patch(NODES, self.config.node_name, {"status": status}, patch_type="merge",
                                    subresource="status")
        except NotFound:
            # Someone deleted our Node (kubectl delete node): register it again.
            log.warning("node object was deleted, registering again node=%s", self.config.node_name)
            self._last_reported = None
            await self.register()
            return True
        self._last_reported = comparable
        self._last_report_time = now
        return True

    async def renew_lease(self) -> None:
        from nodeagent.client import NotFound

        name = self.config.node_name
        now = micro_time(self.clock.now())
        try:
            lease = await self.client.get(LEASES, name, namespace=LEASE_NAMESPACE)
        except NotFound:
            body = {"metadata": {"name": name, "namespace": LEASE_NAMESPACE,
                                 "ownerReferences": await self._owner()},
                    "spec": {"holderIdentity": name, "leaseDurationSeconds": self.config.node_lease_duration_seconds,
                             "renewTime": now}}
            await self.client.create(LEASES, body, namespace=LEASE_NAMESPACE)
            return
        lease["spec"] = {**lease.get("spec", {}), "holderIdentity": name,
                         "leaseDurationSeconds": self.config.node_lease_duration_seconds, "renewTime": now}
        await self.client.update(LEASES, lease, namespace=LEASE_NAMESPACE)

    async def _owner(self) -> list[dict[str, Any]]:
        try:
            node = await self.client.get(NODES, self.config.node_name)
        except Exception:
            return []
        return [{"apiVersion": "v1", "kind": "Node", "name": node["metadata"]["name"],
                 "uid": node["metadata"].get("uid", "")}]

    async def run_status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.node_status_update_frequency)
            try:
                await self.update_status()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("node status update failed node=%s err=%s", self.config.node_name, e)

    async def run_lease_loop(self) -> None:
        while True:
            try:
                await self.renew_lease()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("lease renewal failed node=%s err=%s", self.config.node_name, e)
            await asyncio.sleep(self.config.node_lease_renew_interval)
