"""The kubelet's Prometheus metrics, with upstream's names (pkg/kubelet/metrics/metrics.go)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Upstream's buckets for pod start (seconds): the SLO is about the tail, so fine buckets near 1-5 s.
_POD_START_BUCKETS = (0.5, 1, 2, 3, 4, 5, 6, 8, 10, 20, 30, 45, 60, 120, 180, 240, 300, 360, 480, 600,
                      900, 1200, 1800, 2700, 3600)
_OP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)  # upstream's metrics.DefBuckets
# upstream kubelet_runtime_operations_duration_seconds: metrics.ExponentialBuckets(.005, 2.5, 14)
_RUNTIME_OP_BUCKETS = tuple(round(0.005 * 2.5 ** i, 6) for i in range(14))
_STATUS_SYNC_BUCKETS = (0.010, 0.050, 0.100, 0.500, 1, 5, 10, 20, 30, 45, 60)  # upstream's
# Ours (no upstream metric splits a pod's start): x1.5 steps from 5 ms to ~25 s, fine enough that a
# quantile read from the buckets is within a quarter of the true value.
_PHASE_BUCKETS = tuple(round(0.005 * 1.5 ** i, 6) for i in range(22))


class KubeletMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.pod_start_duration = Histogram(
            "kubelet_pod_start_duration_seconds",
            "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
            buckets=_POD_START_BUCKETS, registry=r)
        self.pod_start_sli_duration = Histogram(
            "kubelet_pod_start_sli_duration_seconds",
            "Duration in seconds to start a pod, excluding time to pull images and run init containers, measured "
            "from pod creation timestamp to when all its containers are reported as started and observed via watch",
            ["first_with_network"], buckets=_POD_START_BUCKETS, registry=r)
        self.pod_start_total_duration = Histogram(
            "kubelet_pod_start_total_duration_seconds",
            "Duration in seconds to start a pod since creation, including time to pull images and run init "
            "containers, measured from pod creation timestamp to when all its containers are reported as started "
            "and observed via watch", ["first_with_network"], buckets=_POD_START_BUCKETS, registry=r)
        self.pod_start_phase_duration = Histogram(
            "nodeagent_kubelet_pod_start_phase_duration_seconds",
            "Seconds each step of a pod's first start took (queued, sandbox, image, create, start, status, watch; "
            "nodeagent.kubelet.pod_startup)", ["phase"], buckets=_PHASE_BUCKETS, registry=r)
        self.pod_status_sync_duration = Histogram(
            "kubelet_pod_status_sync_duration_seconds",
            "Duration in seconds to sync a pod status update. Measures time from detection of a change to pod "
            "status until the API is successfully updated for that pod, even if multiple intevening changes to pod "
            "status occur.", buckets=_STATUS_SYNC_BUCKETS, registry=r)
        self.run_podsandbox_duration = Histogram(
            "kubelet_run_podsandbox_duration_seconds",
            "Duration in seconds of the run_podsandbox operations. Broken down by RuntimeClass.Handler.",
            ["runtime_handler"], buckets=_OP_BUCKETS, registry=r)
        self.run_podsandbox_errors = Counter(
            "kubelet_run_podsandbox_errors", "Cumulative number of the run_podsandbox operation errors by "
            "RuntimeClass.Handler.", ["runtime_handler"], registry=r)
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
            ["operation_type"], buckets=_RUNTIME_OP_BUCKETS, registry=r)
        self.runtime_operations_errors = Gauge(
            "kubelet_runtime_operations_errors_total",
            "Cumulative number of runtime operation errors by operation type.", ["operation_type"], registry=r)
        self.node_name = Gauge("kubelet_node_name", "The node's name. The count is always 1.", ["node"], registry=r)
