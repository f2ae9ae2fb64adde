import asyncio

import pytest

from nodeagent.client import ShutDown, WorkQueue


async def test_key_queued_once_and_requeued_if_added_while_processing() -> None:
    q = WorkQueue()
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    k = await q.get()
    assert k == "a"
    q.add("a")  # while processing: must not be handed to another worker now
    assert await q.get() == "b"
    assert len(q) == 0
    q.done("a")  # now it comes back
    assert await q.get() == "a"


async def test_rate_limited_backoff_grows_and_forget_resets() -> None:
    q = WorkQueue(base_delay=0.01)
    q.add_rate_limited("x")
    q.add_rate_limited("x")
    assert q.num_requeues("x") == 2
    got = await asyncio.wait_for(q.get(), 1)
    assert got == "x"
    q.forget("x")
    assert q.num_requeues("x") == 0


async def test_shutdown_wakes_waiters() -> None:
    q = WorkQueue()
    waiter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.shutdown()
    with pytest.raises(ShutDown):
        await asyncio.wait_for(waiter, 1)
