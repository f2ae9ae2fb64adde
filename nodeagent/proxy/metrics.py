"""Prometheus metrics with upstream kube-proxy's names (pkg/proxy/metrics/metrics.go), and the
health verdict served on /healthz and /livez (pkg/proxy/healthcheck/proxier_health.go): unhealthy when
a change has waited longer than the timeout without a successful sync, or no sync ever succeeded in
that time. /healthz also fails while this node is not eligible for load-balancer traffic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# upstream: exponential buckets from 1 ms, factor 2, 15 buckets
SYNC_BUCKETS = tuple(0.001 * 2**i for i in range(15))
# upstream network programming: 0.25 s steps up to 1 min, then coarser
NETPROG_BUCKETS = tuple([0.25 * i for i in range(1, 241, 4)] + [120.0, 180.0, 300.0, 600.0])
# the traffic_policy label values of kubeproxy_sync_proxy_rules_no_local_endpoints_total
TRAFFIC_POLICIES = ("internal", "external")


@dataclass(frozen=True)
class ChangeMetrics:
    """What one change tracker reports (tracker.ChangeReporter): every informer event it considered,
    and how many Services wait for the next sync."""

    total: Counter
    pending_gauge: Gauge

    def observed(self) -> None:
        self.total.inc()

    def pending(self, count: int) -> None:
        self.pending_gauge.set(count)


class ProxyMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sync_duration = Histogram(
            "kubeproxy_sync_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds",
            buckets=SYNC_BUCKETS, registry=r)
        self.full_sync_duration = Histogram(
            "kubeproxy_sync_full_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds for full resyncs",
            buckets=SYNC_BUCKETS, registry=r)
        self.partial_sync_duration = Histogram(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs", buckets=SYNC_BUCKETS, registry=r)
        self.network_programming = Histogram(
            "kubeproxy_network_programming_duration_seconds", "In Cluster Network Programming Latency in seconds",
            buckets=NETPROG_BUCKETS, registry=r)
        self.last_timestamp = Gauge(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds", "The last time proxy rules were successfully synced",
            registry=r)
        self.last_queued = Gauge(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued", registry=r)
        self.sync_failures = Counter(
            "kubeproxy_sync_proxy_rules_failures", "Number of failed proxy rule syncs", registry=r)
        # change trackers (upstream endpointschangetracker.go / servicechangetracker.go); Counters
        # get their _total suffix from prometheus_client
        self.endpoint_changes_pending = Gauge(
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending", "Pending proxy rules Endpoint changes", registry=r)
        self.endpoint_changes_total = Counter(
            "kubeproxy_sync_proxy_rules_endpoint_changes", "Cumulative proxy rules Endpoint changes", registry=r)
        self.service_changes_pending = Gauge(
            "kubeproxy_sync_proxy_rules_service_changes_pending", "Pending proxy rules Service changes", registry=r)
        self.service_changes_total = Counter(
            "kubeproxy_sync_proxy_rules_service_changes", "Cumulative proxy rules Service changes", registry=r)
        self.endpoint_changes = ChangeMetrics(self.endpoint_changes_total, self.endpoint_changes_pending)
        self.service_changes = ChangeMetrics(self.service_changes_total, self.service_changes_pending)
        # a Gauge despite its name, as upstream (recounted every sync); one series per policy,
        # exported as 0 from the start so that alerts on it have something to compare
        self.no_local_endpoints = Gauge(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints", ["traffic_policy"], registry=r)
        for policy in TRAFFIC_POLICIES:
            self.no_local_endpoints.labels(traffic_policy=policy).set(0)
        self.services = Gauge("kubeproxy_sync_proxy_rules_services", "Service ports programmed", registry=r)
        self.endpoints = Gauge("kubeproxy_sync_proxy_rules_endpoints", "Endpoints programmed", registry=r)
        # exposed as kubeproxy_proxy_healthz_total{code} / kubeproxy_proxy_livez_total{code}
        self.healthz = Counter("kubeproxy_proxy_healthz", "Cumulative proxy healthz HTTP status",
                               ["code"], registry=r)
        self.livez = Counter("kubeproxy_proxy_livez", "Cumulative proxy livez HTTP status", ["code"], registry=r)


# Cluster Autoscaler's taint on a node it is about to delete: load balancers should drain it
# (upstream healthcheck.ToBeDeletedTaint)
TO_BE_DELETED_TAINT = "ToBeDeletedByClusterAutoscaler"


class Health:
    """The /healthz verdict. `clock` is wall time (the timestamps are reported)."""

    def __init__(self, timeout: float, clock: Callable[[], float] = time.time) -> None:
        self.timeout = timeout
        self.clock = clock
        self.started = clock()
        self.last_updated: float | None = None
        self.oldest_pending: float | None = None
        # eligible while starting and until a Node event says otherwise (as upstream)
        self.node_eligible = True

    def sync_node(self, node: dict[str, Any] | None) -> None:
        """A node being deleted (deletionTimestamp set, the autoscaler's taint, or gone) is not
        eligible: /healthz then fails so that load balancers stop sending it new connections."""
        if node is None or (node.get("metadata") or {}).get("deletionTimestamp"):
            self.node_eligible = False
            return
        taints = (node.get("spec") or {}).get("taints") or []
        self.node_eligible = not any(t.get("key") == TO_BE_DELETED_TAINT for t in taints)

    def queued(self) -> None:
        if self.oldest_pending is None:
            self.oldest_pending = self.clock()

    def updated(self) -> None:
        self.last_updated = self.clock()
        self.oldest_pending = None

    def healthy(self) -> bool:
        now = self.clock()
        if self.last_updated is None:
            return now - self.started <= self.timeout
        if self.oldest_pending is not None and now - self.oldest_pending > self.timeout:
            return False
        return True
