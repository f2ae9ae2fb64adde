"""SqliteStore semantics: revisions, optimistic concurrency, watch replay, compaction, restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from nodeagent.api.sqlite_store import SqliteStore
from nodeagent.api.store import Event, Expired, KeyExists, KeyNotFound, RevisionConflict


def pod(name: str, **labels: str) -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": "default", "labels": labels}}


async def test_every_write_gets_the_next_global_revision(store: SqliteStore) -> None:
    a = await store.create("pods", "default", "a", pod("a"))
    b = await store.create("configmaps", "default", "b", pod("b"))
    a2 = await store.update("pods", "default", "a", pod("a", x="1"), a.rev)
    d = await store.delete("configmaps", "default", "b", None)
    assert [a.rev, b.rev, a2.rev, d.rev] == [1, 2, 3, 4]
    assert a2.obj["metadata"]["resourceVersion"] == "3"
    assert d.obj["metadata"]["resourceVersion"] == "4"
    assert await store.get("configmaps", "default", "b") is None


async def test_optimistic_concurrency(store: SqliteStore) -> None:
    a = await store.create("pods", "default", "a", pod("a"))
    with pytest.raises(KeyExists):
        await store.create("pods", "default", "a", pod("a"))
    await store.update("pods", "default", "a", pod("a", v="1"), a.rev)
    with pytest.raises(RevisionConflict) as err:
        await store.update("pods", "default", "a", pod("a", v="2"), a.rev)
    assert err.value.current == a.rev + 1
    with pytest.raises(KeyNotFound):
        await store.update("pods", "default", "zz", pod("zz"), 1)
    with pytest.raises(RevisionConflict):
        await store.delete("pods", "default", "a", a.rev)


async def test_list_is_sorted_and_scoped_by_namespace(store: SqliteStore) -> None:
    for ns, name in (("b", "z"), ("a", "y"), ("a", "x")):
        await store.create("pods", ns, name, {"metadata": {"name": name, "namespace": ns}})
    all_items, rev = await store.list("pods", None)
    assert [(e.namespace, e.name) for e in all_items] == [("a", "x"), ("a", "y"), ("b", "z")]
    assert rev == 3
    only_a, _ = await store.list("pods", "a")
    assert [e.name for e in only_a] == ["x", "y"]


async def _next(q: asyncio.Queue[Event | None]) -> Event:
    ev = await asyncio.wait_for(q.get(), 5)
    assert ev is not None
    return ev


async def test_watch_replays_history_then_streams_live(store: SqliteStore) -> None:
    a = await store.create("pods", "default", "a", pod("a"))
    await store.update("pods", "default", "a", pod("a", v="1"), a.rev)
    await store.create("configmaps", "default", "c", pod("c"))  # other resource: not in this watch
    stream = store.watch("pods", a.rev)  # replay strictly after rev 1
    first = await _next(stream.queue)
    assert (first.type, first.rev) == ("MODIFIED", 2)
    assert first.prev is not None and first.prev["metadata"]["resourceVersion"] == "1"
    await store.delete("pods", "default", "a", None)
    gone = await _next(stream.queue)
    assert (gone.type, gone.rev) == ("DELETED", 4)
    assert stream.queue.empty()
    stream.close()


async def test_compaction_expires_old_revisions(store: SqliteStore) -> None:
    a = await store.create("pods", "default", "a", pod("a"))
    for i in range(5):
        a = await store.update("pods", "default", "a", pod("a", v=str(i)), a.rev)
    await store.compact(4)
    assert store.compacted_revision == 4
    with pytest.raises(Expired):
        store.watch("pods", 2)
    events = store.history("pods", 4)
    assert [e.rev for e in events] == [5, 6]
    # The object itself survives compaction.
    cur = await store.get("pods", "default", "a")
    assert cur is not None and cur.rev == 6


async def test_state_and_history_survive_restart(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "state.db", compact_interval=0)
    await s.start()
    a = await s.create("pods", "default", "a", pod("a"))
    await s.update("pods", "default", "a", pod("a", v="1"), a.rev)
    await s.create("pods", "default", "b", pod("b"))
    await s.delete("pods", "default", "b", None)
    await s.close()

    s2 = SqliteStore(tmp_path / "state.db", compact_interval=0)
    await s2.start()
    try:
        assert s2.revision == 4
        items, _ = await s2.list("pods", None)
        assert [(e.name, e.rev) for e in items] == [("a", 2)]
        types = [(e.type, e.rev) for e in s2.history("pods", 0)]
        assert types == [("ADDED", 1), ("MODIFIED", 2), ("ADDED", 3), ("DELETED", 4)]
        nxt = await s2.create("pods", "default", "c", pod("c"))
        assert nxt.rev == 5
    finally:
        await s2.close()


async def test_slow_watcher_is_cut_off_not_the_writer(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "state.db", compact_interval=0, max_watch_backlog=3)
    await s.start()
    try:
        stream = s.watch("pods", 0)
        for i in range(6):
            await s.create("pods", "default", f"p{i}", pod(f"p{i}"))
        got = []
        while True:
            ev = await asyncio.wait_for(stream.queue.get(), 5)
            if ev is None:
                break
            got.append(ev.rev)
        assert got == [1, 2, 3] and stream.closed
    finally:
        await s.close()


async def test_a_second_store_on_the_same_file_is_refused(store: SqliteStore) -> None:
    other = SqliteStore(store.path, compact_interval=0)
    with pytest.raises(OSError, match="in use by another apiserver"):
        await other.start()
