"""Read one pod's full runtime status: its sandboxes and containers, with exit codes and IPs.

ListPodSandbox / ListContainers give only ids and states; the IP comes from PodSandboxStatus and
exit codes, reasons and times from ContainerStatus (upstream GetPodStatus does the same calls).
"""

from __future__ import annotations

import asyncio
import logging

from nodeagent.kubelet.model import Container, PodRuntimeStatus, Sandbox, SandboxState
from nodeagent.kubelet.runtime_service import RuntimeService

log = logging.getLogger(__name__)


async def get_pod_status(runtime: RuntimeService, uid: str) -> PodRuntimeStatus:
    sandboxes = await runtime.list_sandboxes(pod_uid=uid)
    containers = await runtime.list_containers(pod_uid=uid)

    async def sandbox_detail(s: Sandbox) -> Sandbox:
        if s.state != SandboxState.READY:
            return s
        try:
            return await runtime.sandbox_status(s.id)
        except Exception as e:  # a sandbox removed between the list and the status call
            log.debug("sandbox status failed sandbox=%s err=%s", s.id, e)
            return s

    async def container_detail(c: Container) -> Container:
        try:
            return await runtime.container_status(c.id)
        except Exception as e:
            log.debug("container status failed container=%s err=%s", c.id, e)
            return c

    sb = await asyncio.gather(*(sandbox_detail(s) for s in sandboxes))
    cs = await asyncio.gather(*(container_detail(c) for c in containers))
    st = PodRuntimeStatus(uid=uid, sandboxes=sorted(sb, key=lambda s: (s.attempt, s.created_at), reverse=True),
                          containers=list(cs))
    if st.sandboxes:
        st.name, st.namespace = st.sandboxes[0].pod_name, st.sandboxes[0].pod_namespace
    return st
