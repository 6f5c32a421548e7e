"""OffsetTracker: which offsets an agent never saw (pure, no broker)."""

from __future__ import annotations

from streams.gaps import OffsetTracker


def test_contiguous_offsets_and_redeliveries_are_not_gaps() -> None:
    t = OffsetTracker()
    assert [t.gap("pool-events", 0, o) for o in (0, 1, 2, 1, 2, 3)] == [None] * 6


def test_a_jump_names_the_skipped_range_once() -> None:
    t = OffsetTracker()
    t.gap("pool-events", 0, 10)
    assert t.gap("pool-events", 0, 13) == (11, 13)
    assert t.gap("pool-events", 0, 14) is None


def test_partitions_are_tracked_apart_and_the_first_offset_is_a_baseline() -> None:
    t = OffsetTracker()
    assert t.gap("pool-events", 0, 5) is None  # nothing seen yet on this partition: no claim
    assert t.gap("pool-events", 1, 50) is None
    assert t.gap("pool-events", 1, 52) == (51, 52)
    assert t.gap("pool-events", 0, 6) is None


def test_a_rebalance_forgets_the_baseline() -> None:
    t = OffsetTracker()
    t.gap("pool-events", 0, 5)
    t.clear("app", revoked={"anything"})  # signal handlers get (sender, ...) arguments
    assert t.gap("pool-events", 0, 40) is None


def test_a_seed_makes_the_first_record_comparable() -> None:
    t = OffsetTracker()
    assert not t.seen("pool-events", 0)
    t.seed("pool-events", 0, 7)  # the group's committed offset: 7 is the next record to handle
    assert t.seen("pool-events", 0)
    assert t.gap("pool-events", 0, 9) == (7, 9)
    t.seed("pool-events", 1, 3)
    assert t.gap("pool-events", 1, 3) is None
