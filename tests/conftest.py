"""Fixtures shared by every test: gating on the `root` marker, per-test network namespaces, a real
apiserver.

Root tests build their own "nodes" as network namespaces and remove them at teardown, also when the
test fails; nothing is left in the root namespace.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Iterator

import pytest

from tests.helpers.apiserver import ApiServerProcess, start_apiserver
from tests.helpers.netns import delete_netns, make_netns

IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests are gated by what they need, not by their folder: a test marked `root` (network
    namespaces, iptables, containerd, mounts) is skipped for other users; one that only starts an
    apiserver or controllers process runs for everyone."""
    if IS_ROOT:
        return
    skip_root = pytest.mark.skip(reason="needs root (network namespaces, iptables, containerd)")
    for item in items:
        if item.get_closest_marker("root") is not None:
            item.add_marker(skip_root)


@pytest.fixture
def netns_factory() -> Iterator[Callable[[str], str]]:
    """Make network namespaces named na-<prefix>-<random>; all are deleted at teardown."""
    made: list[str] = []

    def factory(prefix: str = "t") -> str:
        name = f"na-{prefix}-{secrets.token_hex(3)}"
        make_netns(name)
        made.append(name)
        return name

    yield factory
    for name in reversed(made):
        delete_netns(name)


@pytest.fixture
def netns(netns_factory: Callable[[str], str]) -> str:
    return netns_factory("t")


@pytest.fixture
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerProcess]:
    """A real `nodeagent apiserver` on a free loopback port, with an admin kubeconfig."""
    server = start_apiserver(tmp_path_factory.mktemp("apiserver"))
    try:
        yield server
    finally:
        server.stop()


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
