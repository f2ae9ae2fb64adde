"""One managed containerd per test module (starting one costs seconds), in its own netns."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.runtime_node import Node, start_node, stop_node


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    # The module-scoped netns cannot come from the function-scoped netns_factory; it is made and
    # deleted with the same helpers (tests/helpers/netns.py), named na-rt-<random>.
    n = start_node(tmp_path_factory.mktemp("rt"))
    try:
        yield n
    finally:
        stop_node(n)
