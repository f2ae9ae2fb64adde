"""Time every runtime call into kubelet_runtime_operations_duration_seconds (upstream's
instrumentedRuntimeService), counting errors by operation."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from nodeagent.kubelet.metrics import KubeletMetrics

_OPERATIONS = {
    "version": "version", "runtime_ready": "status", "list_sandboxes": "list_podsandbox",
    "list_containers": "list_containers", "sandbox_status": "podsandbox_status",
    "container_status": "container_status", "run_sandbox": "run_podsandbox", "stop_sandbox": "stop_podsandbox",
    "remove_sandbox": "remove_podsandbox", "ensure_image": "pull_image", "create_container": "create_container",
    "start_container": "start_container", "stop_container": "stop_container",
    "remove_container": "remove_container", "exec_sync": "exec_sync", "reopen_container_log": "reopen_container_log", "exec_url": "exec",
    "attach_url": "attach", "port_forward_url": "port_forward",
}


class InstrumentedRuntime:
    def __init__(self, inner: Any, metrics: KubeletMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._inner, name)
        op = _OPERATIONS.get(name)
        if op is None:
            return fn
        return self._wrap(op, fn)

    def _wrap(self, op: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            start = time.monotonic()
            try:
                return await fn(*args, **kwargs)
            except Exception:
                self._metrics.runtime_operations_errors.labels(op).inc()
                raise
            finally:
                self._metrics.runtime_operations_duration.labels(op).observe(time.monotonic() - start)
        return call
