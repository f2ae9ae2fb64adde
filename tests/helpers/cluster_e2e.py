"""A real local cluster for end-to-end tests: `nodeagent cluster up` in a subprocess, torn down by
`nodeagent cluster down` even when the test fails, plus polling helpers around kubectl."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from nodeagent.cluster import natrules, podnet
from nodeagent.cluster.kube import Kubectl, pod_ready
from nodeagent.cluster.lifecycle import ClusterState
from nodeagent.cluster.topology import BASE_DIR, ClusterPlan
from tests.helpers.cluster_host import HostTraces, host_traces

T = TypeVar("T")


@dataclass
class E2ECluster:
    name: str
    base_dir: Path
    up_output: str
    before: HostTraces  # the host before `cluster up`

    @property
    def state(self) -> ClusterState:
        st = ClusterState.load(self.name, self.base_dir)
        assert st is not None, f"cluster {self.name} has no state file"
        return st

    @property
    def plan(self) -> ClusterPlan:
        return self.state.plan

    @property
    def kubectl(self) -> Kubectl:
        return Kubectl(self.plan.kubeconfig, timeout=30)

    def nodeagent(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nodeagent", *args], capture_output=True, text=True,
                              timeout=timeout)

    def pods(self, selector: str, namespace: str = "default") -> list[dict[str, Any]]:
        return [p for p in self.kubectl.items(f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")
                if not p["metadata"].get("deletionTimestamp")]

    def ready_pods(self, selector: str) -> list[dict[str, Any]]:
        return [p for p in self.pods(selector) if pod_ready(p) and p["status"].get("podIP")]

    def wait_ready_pods(self, selector: str, count: int, timeout: float, node: str | None = None,
                        ready: bool = True) -> list[dict[str, Any]]:
        """Wait until exactly `count` pods match (Ready with an IP unless ready=False; on `node`
        when given)."""
        def check() -> list[dict[str, Any]] | None:
            pods = self.ready_pods(selector) if ready else self.pods(selector)
            if node:
                pods = [p for p in pods if p["spec"].get("nodeName") == node]
            return pods if len(pods) == count else None
        return wait_for(f"{count} pods {selector}{' on ' + node if node else ''}", check, timeout)

    def nat_rules(self, node: str) -> list[natrules.Rule]:
        return natrules.parse_save(natrules.save_nat(self.plan.member(node).netns))

    def pod_net(self, pod: dict[str, Any]) -> podnet.PodNet:
        return podnet.lookup(self.plan, pod)


def wait_for(what: str, fn: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
    """Poll fn until it returns something truthy; fail with `what` and the last value otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = fn()
        except Exception as e:  # noqa: BLE001 - the last error goes into the failure message
            last = e
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
        time.sleep(interval)


@contextlib.contextmanager
def local_cluster(prefix: str = "e2e", nodes: int = 2, base_dir: Path = BASE_DIR,
                  extra: tuple[str, ...] = ()) -> Iterator[E2ECluster]:
    name = f"{prefix}{secrets.token_hex(2)}"
    before = host_traces(name, base_dir / name, all_mounts_in_run_netns=False)
    try:
        p = subprocess.run([sys.executable, "-m", "nodeagent", "cluster", "up", "--name", name,
                            "--nodes", str(nodes), "--base-dir", str(base_dir), *extra],
                           capture_output=True, text=True, timeout=420)
        if p.returncode != 0:
            logs = ""
            for f in sorted((base_dir / name / "logs").glob("*.log")):
                logs += f"\n--- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:])
            raise AssertionError(f"cluster up failed ({p.returncode}):\n{p.stdout}\n{p.stderr}{logs}")
        yield E2ECluster(name, base_dir, p.stdout, before)
    finally:
        subprocess.run([sys.executable, "-m", "nodeagent", "cluster", "down", "--name", name,
                        "--base-dir", str(base_dir)], capture_output=True, timeout=180)


def sleeper_pod(name: str, node: str, role: str) -> str:
    """A toolbox pod pinned to `node` that only sleeps, labelled role=ROLE: a client to exec into."""
    return f"""\
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{role: {role}}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers: [{{name: c, image: nodeagent.local/toolbox:1, command: ["sleep", "100000"]}}]
"""
