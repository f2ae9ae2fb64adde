"""Prometheus metrics with upstream names (kube-apiserver /metrics).

A private CollectorRegistry per server so tests can run several servers in one process.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10,
                    15, 20, 30, 45, 60)
_STORAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "apiserver_request_total",
            "Counter of apiserver requests broken out for each verb, group, version, resource, scope, component, "
            "and HTTP response code.",
            ["verb", "group", "version", "resource", "subresource", "scope", "component", "code"], registry=r)
        self.latency = Histogram(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, group, version, resource, subresource, "
            "scope and component.",
            ["verb", "group", "version", "resource", "subresource", "scope", "component"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.watch_events = Counter(
            "apiserver_watch_events_total", "Number of events sent in watch clients",
            ["group", "version", "kind"], registry=r)
        self.watchers = Gauge(
            "apiserver_registered_watchers", "Number of currently registered watchers for a given resources",
            ["group", "version", "kind"], registry=r)
        self.storage_latency = Histogram(
            "etcd_request_duration_seconds",
            "Storage request latency in seconds for each operation and object type (SQLite back end).",
            ["operation", "type"], buckets=_STORAGE_BUCKETS, registry=r)
        self.storage_objects = Gauge(
            "apiserver_storage_objects", "Number of stored objects at the time of last check split by kind.",
            ["resource"], registry=r)
        self.storage_revision = Gauge(
            "apiserver_storage_revision", "The newest revision of the store (the resourceVersion counter).",
            registry=r)
        self.storage_compacted = Gauge(
            "apiserver_storage_compacted_revision", "Revisions at or below this were compacted.", registry=r)

    def observe_storage(self, op: str, seconds: float) -> None:
        self.storage_latency.labels(op, "sqlite").observe(seconds)

    def render(self, refresh: Callable[[], None] | None = None) -> bytes:
        if refresh:
            refresh()
        return generate_latest(self.registry)
