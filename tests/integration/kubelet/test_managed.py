"""`nodeagent kubelet` with its own managed containerd (no --container-runtime-endpoint), as the
local cluster runs it: pods run, and a kubelet killed with -9 comes back, adopts the containerd it
left running and its pods, restarting nothing."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from nodeagent.client import Client
from nodeagent.machinery.kinds import PODS
from tests.helpers.kubelet_node import KubeletNode, start_managed_kubelet_node, stop_kubelet_node, wait_until

pytestmark = pytest.mark.root  # containerd, network namespaces


@pytest.fixture(scope="module")
def kn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeletNode]:
    """Overrides conftest's node: this module's kubelet starts its own containerd (conftest's
    `client` fixture then talks to this node's apiserver)."""
    node = start_managed_kubelet_node(tmp_path_factory.mktemp("klm"))
    try:
        yield node
    finally:
        stop_kubelet_node(node)


async def _ready_pod(client: Client, name: str) -> dict[str, Any] | None:
    p = await client.get(PODS, name, namespace="default")
    ok = any(c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions") or [])
    return p if ok else None


async def test_managed_containerd_survives_kubelet_kill9(kn: KubeletNode, client: Client) -> None:
    from nodeagent.runtime.cri import RuntimeClient

    name = f"m-{secrets.token_hex(3)}"
    await client.create(PODS, {"metadata": {"name": name, "namespace": "default"},
                               "spec": {"nodeName": kn.name, "terminationGracePeriodSeconds": 1,
                                        "containers": [{"name": "c", "image": "nodeagent.local/toolbox:1",
                                                        "command": ["sleep", "3600"]}]}})
    before = await wait_until(lambda: _ready_pod(client, name), timeout=120, what="pod Ready", kn=kn)
    assert before["status"]["podIP"].startswith("10.198.0.")
    cid = before["status"]["containerStatuses"][0]["containerID"]

    kn.kill9()
    kn.start_kubelet()
    async with RuntimeClient(kn.endpoint) as rt:
        # the restarted kubelet adopted the running containerd: same pod, same container, one sandbox
        async def re_reported() -> bool:
            return "adopting the running managed containerd" in kn.log_tail(20000)
        await wait_until(re_reported, what="containerd adopted", kn=kn)
        uid = before["metadata"]["uid"]
        # watch the runtime through the new kubelet's first syncs: nothing is recreated or restarted
        import asyncio
        for _ in range(10):
            sandboxes = await rt.list_pod_sandbox(label_selector={"io.kubernetes.pod.uid": uid})
            containers = await rt.list_containers(label_selector={"io.kubernetes.pod.uid": uid})
            assert len(sandboxes) == 1
            assert [f"containerd://{c.id}" for c in containers] == [cid]
            await asyncio.sleep(0.3)
    after = await wait_until(lambda: _ready_pod(client, name), what="pod Ready after restart", kn=kn)
    assert after["status"]["containerStatuses"][0]["containerID"] == cid
    assert after["status"]["containerStatuses"][0]["restartCount"] == 0
    await client.delete(PODS, name, namespace="default")
