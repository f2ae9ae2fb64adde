"""Fixtures shared by the proxy's root tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.helpers import proxy_topology as topo_mod
from tests.helpers.proxy_topology import Topology


@pytest.fixture
def topo(netns_factory: Callable[[str], str]) -> Iterator[Topology]:
    """A client, a node and three backend pods, each in its own namespace (proxy_topology.build),
    all removed after the test."""
    t = topo_mod.build(netns_factory, n_pods=3)
    try:
        yield t
    finally:
        t.stop()
