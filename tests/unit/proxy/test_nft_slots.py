"""The slot ranges behind the nftables back end's endpoint-slots maps."""

from __future__ import annotations

from nodeagent.proxy.nft_slots import MIN_RANGE, SlotAllocator


def test_ranges_are_stable_grow_by_powers_of_two_and_free_after_commit() -> None:
    s = SlotAllocator()
    assert s.base("a", 3) == 0
    assert s.base("b", 1) == MIN_RANGE
    assert s.base("a", MIN_RANGE) == 0  # still fits: same base, so the dnat rule keeps its offset
    assert s.base("a", MIN_RANGE + 1) == 2 * MIN_RANGE  # outgrown: a range of 32 after b's
    assert s.ranges["a"] == (2 * MIN_RANGE, 2 * MIN_RANGE)
    # a's old range is not handed out before the transaction that left it is committed
    assert s.base("c", 2) == 4 * MIN_RANGE
    s.commit()
    assert s.base("d", 2) == 0
    s.release("b")
    s.commit()
    assert s.base("e", 5) == MIN_RANGE
    assert s.base("f", 40) == 5 * MIN_RANGE  # sizes do not mix: a freed 16 does not hold 40
    assert s.ranges["f"] == (5 * MIN_RANGE, 4 * MIN_RANGE)
