"""Fixtures shared by the apiserver's unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nodeagent.api.sqlite_store import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A fresh sqlite store (no background compaction), closed after the test."""
    s = SqliteStore(tmp_path / "state.db", compact_interval=0)
    await s.start()
    try:
        yield s
    finally:
        await s.close()
