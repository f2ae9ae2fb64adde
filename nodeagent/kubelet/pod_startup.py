"""Where a pod's start-up time goes, step by step (upstream pod_startup_latency_tracker.go).

The tracker follows each pod from the moment the kubelet first sees it until its own status
write, showing every container running, comes back on the kubelet's watch. Between those points
the sync steps report how long each of their steps took the first time the pod started:

    queued   first seen -> RunPodSandbox called (the start slots, volumes)
    sandbox  RunPodSandbox (runc/crun create + start of the pause container, CNI ADD inside it)
    image    the image check (ImageStatus; a pull when the image is missing)
    create   CreateContainer
    start    StartContainer
    status   the containers started -> the Running status accepted by the apiserver
    watch    that status accepted -> seen on the kubelet's own watch of its pods

Each step goes into nodeagent_kubelet_pod_start_phase_duration_seconds{phase}; the whole goes
into upstream's kubelet_pod_start_duration_seconds (first seen -> Running),
kubelet_pod_start_sli_duration_seconds (creationTimestamp -> Running seen on the watch, less
image pulls) and kubelet_pod_start_total_duration_seconds (the same with the pulls). A pod's
steps are counted once: a later restart of a container is not a pod start.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from nodeagent.clock import Clock
from nodeagent.kubelet.metrics import KubeletMetrics

log = logging.getLogger(__name__)

PHASES = ("queued", "sandbox", "image", "create", "start", "status", "watch")
_MAX_TRACKED = 4096  # pods that never start (deleted while pending) must not grow the table forever


def _parse_time(ts: str | None) -> float | None:
    if not ts:
        return None
    try:
        return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def all_containers_running(pod: dict[str, Any]) -> bool:
    """upstream hasPodStartedSLO: every container status is running with a start time."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    want = len((pod.get("spec") or {}).get("containers") or [])
    return bool(statuses) and len(statuses) >= want and all(
        ((s.get("state") or {}).get("running") or {}).get("startedAt") for s in statuses)


@dataclass
class _PodStart:
    first_seen: float  # monotonic
    created: float | None  # creationTimestamp, seconds since the epoch (1 s resolution)
    host_network: bool
    phases: dict[str, float] = field(default_factory=dict)
    pulling: float = 0.0  # seconds spent pulling images, left out of the SLI as upstream
    containers_started: float | None = None  # monotonic
    status_written: float | None = None  # monotonic
    watched_running: float | None = None  # monotonic
    watched_wall: float = 0.0  # the same moment on the wall clock, against creationTimestamp


class PodStartupTracker:
    def __init__(self, metrics: KubeletMetrics, clock: Clock, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.clock = clock
        self.monotonic = monotonic
        self._pods: dict[str, _PodStart] = {}
        self._done: set[str] = set()  # uids whose start was recorded (never tracked again)
        self._first_network_pod_recorded = False

    # ------------------------------------------------------------------ the watch
    def observe_on_watch(self, pod: dict[str, Any]) -> None:
        """Every add/update of a pod from the kubelet's informer (upstream ObservedPodOnWatch)."""
        md = pod.get("metadata") or {}
        uid = md.get("uid", "")
        if not uid or uid in self._done or md.get("deletionTimestamp"):
            return
        running = all_containers_running(pod)
        st = self._pods.get(uid)
        if st is None:
            if running:  # already running when first seen (a restarted kubelet): not a start we saw
                self._done.add(uid)
                return
            if len(self._pods) >= _MAX_TRACKED:
                self._pods.pop(next(iter(self._pods)))
            st = self._pods[uid] = _PodStart(self.monotonic(), _parse_time(md.get("creationTimestamp")),
                                             bool((pod.get("spec") or {}).get("hostNetwork")))
        if running and st.watched_running is None:
            st.watched_running, st.watched_wall = self.monotonic(), self.clock.now()
            if st.status_written is not None:
                self._record(uid, st)

    def _record(self, uid: str, st: _PodStart) -> None:
        """The status is written and seen on the watch (in either order: the watch event may be
        handled before the PATCH's response)."""
        assert st.status_written is not None and st.watched_running is not None
        self._phase(st, "watch", st.watched_running - st.status_written)
        for phase, seconds in st.phases.items():
            self.metrics.pod_start_phase_duration.labels(phase).observe(seconds)
        if st.created is not None:
            # The wall clock against the apiserver's creationTimestamp, as upstream.
            total = max(0.0, st.watched_wall - st.created)
            first_with_network = not st.host_network and not self._first_network_pod_recorded
            self._first_network_pod_recorded |= not st.host_network
            label = "true" if first_with_network else "false"
            self.metrics.pod_start_total_duration.labels(label).observe(total)
            self.metrics.pod_start_sli_duration.labels(label).observe(max(0.0, total - st.pulling))
        log.info("observed pod startup duration pod_uid=%s %s", uid,
                 " ".join(f"{p}={st.phases[p]:.3f}" for p in PHASES if p in st.phases))
        self._pods.pop(uid, None)
        self._done.add(uid)

    # ------------------------------------------------------------------ the sync steps
    def tracking(self, uid: str) -> bool:
        return uid in self._pods

    def _phase(self, st: _PodStart, phase: str, seconds: float) -> None:
        st.phases[phase] = st.phases.get(phase, 0.0) + max(0.0, seconds)

    def sandbox_starting(self, uid: str) -> None:
        st = self._pods.get(uid)
        if st is not None and "queued" not in st.phases:
            self._phase(st, "queued", self.monotonic() - st.first_seen)

    @contextmanager
    def step(self, uid: str, phase: str) -> Iterator[None]:
        """Time one step of the pod's start (only while the pod has not started yet)."""
        st = self._pods.get(uid)
        t0 = self.monotonic()
        try:
            yield
        finally:
            if st is not None and st.status_written is None:
                self._phase(st, phase, self.monotonic() - t0)
                if phase == "start":
                    st.containers_started = self.monotonic()

    def pulled(self, uid: str, seconds: float) -> None:
        st = self._pods.get(uid)
        if st is not None:
            st.pulling += seconds

    # ------------------------------------------------------------------ the status manager
    def status_written(self, uid: str, status: dict[str, Any], spec: dict[str, Any]) -> None:
        """The apiserver accepted a status of the pod: the first that shows it running ends the
        kubelet's part (kubelet_pod_start_duration_seconds, as upstream: first seen -> Running)."""
        st = self._pods.get(uid)
        if st is None or st.status_written is not None:
            return
        if status.get("phase") != "Running" or not all_containers_running({"status": status, "spec": spec}):
            return
        now = self.monotonic()
        st.status_written = now
        if st.containers_started is not None:
            self._phase(st, "status", now - st.containers_started)
        self.metrics.pod_start_duration.observe(now - st.first_seen)
        if st.watched_running is not None:
            self._record(uid, st)

    def forget(self, uid: str) -> None:
        self._pods.pop(uid, None)
        self._done.discard(uid)
