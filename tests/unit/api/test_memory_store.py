"""MemoryStore keeps the Store protocol's semantics: the engine-independent tests of test_store.py,
run again against it (the unit tests' fake client stands on it)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from nodeagent.api.memory_store import MemoryStore
from tests.unit.api.test_store import (  # noqa: F401  (collected here again, with the store below)
    test_compaction_expires_old_revisions,
    test_every_write_gets_the_next_global_revision,
    test_list_is_sorted_and_scoped_by_namespace,
    test_optimistic_concurrency,
    test_watch_replays_history_then_streams_live,
)


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = MemoryStore()
    await s.start()
    try:
        yield s
    finally:
        await s.close()
