"""RuntimeClass -> CRI runtime handler (upstream pkg/kubelet/runtimeclass/runtimeclass_manager.go).

A pod's spec.runtimeClassName names a RuntimeClass (node.k8s.io/v1); its `handler` is what the
kubelet passes to RunPodSandbox, and the runtime maps it to one of its configured runtimes (the
managed containerd has `runc` and `crun`). No name means the runtime's default handler. The
classes come from an informer; an unknown name is upstream's lister error, which the sandbox step
reports as FailedCreatePodSandBox and retries (the apiserver's RuntimeClass admission normally
rejects such a pod before it is stored).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nodeagent.machinery.kinds import RUNTIME_CLASSES

log = logging.getLogger(__name__)


class RuntimeClassNotFound(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f'{RUNTIME_CLASSES.singular}.{RUNTIME_CLASSES.group} "{name}" not found')
        self.name = name


class RuntimeClassManager:
    def __init__(self, client: Any) -> None:
        from nodeagent.client import Informer

        self.informer = Informer(client, RUNTIME_CLASSES)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.informer.run(), name="kubelet-runtimeclass-informer")

    async def wait_synced(self, timeout: float) -> None:
        try:
            await self.informer.wait_synced(timeout=timeout)
        except TimeoutError:
            log.warning("runtimeclass informer not synced after %.0fs: pods naming a RuntimeClass wait", timeout)

    def stop(self) -> None:
        self.informer.stop()
        if self._task is not None:
            self._task.cancel()

    def lookup_runtime_handler(self, name: str | None) -> str:
        """The handler of RuntimeClass `name`; "" (the default) when the pod names none."""
        if not name:
            return ""
        rc = self.informer.get(name)
        if rc is None:
            raise RuntimeClassNotFound(name)
        return str(rc.get("handler", ""))
