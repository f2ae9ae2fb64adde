"""The slots behind the nftables back end's endpoint-slots interval maps."""

from __future__ import annotations

from collections import Counter

from nodeagent.proxy.nft_slots import SHARDS, SPAN, SlotAllocator, intervals


def test_slots_are_stable_spread_over_shards_and_free_after_commit() -> None:
    s = SlotAllocator()
    assert s.slot("a") == (0, 0)
    assert s.slot("b") == (1, 0)
    assert s.slot("a") == (0, 0)  # stable: the dnat rule keeps its offset
    for i in range(2, SHARDS):
        s.slot(f"c{i}")
    assert s.slot("next") == (0, SPAN)  # every shard used once: the second range of shard 0
    s.release("b")
    assert s.slot("d") == (1, SPAN)  # b's slot is not handed out before the commit
    s.commit()
    assert s.slot("e") == (1, 0)


def test_intervals_cover_the_range_in_near_equal_shares() -> None:
    for n in (1, 2, 3, 7, 10, 100, 1000):
        parts = intervals(5 * SPAN, n)
        assert parts[0][0] == 5 * SPAN and parts[-1][1] == 6 * SPAN - 1
        assert all(parts[i][1] + 1 == parts[i + 1][0] for i in range(n - 1))  # contiguous, no overlap
        sizes = Counter(hi - lo + 1 for lo, hi in parts)
        assert max(sizes) - min(sizes) <= 1
