"""Time every runtime call into kubelet_runtime_operations_duration_seconds (upstream's
instrumentedRuntimeService), counting errors by operation; RunPodSandbox also into
kubelet_run_podsandbox_duration_seconds by its runtime handler (RuntimeClass.handler)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from nodeagent.kubelet.metrics import KubeletMetrics

_OPERATIONS = {
    "version": "version", "runtime_ready": "status", "list_sandboxes": "list_podsandbox",
    "list_containers": "list_containers", "sandbox_status": "podsandbox_status",
    "container_status": "container_status", "run_sandbox": "run_podsandbox", "stop_sandbox": "stop_podsandbox",
    "remove_sandbox": "remove_podsandbox", "ensure_image": "image_status", "create_container": "create_container",
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
            label = op
            try:
                result = await fn(*args, **kwargs)
                if op == "image_status" and result[1]:
                    label = "pull_image"  # ensure_image pulled: most of its time was the pull
                return result
            except Exception:
                self._metrics.runtime_operations_errors.labels(op).inc()
                if op == "run_podsandbox":
                    self._metrics.run_podsandbox_errors.labels(_handler(args, kwargs)).inc()
                raise
            finally:
                took = time.monotonic() - start
                self._metrics.runtime_operations_duration.labels(label).observe(took)
                if op == "run_podsandbox":
                    self._metrics.run_podsandbox_duration.labels(_handler(args, kwargs)).observe(took)
        return call


def _handler(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """run_sandbox(pod, opts): the runtime handler the sandbox was asked for."""
    opts = kwargs.get("opts", args[1] if len(args) > 1 else None)
    return str(getattr(opts, "runtime_handler", "") or "")
