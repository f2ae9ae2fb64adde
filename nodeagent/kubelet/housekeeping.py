"""Node-wide passes the kubelet runs on a timer, beside the pod workers: orphaned runtime pods
(upstream HandlePodCleanups), the running pods and containers gauges, and container log rotation
(upstream logs/container_log_manager.go: rotate past containerLogMaxSize, then ReopenContainerLog).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable

from nodeagent.clock import Clock
from nodeagent.kubelet.config import KubeletConfig
from nodeagent.kubelet.containers import MIN_GRACE_SECONDS
from nodeagent.kubelet.logs import rotate_if_needed
from nodeagent.kubelet.metrics import KubeletMetrics
from nodeagent.kubelet.model import ContainerState, PodRuntimeStatus, SandboxState
from nodeagent.kubelet.pleg import GenericPLEG
from nodeagent.kubelet.pod_workers import PodWorkers
from nodeagent.kubelet.runtime_service import RuntimeService

log = logging.getLogger(__name__)


def count_running(statuses: Iterable[PodRuntimeStatus], metrics: KubeletMetrics) -> None:
    """kubelet_running_pods (pods with a ready sandbox) and kubelet_running_containers by state."""
    pods = 0
    by_state = {s: 0 for s in ContainerState}
    for st in statuses:
        if any(s.state == SandboxState.READY for s in st.sandboxes):
            pods += 1
        for c in st.containers:
            by_state[c.state] += 1
    metrics.running_pods.set(pods)
    for state, n in by_state.items():
        # upstream's label values: created, running, exited, unknown
        metrics.running_containers.labels(state.value.removeprefix("CONTAINER_").lower()).set(n)


def clean_up_orphans(workers: PodWorkers, runtime_uids: set[str], api_uids: set[str]) -> None:
    """Runtime pods no API pod claims (deleted while the kubelet was down) are torn down; uids
    that neither side knows any more leave the finished set."""
    for uid in runtime_uids:
        if workers.tear_down_orphan(uid, MIN_GRACE_SECONDS):
            log.info("tearing down orphaned pod pod_uid=%s", uid)
    workers.forget_finished(runtime_uids | api_uids)


async def rotate_logs(workers: PodWorkers, pleg: GenericPLEG, runtime: RuntimeService, config: KubeletConfig,
                      clock: Clock) -> None:
    """One pass over the running containers' current log files."""
    for w in list(workers.workers.values()):
        rs = pleg.cached(w.uid)
        if rs is None or w.pod is None:
            continue
        log_dir = runtime.pod_log_directory(w.pod)
        for c in rs.containers:
            if c.state != ContainerState.RUNNING:
                continue
            path = os.path.join(log_dir, c.name, f"{c.attempt}.log")
            try:
                if rotate_if_needed(path, config.container_log_max_size, config.container_log_max_files, clock.now()):
                    await runtime.reopen_container_log(c.id)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("log rotation failed container=%s path=%s err=%s", c.id, path, e)
