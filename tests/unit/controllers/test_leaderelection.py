"""Leader election over a Lease with FakeClient and a fake clock."""

from __future__ import annotations

import pytest

from nodeagent.client.errors import Conflict
from nodeagent.clock import FakeClock
from nodeagent.controllers.leaderelection import LeaderElectionConfig, LeaderElector
from nodeagent.machinery.kinds import LEASES
from tests.helpers.fake_client import FakeClient


def elector(client: FakeClient, clock: FakeClock, identity: str) -> LeaderElector:
    return LeaderElector(client, LeaderElectionConfig(identity=identity, lease_duration=15), clock)


async def test_one_leader_then_takeover_after_lease_duration() -> None:
    client, clock = FakeClient(), FakeClock()
    a, b = elector(client, clock, "a"), elector(client, clock, "b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    clock.advance(10)
    assert await a.try_acquire_or_renew()  # renewal
    clock.advance(10)
    assert not await b.try_acquire_or_renew()  # b saw the renewal 10 s ago: still held
    (lease,) = client.objects(LEASES)
    assert lease["metadata"]["namespace"] == "kube-system" and lease["metadata"]["name"] == "kube-controller-manager"
    assert lease["spec"]["holderIdentity"] == "a" and lease["spec"]["leaseDurationSeconds"] == 15
    clock.advance(16)  # a died: no renewal for longer than the lease duration
    assert await b.try_acquire_or_renew()
    (lease,) = client.objects(LEASES)
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    assert not await a.try_acquire_or_renew()


async def test_release_lets_standby_take_over_at_once() -> None:
    client, clock = FakeClient(), FakeClock()
    a, b = elector(client, clock, "a"), elector(client, clock, "b")
    await a.acquire()
    assert not await b.try_acquire_or_renew()
    await a.release()
    assert await b.try_acquire_or_renew()


async def test_conflicting_writers_cannot_both_win() -> None:
    client, clock = FakeClient(), FakeClock()
    a, b = elector(client, clock, "a"), elector(client, clock, "b")
    await a.try_acquire_or_renew()
    clock.advance(20)
    # both see an expired lease; the second write carries a stale resourceVersion and loses
    lease = await client.get(LEASES, "kube-controller-manager", "kube-system")
    a_body = a._lease_body(lease, clock.now())
    b_body = b._lease_body(lease, clock.now())
    await client.update(LEASES, b_body)
    with pytest.raises(Conflict):
        await client.update(LEASES, a_body)
