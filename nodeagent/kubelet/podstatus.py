"""Read one pod's full runtime status: its sandboxes and containers, with exit codes and IPs.

ListPodSandbox / ListContainers give only ids and states; the IP comes from PodSandboxStatus and
exit codes, reasons and times from ContainerStatus (upstream GetPodStatus does the same calls).
A sync lists once before its plan and once after it changed something; between its steps it
re-reads only the objects it just acted on (reread), as upstream's SyncPod asks PodSandboxStatus
for the sandbox it just created.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import replace

from nodeagent.kubelet.model import Container, PodRuntimeStatus, Sandbox, SandboxState
from nodeagent.kubelet.runtime_service import RuntimeService

log = logging.getLogger(__name__)


async def _sandbox_detail(runtime: RuntimeService, s: Sandbox) -> Sandbox:
    if s.state != SandboxState.READY:
        return s
    try:
        return await runtime.sandbox_status(s.id)
    except Exception as e:  # a sandbox removed between the list and the status call
        log.debug("sandbox status failed sandbox=%s err=%s", s.id, e)
        return s


async def _container_detail(runtime: RuntimeService, c: Container) -> Container:
    try:
        return await runtime.container_status(c.id)
    except Exception as e:
        log.debug("container status failed container=%s err=%s", c.id, e)
        return c


def _sorted_sandboxes(sandboxes: Iterable[Sandbox]) -> list[Sandbox]:
    return sorted(sandboxes, key=lambda s: (s.attempt, s.created_at), reverse=True)


async def get_pod_status(runtime: RuntimeService, uid: str) -> PodRuntimeStatus:
    sandboxes = await runtime.list_sandboxes(pod_uid=uid)
    containers = await runtime.list_containers(pod_uid=uid)
    sb = await asyncio.gather(*(_sandbox_detail(runtime, s) for s in sandboxes))
    cs = await asyncio.gather(*(_container_detail(runtime, c) for c in containers))
    st = PodRuntimeStatus(uid=uid, sandboxes=_sorted_sandboxes(sb), containers=list(cs))
    if st.sandboxes:
        st.name, st.namespace = st.sandboxes[0].pod_name, st.sandboxes[0].pod_namespace
    return st


async def reread(runtime: RuntimeService, st: PodRuntimeStatus, containers: Iterable[str] = (),
                 sandboxes: Iterable[str] = ()) -> PodRuntimeStatus:
    """A copy of `st` with the named containers and sandboxes read again by id (ContainerStatus,
    PodSandboxStatus: no list). A sandbox not in `st` yet (just created) is added."""
    want = set(containers)
    read = await asyncio.gather(*(_container_detail(runtime, c) for c in st.containers if c.id in want))
    fresh_c = {c.id: c for c in read}
    fresh_s: dict[str, Sandbox] = {}
    for sid in sandboxes:
        try:
            fresh_s[sid] = await runtime.sandbox_status(sid)
        except Exception as e:
            log.debug("sandbox status failed sandbox=%s err=%s", sid, e)
    known = {s.id for s in st.sandboxes}
    sb = [fresh_s.get(s.id, s) for s in st.sandboxes] + [s for sid, s in fresh_s.items() if sid not in known]
    return replace(st, sandboxes=_sorted_sandboxes(sb), containers=[fresh_c.get(c.id, c) for c in st.containers])
