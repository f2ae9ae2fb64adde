"""Node registration, status and lease over FakeClient; the kubelet endpoint's authentication,
logs, one-shot exec and attach's checks over the fake runtime."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from nodeagent.api.auth import policy
from nodeagent.api.auth.attributes import Attributes
from nodeagent.api.auth.authorizer import Authorizer
from nodeagent.api.auth.user import UserInfo
from nodeagent.clock import FakeClock
from nodeagent.kubelet.config import KubeletConfig
from nodeagent.kubelet.model import ExecResult
from nodeagent.kubelet.node import NodeStatusManager
from nodeagent.kubelet.server import KubeletServer
from nodeagent.machinery.kinds import LEASES, NODES
from tests.helpers.fake_client import FakeClient
from tests.helpers.kubelet_env import Harness, make_harness, make_pod, wait_for


def _mgr(tmp: str, ready: list[tuple[bool, str]], **cfg: Any) -> tuple[FakeClient, FakeClock, NodeStatusManager]:
    client = FakeClient()
    clock = FakeClock()
    config = KubeletConfig(node_name="n1", data_dir=tmp, node_ip="192.168.56.11", **cfg)
    return client, clock, NodeStatusManager(client, config, clock, lambda: "containerd://1.6.20", lambda: ready[0])


async def test_register_node_with_status(tmp_path: Any) -> None:
    client, _, m = _mgr(str(tmp_path), [(True, "")], pod_cidr="10.244.3.0/24")
    await m.register()
    node = await client.get(NODES, "n1")
    assert node["spec"]["podCIDR"] == "10.244.3.0/24" and node["spec"]["podCIDRs"] == ["10.244.3.0/24"]
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "n1"
    st = node["status"]
    assert st["nodeInfo"]["containerRuntimeVersion"] == "containerd://1.6.20"
    assert st["nodeInfo"]["kubeletVersion"].startswith("v1.32")
    assert st["addresses"] == [{"type": "InternalIP", "address": "192.168.56.11"}, {"type": "Hostname", "address": "n1"}]
    assert st["capacity"]["pods"] == "110" and st["capacity"]["memory"].endswith("Ki")
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["Ready"]["reason"] == "KubeletReady"
    assert conds["MemoryPressure"]["reason"] == "KubeletHasSufficientMemory"
    assert conds["NetworkUnavailable"]["status"] == "False"
    assert st["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 10250


async def test_reregistration_keeps_the_node(tmp_path: Any) -> None:
    client, _, m = _mgr(str(tmp_path), [(True, "")])
    await client.create(NODES, {"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.9.0/24"}})
    await m.register()
    node = await client.get(NODES, "n1")
    assert node["spec"]["podCIDR"] == "10.244.9.0/24" and m.pod_cidr == "10.244.9.0/24"
    assert node["metadata"]["labels"]["kubernetes.io/os"] == "linux"


async def test_status_written_on_change_or_report_interval(tmp_path: Any) -> None:
    ready = [(True, "")]
    client, clock, m = _mgr(str(tmp_path), ready, pod_cidr="10.244.3.0/24")
    await m.register()
    clock.advance(10)
    assert not await m.update_status()  # nothing changed
    ready[0] = (False, "PLEG is not healthy: pleg was last seen active 200s ago")
    clock.advance(10)
    assert await m.update_status()
    node = await client.get(NODES, "n1")
    rc = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert rc["status"] == "False" and "PLEG" in rc["message"] and rc["reason"] == "KubeletNotReady"
    clock.advance(10)
    assert not await m.update_status()
    clock.advance(300)
    assert await m.update_status()  # the 5 minute report


async def test_lease_created_and_renewed(tmp_path: Any) -> None:
    client, clock, m = _mgr(str(tmp_path), [(True, "")])
    await m.register()
    await m.renew_lease()
    lease = await client.get(LEASES, "n1", namespace="kube-node-lease")
    assert lease["spec"]["holderIdentity"] == "n1" and lease["spec"]["leaseDurationSeconds"] == 40
    assert lease["metadata"]["ownerReferences"][0]["kind"] == "Node"
    first = lease["spec"]["renewTime"]
    clock.advance(10)
    await m.renew_lease()
    assert (await client.get(LEASES, "n1", namespace="kube-node-lease"))["spec"]["renewTime"] > first


def _bootstrap_authorizer() -> Authorizer:
    """The apiserver's real chain over upstream's bootstrap policy (what a SubjectAccessReview answers)."""
    authz = Authorizer()
    for role in policy.cluster_roles():
        authz.rbac.on_event("clusterroles.rbac.authorization.k8s.io", "ADDED", role)
    for b in policy.cluster_role_bindings():
        authz.rbac.on_event("clusterrolebindings.rbac.authorization.k8s.io", "ADDED", b)
    return authz


class _ReviewingClient(FakeClient):
    """FakeClient plus the TokenReview and SubjectAccessReview the kubelet endpoint posts through
    Client.request, answered as the apiserver would."""

    tokens = {"apiserver-token": ("kube-apiserver-kubelet-client", ["system:authenticated"]),
              "admin-token": ("admin", ["system:masters", "system:authenticated"]),
              "user-token": ("alice", ["system:authenticated"])}
    authz = _bootstrap_authorizer()

    async def request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        spec = kw["body"]["spec"]
        if path == "/apis/authorization.k8s.io/v1/subjectaccessreviews":
            ra = spec["resourceAttributes"]
            user = UserInfo(spec["user"], groups=tuple(spec.get("groups") or ()))
            d = self.authz.authorize(Attributes(user=user, verb=ra["verb"], resource=ra["resource"],
                                                subresource=ra.get("subresource", ""), name=ra.get("name", "")))
            return {"status": {"allowed": d.allowed, "reason": d.reason}}
        assert method == "POST" and path == "/apis/authentication.k8s.io/v1/tokenreviews"
        who = self.tokens.get(spec["token"])
        if who is None:
            return {"status": {"authenticated": False}}
        return {"status": {"authenticated": True, "user": {"username": who[0], "groups": who[1]}}}


@pytest.fixture
async def served(tmp_path: Any) -> AsyncIterator[tuple[Harness, TestClient[Any, Any]]]:
    h = make_harness(str(tmp_path), client=_ReviewingClient())
    await h.kubelet.start()
    tc: TestClient[Any, Any] = TestClient(TestServer(KubeletServer(h.kubelet).app()))
    await tc.start_server()
    try:
        yield h, tc
    finally:
        await tc.close()
        await h.kubelet.stop()


async def test_endpoint_authentication(served: tuple[Harness, TestClient[Any, Any]]) -> None:
    _, tc = served
    assert (await tc.get("/healthz")).status == 200
    assert (await tc.get("/metrics")).status == 401
    assert (await tc.get("/metrics", headers={"Authorization": "Bearer nope"})).status == 401
    assert (await tc.get("/metrics", headers={"Authorization": "Bearer user-token"})).status == 403
    r = await tc.get("/metrics", headers={"Authorization": "Bearer apiserver-token"})
    assert r.status == 200 and "kubelet_pleg_relist_duration_seconds" in await r.text()
    assert (await tc.get("/metrics", headers={"Authorization": "Bearer admin-token"})).status == 200


def _write_log(path: str, lines: list[bytes]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"".join(lines))


async def test_logs_previous_and_exec(served: tuple[Harness, TestClient[Any, Any]]) -> None:
    h, tc = served
    auth = {"Authorization": "Bearer apiserver-token"}
    await h.create(make_pod("lg"))
    await wait_for(lambda: h.condition("lg", "Ready") == "True", what="Ready")
    pod = h.pod("lg")
    assert pod is not None
    uid = pod["metadata"]["uid"]
    d = os.path.join(h.tmp, "logs", "pods", f"default_lg_{uid}", "c")
    _write_log(os.path.join(d, "0.log"), [b"2026-01-01T00:00:00Z stdout F current-1\n",
                                          b"2026-01-01T00:00:01Z stderr F current-2\n"])
    r = await tc.get("/containerLogs/default/lg/c?tailLines=1", headers=auth)
    assert r.status == 200 and await r.text() == "current-2\n"
    r = await tc.get("/containerLogs/default/lg/c?previous=true", headers=auth)
    assert r.status == 400 and "previous terminated container" in await r.text()
    assert (await tc.get("/containerLogs/default/lg/nope", headers=auth)).status == 400
    assert (await tc.get("/containerLogs/default/nope/c", headers=auth)).status == 404
    h.runtime.exec_results[("id",)] = ExecResult(3, b"out\n", b"err\n")
    r = await tc.post("/exec/default/lg/c?command=id", headers=auth)
    assert r.status == 200 and r.headers["X-Exit-Code"] == "3" and await r.text() == "out\nerr\n"


async def test_attach_checks_and_asks_the_runtime_with_the_spec_tty(
        served: tuple[Harness, TestClient[Any, Any]]) -> None:
    h, tc = served
    auth = {"Authorization": "Bearer apiserver-token"}
    up = {**auth, "Connection": "Upgrade", "Upgrade": "SPDY/3.1"}
    await h.create(make_pod("at", [{"name": "c", "image": "nodeagent.local/toolbox:1", "stdin": True, "tty": True},
                                   {"name": "d", "image": "nodeagent.local/toolbox:1"}], restartPolicy="Never"))
    await wait_for(lambda: h.condition("at", "Ready") == "True", what="Ready")
    pod = h.pod("at")
    assert pod is not None
    uid = pod["metadata"]["uid"]
    # refused before the runtime is asked: no upgrade, no stream, unknown container, another pod UID
    r = await tc.post("/attach/default/at/c?output=1", headers=auth)
    assert r.status == 400 and "upgrade" in await r.text()
    r = await tc.post("/attach/default/at/c", headers=up)
    assert r.status == 400 and "at least 1 of stdin, stdout, stderr" in await r.text()
    assert (await tc.post("/attach/default/at/nope?output=1", headers=up)).status == 400
    assert (await tc.post("/attach/default/at/not-the-uid/c?output=1", headers=up)).status == 404
    assert h.runtime.attaches == []
    # tty comes from the container's spec (not the query); with a tty there is no stderr stream
    r = await tc.post(f"/attach/default/at/{uid}/c?input=1&output=1&error=1", headers=up)
    assert r.status == 502 and "streaming server" in await r.text()  # the fake's URL does not answer
    r = await tc.post("/attach/default/at/d?stdout=true&stderr=true&tty=true", headers=up)
    assert r.status == 502
    cid = {c.name: c.id for c in h.runtime.containers.values()}
    assert h.runtime.attaches == [(cid["c"], True, True, True, False), (cid["d"], False, False, True, True)]
    # a container that is not running cannot be attached to
    h.runtime.exit(cid["d"], 0)
    await h.kubelet.pleg.refresh(uid)
    r = await tc.post("/attach/default/at/d?output=1", headers=up)
    assert r.status == 400 and "is not running" in await r.text()
    assert len(h.runtime.attaches) == 2


async def test_deleted_node_is_registered_again(tmp_path: Any) -> None:
    client, clock, m = _mgr(str(tmp_path), [(True, "")], pod_cidr="10.244.3.0/24")
    await m.register()
    await client.delete(NODES, "n1")
    clock.advance(400)
    assert await m.update_status()
    node = await client.get(NODES, "n1")
    assert node["spec"]["podCIDR"] == "10.244.3.0/24" and node["status"]["conditions"]


async def test_fast_status_update_writes_ready_as_soon_as_runtime_and_podcidr_allow(tmp_path: Any) -> None:
    from nodeagent.kubelet.node_startup import fast_status_update_once

    ready: list[tuple[bool, str]] = [(False, "container runtime network not ready: NetworkReady=false")]
    client, _, m = _mgr(str(tmp_path), ready)
    await m.register()  # no podCIDR yet: NotReady
    checks = 0

    async def refresh() -> None:  # the runtime reports NetworkReady from the third check on
        nonlocal checks
        checks += 1
        if checks == 3:
            ready[0] = (True, "")

    def ready_condition() -> str:
        node = client.objects(NODES)[0]
        return next(c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready")

    task = asyncio.create_task(fast_status_update_once(m, refresh, period=0.01, grace=10))
    await wait_for(lambda: checks >= 5, what="a few checks")
    assert ready_condition() == "True" and not task.done()  # Ready written, but no podCIDR yet: still looking
    await client.patch(NODES, "n1", {"spec": {"podCIDR": "10.244.7.0/24", "podCIDRs": ["10.244.7.0/24"]}})
    assert await asyncio.wait_for(task, 5) is True
    assert m.pod_cidr == "10.244.7.0/24"
    node = client.objects(NODES)[0]
    net = next(c for c in node["status"]["conditions"] if c["type"] == "NetworkUnavailable")
    assert net["status"] == "False"


async def test_fast_status_update_gives_up_after_the_grace_period(tmp_path: Any) -> None:
    from nodeagent.kubelet.node_startup import fast_status_update_once

    _, _, m = _mgr(str(tmp_path), [(False, "runtime down")])
    await m.register()

    async def refresh() -> None:
        pass

    assert await fast_status_update_once(m, refresh, period=0.01, grace=0.05) is False


async def test_fast_status_update_ends_only_once_ready_is_written(tmp_path: Any) -> None:
    """The 5 s runtime loop may flip readiness between the loop's write and its check: the loop
    ends on what the apiserver accepted, so Ready=True is written before it stops."""
    from nodeagent.kubelet.node_startup import fast_status_update_once

    ready: list[tuple[bool, str]] = [(False, "network not ready")]
    client, _, m = _mgr(str(tmp_path), ready, pod_cidr="10.244.1.0/24")
    await m.register()
    real_update = m.update_status

    async def update_then_other_loop_flips() -> bool:
        wrote = await real_update()
        ready[0] = (True, "")  # the other loop, right after this write
        return wrote

    m.update_status = update_then_other_loop_flips  # type: ignore[method-assign]

    async def refresh() -> None:
        pass

    assert await fast_status_update_once(m, refresh, period=0.01, grace=5) is True
    node = client.objects(NODES)[0]
    assert next(c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready") == "True"
