"""The kubelet's Prometheus metrics, with upstream's names (pkg/kubelet/metrics/metrics.go)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, Histogram

# Upstream's buckets for pod start (seconds): the SLO is about the tail, so fine buckets near 1-5 s.
_POD_START_BUCKETS = (0.5, 1, 2, 3, 4, 5, 6, 8, 10, 20, 30, 45, 60, 120, 180, 240, 300, 360, 480, 600,
                      900, 1200, 1800, 2700, 3600)
_OP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class KubeletMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.pod_start_duration = Histogram(
            "kubelet_pod_start_duration_seconds",
            "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
            buckets=_POD_START_BUCKETS, registry=r)
        self.running_pods = Gauge("kubelet_running_pods", "Number of pods that have a running pod sandbox",
                                  registry=r)
        self.running_containers = Gauge("kubelet_running_containers", "Number of containers currently running",
                                        ["container_state"], registry=r)
        self.pleg_relist_duration = Histogram(
            "kubelet_pleg_relist_duration_seconds", "Duration in seconds for relisting pods in PLEG.",
            buckets=_OP_BUCKETS, registry=r)
        self.pleg_last_seen = Gauge(
            "kubelet_pleg_last_seen_seconds",
            "Timestamp in seconds when PLEG was last seen active.", registry=r)
        self.runtime_operations_duration = Histogram(
            "kubelet_runtime_operations_duration_seconds",
            "Duration in seconds of runtime operations. Broken down by operation type.",
            ["operation_type"], buckets=_OP_BUCKETS, registry=r)
        self.runtime_operations_errors = Gauge(
            "kubelet_runtime_operations_errors_total",
            "Cumulative number of runtime operation errors by operation type.", ["operation_type"], registry=r)
        self.node_name = Gauge("kubelet_node_name", "The node's name. The count is always 1.", ["node"], registry=r)
