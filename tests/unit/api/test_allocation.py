"""Service allocation as a transaction: reserve at once, release what the old object held on
commit, give back what was reserved on revert; and the write paths that use it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from nodeagent.api.allocators import AllocationError, AllocationTxn, ClusterIPAllocator, NodePortAllocator
from nodeagent.api.errors import ApiError
from nodeagent.api.memory_store import MemoryStore
from nodeagent.api.registry import DeleteOptions, Registry
from nodeagent.machinery import kinds


def allocators() -> tuple[ClusterIPAllocator, NodePortAllocator]:
    return ClusterIPAllocator("10.96.0.0/29"), NodePortAllocator("30000-30002")


async def test_revert_gives_back_what_was_reserved() -> None:
    ips, ports = allocators()
    txn = AllocationTxn(ips, ports)
    ip = await txn.ip(None)
    port = await txn.port(30001)
    assert ips.has(ip) and ports.has(port)
    await txn.revert()
    assert not ips.has(ip) and not ports.has(port) and (ips.used(), ports.used()) == (0, 0)


async def test_commit_keeps_the_reservations_and_frees_the_old_values() -> None:
    ips, ports = allocators()
    await ports.allocate(30000)  # held by the old object
    txn = AllocationTxn(ips, ports)
    await txn.port(30002)
    txn.free_on_commit(ports={30000})
    assert ports.has(30000)  # nothing is released before the write stands
    await txn.commit()
    assert ports.has(30002) and not ports.has(30000)
    await txn.revert()  # after commit the transaction is spent: nothing is given back twice
    assert ports.has(30002)


async def test_the_first_address_is_the_kubernetes_services_only() -> None:
    ips, ports = allocators()
    with pytest.raises(AllocationError, match="already allocated"):
        await AllocationTxn(ips, ports).ip(ips.first)
    assert await AllocationTxn(ips, ports).ip(ips.first, allow_reserved=True) == ips.first
    # /29: 8 addresses, minus network, broadcast and the first: 5 for everybody else
    txn = AllocationTxn(ips, ports)
    got = {await txn.ip(None) for _ in range(5)}
    assert ips.first not in got and len(got) == 5
    with pytest.raises(AllocationError, match="range is full"):
        await txn.ip(None)
    for bad in ("10.96.0.0", "10.96.0.7", "10.97.0.1", "nope"):
        with pytest.raises(AllocationError):
            await ips.allocate(bad)


@pytest.fixture
async def reg() -> AsyncIterator[Registry]:
    r = Registry(MemoryStore(), service_cidr="10.96.0.0/28", node_port_range="30000-30009")
    await r.start()
    try:
        yield r
    finally:
        await r.close()


def svc(name: str, **spec: object) -> dict[str, object]:
    return {"metadata": {"name": name}, "spec": {"ports": [{"port": 80}], **spec}}


async def test_switch_to_external_name_releases_the_cluster_ip(reg: Registry) -> None:
    s = await reg.create(kinds.SERVICES, "default", svc("a", type="NodePort"))
    ip, port = s["spec"]["clusterIP"], s["spec"]["ports"][0]["nodePort"]
    out = await reg.patch(kinds.SERVICES, "default", "a", "merge",
                          {"spec": {"type": "ExternalName", "externalName": "db.example.com"}})
    assert "clusterIP" not in out["spec"]
    assert not reg.cluster_ips.has(ip) and not reg.node_ports.has(port)


async def test_a_refused_write_holds_nothing(reg: Registry) -> None:
    before = (reg.cluster_ips.used(), reg.node_ports.used())
    with pytest.raises(ApiError) as err:  # the nodePort is out of range: after the ClusterIP was reserved
        await reg.create(kinds.SERVICES, "default", svc("a", type="NodePort", ports=[{"port": 80, "nodePort": 1}]))
    assert err.value.code == 422
    assert (reg.cluster_ips.used(), reg.node_ports.used()) == before
    await reg.create(kinds.SERVICES, "default", svc("b", type="NodePort"))
    with pytest.raises(ApiError) as err:  # a taken name: the allocations of the losing create go back
        await reg.create(kinds.SERVICES, "default", svc("b", type="NodePort"))
    assert err.value.reason == "AlreadyExists"
    assert (reg.cluster_ips.used(), reg.node_ports.used()) == (before[0] + 1, before[1] + 1)
    await reg.delete(kinds.SERVICES, "default", "b", DeleteOptions())
    assert (reg.cluster_ips.used(), reg.node_ports.used()) == before
