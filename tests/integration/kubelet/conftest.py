"""One apiserver, one node (containerd in a netns) and one kubelet per test module."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from nodeagent.client import Client, ClientConfig
from tests.helpers.kubelet_node import KubeletNode, start_kubelet_node, stop_kubelet_node


@pytest.fixture(scope="module")
def kn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeletNode]:
    node = start_kubelet_node(tmp_path_factory.mktemp("kl"))
    try:
        yield node
    finally:
        stop_kubelet_node(node)


@pytest.fixture
async def client(kn: KubeletNode) -> AsyncIterator[Client]:
    async with Client(ClientConfig.from_kubeconfig(kn.api.kubeconfig)) as c:
        yield c
