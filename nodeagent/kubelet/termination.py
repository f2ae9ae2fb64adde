"""The end of a pod on this node: graceful termination with delete confirmation, and the
teardown of pods gone from the API (upstream's SyncTerminatingPod / SyncTerminatedPod).

A pod with a deletionTimestamp is stopped with its grace period, its final (terminal) status is
written, its sandboxes are removed, and the kubelet confirms the delete with a zero grace period
and a uid precondition. A pod the API no longer has (deleted while the kubelet was down, or an
orphan the runtime still holds) is only torn down. Either way the worker is then done.
"""

from __future__ import annotations

import logging
from typing import Any

from nodeagent.kubelet import probes as probes_mod
from nodeagent.kubelet.backoff import Backoff
from nodeagent.kubelet.config import KubeletConfig
from nodeagent.kubelet.containers import Containers, grace_period
from nodeagent.kubelet.pleg import GenericPLEG
from nodeagent.kubelet.pod_workers import PodWorker, pod_key
from nodeagent.kubelet.status_manager import StatusManager
from nodeagent.kubelet.volumes import remove_pod_dir
from nodeagent.machinery.kinds import PODS

log = logging.getLogger(__name__)


class PodTerminator:
    def __init__(self, client: Any, pleg: GenericPLEG, probes: probes_mod.ProbeManager, containers: Containers,
                 status: StatusManager, backoff: Backoff, config: KubeletConfig) -> None:
        self.client = client
        self.pleg = pleg
        self.probes = probes
        self.containers = containers
        self.status = status
        self.backoff = backoff
        self.config = config

    async def terminate(self, w: PodWorker, pod: dict[str, Any]) -> None:
        """The pod has a deletionTimestamp: stop it with its grace period, then confirm the delete."""
        from nodeagent.client import ApiError, NotFound

        rs = await self.pleg.refresh(w.uid)
        grace = grace_period(pod)
        log.info("terminating pod pod=%s grace=%d", pod_key(pod), grace)
        self.probes.remove_pod(w.uid)
        await self.containers.kill_pod(pod, rs, grace, remove=False)
        rs = await self.pleg.refresh(w.uid)
        try:
            await self.status.write(w, pod, rs)
        except Exception as e:
            log.warning("final status not written pod=%s err=%s", pod_key(pod), e)
        await self.containers.kill_pod(None, rs, 0, remove=True)
        self._remove_node_state(w)
        md = pod["metadata"]
        try:
            await self.client.delete(PODS, md["name"], namespace=md.get("namespace", "default"),
                                     grace_period_seconds=0, preconditions={"uid": w.uid})
        except NotFound:
            pass
        except ApiError as e:
            if getattr(e, "code", 0) != 409:
                raise
        self._forget(w)

    async def tear_down(self, w: PodWorker) -> None:
        """The pod is gone from the API (or was never known): remove everything it left."""
        self.probes.remove_pod(w.uid)
        rs = await self.pleg.refresh(w.uid)
        await self.containers.kill_pod(None, rs, w.last_grace, remove=True)
        self._remove_node_state(w)
        self._forget(w)

    def _remove_node_state(self, w: PodWorker) -> None:
        """The pod's directory (volumes, termination-log files) and its back-off entries."""
        remove_pod_dir(self.config.pods_dir, w.uid)
        self.backoff.forget_prefix(f"{w.uid}/")

    def _forget(self, w: PodWorker) -> None:
        """The pod is finished here: drop its cached runtime and API status; the worker ends."""
        self.pleg.forget(w.uid)
        self.status.forget(w.uid)
        w.done = True
