"""SyncPod over the fake CRI: how often one sync lists the runtime."""

from __future__ import annotations

from typing import Any

import pytest

from nodeagent.kubelet.pod_workers import PodWorker
from tests.helpers.kubelet_env import Harness, make_harness, make_pod, with_image

OLD, NEW = "nodeagent.local/toolbox:1", "nodeagent.local/toolbox:2"


def lists(h: Harness) -> tuple[int, int]:
    """(ListPodSandbox, ListContainers) calls since the last clear."""
    return len(h.runtime.calls_of("ListPodSandbox")), len(h.runtime.calls_of("ListContainers"))


async def test_a_sync_lists_the_runtime_once_and_once_more_after_changes(tmp_path: Any) -> None:
    # The kubelet is not started: no PLEG relists, no informer, only the syncs this test runs.
    h = make_harness(str(tmp_path))
    pod = await h.create(make_pod("counted", [{"name": "a", "image": OLD}, {"name": "b", "image": OLD}]))
    w = PodWorker(pod["metadata"]["uid"], pod)

    h.runtime.calls.clear()
    await h.kubelet.sync(w)  # sandbox and two containers; a new pod the runtime does not hold: no read first
    assert lists(h) == (1, 1)
    assert len(h.runtime.calls_of("RunPodSandbox")) == 1 and len(h.runtime.calls_of("StartContainer")) == 2

    h.runtime.calls.clear()
    await h.kubelet.sync(w)  # nothing to do: the read before the plan only
    assert lists(h) == (1, 1)
    assert not h.runtime.calls_of("CreateContainer") and not h.runtime.calls_of("StopContainer")

    await h.kubelet.pleg.refresh(w.uid)  # the PLEG read the pod after that sync (a relist saw a change)
    h.runtime.calls.clear()
    await h.kubelet.sync(w)  # the sync it wakes takes that read: no call at all
    assert lists(h) == (0, 0) and not h.runtime.calls_of("ContainerStatus")

    h.runtime.calls.clear()
    w.pod = with_image(pod, "a", NEW)
    await h.kubelet.sync(w)  # kill and restart a: its stop is re-read by id, not relisted
    assert lists(h) == (2, 2)
    assert h.runtime.calls_of("CreateContainer") == ["a"] and len(h.runtime.calls_of("StopContainer")) == 1

    uid = w.uid
    a = h.runtime.running(uid, "a")
    assert a is not None and a.image == NEW and a.attempt == 1
    b = h.runtime.running(uid, "b")
    assert b is not None and b.image == OLD and b.attempt == 0


async def test_a_failed_sandbox_lists_nothing_then_rereads(tmp_path: Any) -> None:
    h = make_harness(str(tmp_path))
    pod = await h.create(make_pod("sbfail-count"))
    w = PodWorker(pod["metadata"]["uid"], pod)
    h.runtime.fail_next["RunPodSandbox"] = RuntimeError("no IP addresses available")
    h.runtime.calls.clear()
    with pytest.raises(RuntimeError):
        await h.kubelet.sync(w)
    assert lists(h) == (0, 0)  # new to the kubelet and the runtime: nothing to read, nothing changed
    h.runtime.calls.clear()
    await h.kubelet.sync(w)  # the retry reads the runtime (the failed attempt may have left a sandbox)
    assert lists(h) == (2, 2) and len(h.runtime.calls_of("RunPodSandbox")) == 1
