"""spec.healthCheckNodePort in the Registry (no HTTP): allocation from the nodePort range, the update
rules, release, no leak on a failed write, the rebuild at start, and the protobuf field."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeagent.api import protobuf
from nodeagent.api.errors import ApiError
from nodeagent.api.registry import DeleteOptions, Registry
from nodeagent.api.sqlite_store import SqliteStore
from nodeagent.api.store import RevisionConflict
from nodeagent.machinery import kinds

RANGE = "30000-30004"  # five ports: small enough to run out on purpose


@pytest.fixture
async def reg(store: SqliteStore) -> AsyncIterator[Registry]:
    r = Registry(store, service_cidr="10.96.0.0/24", node_port_range=RANGE)
    await r.start()
    try:
        yield r
    finally:
        await r.close()


def lb(name: str, policy: str = "Local", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy, "selector": {"app": name},
                     "ports": [{"port": 80}], **spec}}


def held(reg: Registry, port: int) -> bool:
    """Whether the nodePort allocator holds `port`."""
    return reg.node_ports.has(port)


async def get_spec(reg: Registry, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = (await reg.get(kinds.SERVICES, "default", name)).obj["spec"]
    return spec


async def test_allocated_from_the_node_port_range_beside_the_node_ports(reg: Registry) -> None:
    spec = (await reg.create(kinds.SERVICES, "default", lb("a")))["spec"]
    hc, np = spec["healthCheckNodePort"], spec["ports"][0]["nodePort"]
    assert 30000 <= hc <= 30004 and hc != np
    assert held(reg, hc) and reg.node_ports.used() == 2
    # LoadBalancer with Cluster, and NodePort with Local, do not get one
    cluster = (await reg.create(kinds.SERVICES, "default", lb("b", "Cluster")))["spec"]
    nodeport = (await reg.create(kinds.SERVICES, "default", lb("c", type="NodePort")))["spec"]
    assert "healthCheckNodePort" not in cluster and "healthCheckNodePort" not in nodeport
    assert reg.node_ports.used() == 4


async def test_specific_value_honoured_and_a_taken_one_refused_as_upstream(reg: Registry) -> None:
    # the nodePorts are allocated first (at random when not given): name one so it cannot be 30003
    spec = (await reg.create(kinds.SERVICES, "default", lb("a", healthCheckNodePort=30003,
                                                         ports=[{"port": 80, "nodePort": 30000}])))["spec"]
    assert spec["healthCheckNodePort"] == 30003
    used = reg.node_ports.used()
    ips = reg.cluster_ips.used()
    with pytest.raises(ApiError) as err:
        await reg.create(kinds.SERVICES, "default", lb("b", healthCheckNodePort=30003))
    # alloc.go wraps this failure in an InternalError, unlike a taken nodePort (422)
    assert (err.value.code, err.value.reason) == (500, "InternalError")
    assert err.value.message == ("Internal error occurred: failed to allocate requested HealthCheck NodePort 30003: "
                                 "provided port is already allocated")
    assert err.value.details["causes"] == [{"message": err.value.message.removeprefix("Internal error occurred: ")}]
    # the ClusterIP and nodePort allocated for "b" before the failure went back
    assert (reg.node_ports.used(), reg.cluster_ips.used()) == (used, ips)
    with pytest.raises(ApiError) as err:
        await reg.create(kinds.SERVICES, "default", lb("c", healthCheckNodePort=8080))
    assert err.value.code == 500 and "provided port is not in the valid range. The range of valid ports is " \
                                      "30000-30004" in err.value.message
    assert reg.node_ports.used() == used


async def test_range_exhausted_by_the_health_check_port_leaks_nothing(reg: Registry) -> None:
    await reg.create(kinds.SERVICES, "default", lb("a"))
    await reg.create(kinds.SERVICES, "default", lb("b"))
    assert reg.node_ports.used() == 4
    with pytest.raises(ApiError) as err:  # its nodePort takes the last port, the health check finds none
        await reg.create(kinds.SERVICES, "default", lb("c"))
    assert err.value.code == 500 and "failed to allocate a HealthCheck NodePort" in err.value.message
    assert reg.node_ports.used() == 4
    # the nodePort taken for "c" went back: the fifth port is free for a NodePort Service
    await reg.create(kinds.SERVICES, "default", lb("d", type="NodePort"))
    assert reg.node_ports.used() == 5


async def test_kept_on_update_and_immutable_while_needed(reg: Registry) -> None:
    hc = (await reg.create(kinds.SERVICES, "default", lb("a")))["spec"]["healthCheckNodePort"]
    cur = copy.deepcopy((await reg.get(kinds.SERVICES, "default", "a")).obj)  # never edit the store's copy
    cur["spec"].pop("healthCheckNodePort")  # a PUT without the allocated value keeps it
    cur["metadata"]["labels"] = {"v": "2"}
    out, _ = await reg.update(kinds.SERVICES, "default", "a", cur)
    assert out["spec"]["healthCheckNodePort"] == hc and out["metadata"]["labels"] == {"v": "2"}
    other = 30000 + next(i for i in range(5) if not held(reg, 30000 + i))
    with pytest.raises(ApiError) as err:
        await reg.patch(kinds.SERVICES, "default", "a", "merge", {"spec": {"healthCheckNodePort": other}})
    assert err.value.code == 422
    assert err.value.details["causes"] == [{"reason": "FieldValueForbidden", "message": "Forbidden: field is immutable",
                                            "field": "spec.healthCheckNodePort"}]
    assert (await get_spec(reg, "a"))["healthCheckNodePort"] == hc and held(reg, hc) and not held(reg, other)


async def test_switching_to_cluster_or_away_from_load_balancer_wipes_and_releases(reg: Registry) -> None:
    hc = (await reg.create(kinds.SERVICES, "default", lb("a")))["spec"]["healthCheckNodePort"]
    out = await reg.patch(kinds.SERVICES, "default", "a", "merge", {"spec": {"externalTrafficPolicy": "Cluster"}})
    assert "healthCheckNodePort" not in out["spec"] and not held(reg, hc)
    out = await reg.patch(kinds.SERVICES, "default", "a", "merge", {"spec": {"externalTrafficPolicy": "Local"}})
    hc2 = out["spec"]["healthCheckNodePort"]
    assert held(reg, hc2)
    out = await reg.patch(kinds.SERVICES, "default", "a", "merge", {"spec": {"type": "NodePort"}})
    assert "healthCheckNodePort" not in out["spec"] and not held(reg, hc2)
    assert held(reg, out["spec"]["ports"][0]["nodePort"])
    # changing the value in the same update that makes it unneeded is refused (strategy keeps it)
    out = await reg.patch(kinds.SERVICES, "default", "a", "merge", {"spec": {"type": "LoadBalancer"}})
    hc3 = out["spec"]["healthCheckNodePort"]
    with pytest.raises(ApiError) as err:
        await reg.patch(kinds.SERVICES, "default", "a", "merge",
                        {"spec": {"externalTrafficPolicy": "Cluster", "healthCheckNodePort": 30000 + (hc3 - 29999) % 5}})
    assert err.value.code == 422 and err.value.details["causes"][0]["field"] == "spec.healthCheckNodePort"
    assert held(reg, hc3)


async def test_forbidden_where_not_needed(reg: Registry) -> None:
    for name, spec in (("cip", {"ports": [{"port": 80}]}),
                       ("cluster", lb("x", "Cluster")["spec"]),
                       ("np", {"type": "NodePort", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]})):
        with pytest.raises(ApiError) as err:
            await reg.create(kinds.SERVICES, "default", {"metadata": {"name": name},
                                                         "spec": {**spec, "healthCheckNodePort": 30001}})
        assert err.value.code == 422 and err.value.reason == "Invalid"
        assert {"reason": "FieldValueInvalid", "field": "spec.healthCheckNodePort",
                "message": "Invalid value: 30001: may only be set when `type` is 'LoadBalancer' and "
                           "`externalTrafficPolicy` is 'Local'"} in err.value.details["causes"]
    assert reg.node_ports.used() == 0
    with pytest.raises(ApiError) as err:
        await reg.create(kinds.SERVICES, "default", lb("bad", "Locl"))
    assert err.value.code == 422 and err.value.details["causes"][0] == {
        "reason": "FieldValueNotSupported", "field": "spec.externalTrafficPolicy",
        "message": 'Unsupported value: "Locl": supported values: "Cluster", "Local"'}


async def test_released_on_delete_and_not_held_by_dry_runs(reg: Registry) -> None:
    dry = await reg.create(kinds.SERVICES, "default", lb("d"), dry_run=True)
    assert 30000 <= dry["spec"]["healthCheckNodePort"] <= 30004 and reg.node_ports.used() == 0
    hc = (await reg.create(kinds.SERVICES, "default", lb("a")))["spec"]["healthCheckNodePort"]
    await reg.patch(kinds.SERVICES, "default", "a", "merge", {"spec": {"externalTrafficPolicy": "Cluster"}},
                    dry_run=True)
    assert held(reg, hc)
    await reg.delete(kinds.SERVICES, "default", "a", DeleteOptions())
    assert reg.node_ports.used() == 0
    np = 30000 if hc != 30000 else 30001
    again = await reg.create(kinds.SERVICES, "default", lb("b", healthCheckNodePort=hc,
                                                           ports=[{"port": 80, "nodePort": np}]))
    assert again["spec"]["healthCheckNodePort"] == hc


class BrokenStore:
    """Stands in for a Store write: a conflict on every try, or a storage failure."""

    def __init__(self) -> None:
        self.conflict = False
        self.calls = 0

    async def __call__(self, *_a: Any, **_k: Any) -> Any:
        self.calls += 1
        if self.conflict:
            raise RevisionConflict(0)
        raise OSError("disk full")


async def test_failed_writes_give_the_new_port_back(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    await reg.create(kinds.SERVICES, "default", lb("a", "Cluster"))
    used = reg.node_ports.used()
    broken = BrokenStore()
    monkeypatch.setattr(reg.store, "update", broken)
    with pytest.raises(OSError):  # the transition to Local allocated, then the write failed
        await reg.patch(kinds.SERVICES, "default", "a", "merge", {"spec": {"externalTrafficPolicy": "Local"}})
    assert broken.calls == 1 and reg.node_ports.used() == used
    broken.conflict = True
    with pytest.raises(ApiError) as err:  # retried on every conflict, each try allocating and giving back
        await reg.patch(kinds.SERVICES, "default", "a", "merge", {"spec": {"externalTrafficPolicy": "Local"}})
    assert err.value.code == 409 and broken.calls == 21 and reg.node_ports.used() == used
    broken.conflict = False
    monkeypatch.setattr(reg.store, "create", broken)
    with pytest.raises(OSError):
        await reg.create(kinds.SERVICES, "default", lb("b"))
    assert broken.calls == 22 and reg.node_ports.used() == used
    monkeypatch.undo()
    assert (await get_spec(reg, "a"))["externalTrafficPolicy"] == "Cluster"
    # a precondition conflict on the client's resourceVersion leaves nothing behind either
    cur = (await reg.get(kinds.SERVICES, "default", "a")).obj
    await reg.patch(kinds.SERVICES, "default", "a", "merge", {"metadata": {"labels": {"v": "1"}}})
    with pytest.raises(ApiError) as err:
        await reg.update(kinds.SERVICES, "default", "a", {**cur, "spec": {**cur["spec"], "externalTrafficPolicy": "Local"}})
    assert err.value.code == 409 and reg.node_ports.used() == used


async def test_rebuilt_from_storage_at_start(reg: Registry, store: SqliteStore) -> None:
    spec = (await reg.create(kinds.SERVICES, "default", lb("a")))["spec"]
    hc = spec["healthCheckNodePort"]
    await reg.close()
    again = Registry(store, service_cidr="10.96.0.0/24", node_port_range=RANGE)
    await again.start()
    try:
        assert held(again, hc) and held(again, spec["ports"][0]["nodePort"])
        with pytest.raises(ApiError) as err:  # not handed out again as a nodePort
            await again.create(kinds.SERVICES, "default", {"metadata": {"name": "np"}, "spec": {
                "type": "NodePort", "ports": [{"port": 80, "nodePort": hc}]}})
        assert err.value.code == 422 and "provided port is already allocated" in err.value.message
        await again.delete(kinds.SERVICES, "default", "a", DeleteOptions())
        assert again.node_ports.used() == 0
    finally:
        await again.close()


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def _field(num: int, value: int | bytes) -> bytes:
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    return _varint(num << 3 | 2) + _varint(len(value)) + value


def test_protobuf_service_spec_carries_field_12() -> None:
    meta = _field(1, b"hc")
    spec = _field(1, _field(3, 80)) + _field(4, b"LoadBalancer") + _field(11, b"Local") + _field(12, 31234)
    svc = _field(1, meta) + _field(2, spec)
    body = protobuf.MAGIC + _field(1, _field(1, b"v1") + _field(2, b"Service")) + _field(2, svc)
    obj = protobuf.decode(body)
    assert obj["spec"] == {"ports": [{"port": 80}], "type": "LoadBalancer", "externalTrafficPolicy": "Local",
                           "healthCheckNodePort": 31234}
