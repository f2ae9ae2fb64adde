"""The PLEG: relist diffs into lifecycle events, cache refresh and health (pleg/generic_test.go)."""

from __future__ import annotations

from typing import Any

from nodeagent.clock import FakeClock
from nodeagent.kubelet.model import ContainerOptions, SandboxOptions
from nodeagent.kubelet.pleg import EventType, GenericPLEG, PodLifecycleEvent
from tests.helpers.kubelet_fake_cri import FakeRuntime


def _pod(uid: str) -> dict[str, Any]:
    return {"metadata": {"name": f"p-{uid}", "namespace": "default", "uid": uid},
            "spec": {"containers": [{"name": "c", "image": "img"}]}}


async def _run_pod(rt: FakeRuntime, uid: str) -> tuple[str, str]:
    pod = _pod(uid)
    sopts = SandboxOptions(attempt=0)
    sid = await rt.run_sandbox(pod, sopts)
    cid = await rt.create_container(sid, pod, pod["spec"]["containers"][0],
                                    ContainerOptions(attempt=0, env=[], mounts=[]), sopts)
    await rt.start_container(cid)
    return sid, cid


async def test_relist_reports_started_died_removed() -> None:
    clock = FakeClock()
    rt = FakeRuntime(clock)
    seen: list[PodLifecycleEvent] = []
    pleg = GenericPLEG(rt, clock, on_event=seen.append)
    assert await pleg.relist() == []

    sid, cid = await _run_pod(rt, "u1")
    events = await pleg.relist()
    assert PodLifecycleEvent("u1", EventType.CONTAINER_STARTED, cid) in events
    assert PodLifecycleEvent("u1", EventType.CONTAINER_STARTED, sid) in events
    cached = pleg.cached("u1")
    assert cached is not None and cached.latest("c") is not None

    assert await pleg.relist() == []  # nothing changed: no events

    clock.advance(5)
    rt.exit(cid, 7)
    events = await pleg.relist()
    assert events == [PodLifecycleEvent("u1", EventType.CONTAINER_DIED, cid)]
    assert seen[-1] == events[0]
    latest = pleg.cached("u1").latest("c")  # type: ignore[union-attr]
    assert latest is not None and latest.exit_code == 7 and latest.finished_at == clock.now()

    await rt.remove_container(cid)
    events = await pleg.relist()
    assert events == [PodLifecycleEvent("u1", EventType.CONTAINER_REMOVED, cid)]
    assert seen[-1].type == EventType.CONTAINER_DIED  # removals are not handed on


async def test_running_container_that_vanishes_is_died_and_removed() -> None:
    clock = FakeClock()
    rt = FakeRuntime(clock)
    pleg = GenericPLEG(rt, clock)
    sid, cid = await _run_pod(rt, "u2")
    await pleg.relist()
    await rt.remove_sandbox(sid)  # takes the container with it
    events = await pleg.relist()
    assert PodLifecycleEvent("u2", EventType.CONTAINER_DIED, cid) in events
    assert PodLifecycleEvent("u2", EventType.CONTAINER_REMOVED, cid) in events
    assert "u2" not in pleg.known_uids
    assert pleg.cached("u2") is None  # the pod's record and cache are gone


async def test_only_changed_pods_are_refreshed() -> None:
    clock = FakeClock()
    rt = FakeRuntime(clock)
    pleg = GenericPLEG(rt, clock)
    _, c1 = await _run_pod(rt, "a")
    await _run_pod(rt, "b")
    await pleg.relist()
    rt.calls.clear()
    rt.exit(c1, 1)
    await pleg.relist()
    assert rt.calls_of("ContainerStatus") == [c1]


async def test_health_follows_relist_time() -> None:
    clock = FakeClock()
    rt = FakeRuntime(clock)
    pleg = GenericPLEG(rt, clock, relist_threshold=180)
    assert pleg.healthy()[0]
    await pleg.relist()
    clock.advance(179)
    assert pleg.healthy()[0]
    clock.advance(2)
    ok, msg = pleg.healthy()
    assert not ok and "pleg was last seen active" in msg
    await pleg.relist()
    assert pleg.healthy()[0]


async def test_relist_reports_duration() -> None:
    clock = FakeClock()
    rt = FakeRuntime(clock)
    durations: list[float] = []
    pleg = GenericPLEG(rt, clock, on_relist=durations.append)
    await pleg.relist()
    await pleg.relist()
    assert len(durations) == 2 and all(d >= 0 for d in durations)
    assert pleg.last_relist == clock.now()


async def test_an_older_read_never_replaces_a_newer_one() -> None:
    import asyncio

    clock = FakeClock()
    rt = FakeRuntime(clock)
    pleg = GenericPLEG(rt, clock)
    gate = asyncio.Event()
    real_list = rt.list_sandboxes

    async def slow_list(pod_uid: str | None = None) -> list:  # type: ignore[type-arg]
        out = await real_list(pod_uid)
        await gate.wait()  # this read saw the runtime before the pod existed
        return out

    rt.list_sandboxes = slow_list  # type: ignore[method-assign]
    old_read = asyncio.create_task(pleg.refresh("u3"))
    await asyncio.sleep(0)
    rt.list_sandboxes = real_list  # type: ignore[method-assign]
    await _run_pod(rt, "u3")
    fresh = await pleg.refresh("u3")
    assert fresh.sandboxes
    gate.set()
    stale = await old_read
    assert not stale.sandboxes
    cached = pleg.cached("u3")
    assert cached is not None and cached.sandboxes  # the stale read was not cached over the fresh one
