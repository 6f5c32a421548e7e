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


def test_partitions_without_a_committed_offset_are_rewound_after_faust_seeks() -> None:
    """Faust's seek leaves them where the fetcher got to while the flow was suspended (streams/gaps.py)."""
    import asyncio
    from collections import defaultdict
    from types import SimpleNamespace

    from faust.types import TP

    from streams.gaps import rewind_uncommitted

    leads0, leads1, leads2, changelog = TP("leads.new", 0), TP("leads.new", 1), TP("leads.new", 2), TP("x-changelog", 0)
    seeks: list[tuple[TP, int]] = []

    class Consumer:
        _committed_offset = defaultdict(lambda: None, {leads1: 7, leads2: None})

        async def perform_seek(self) -> None:
            seeks.append((leads1, 7))  # what Faust does: committed partitions only

        def assignment(self) -> set[TP]:
            return {leads0, leads1, leads2, changelog}

        async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
            return {tp: 3 for tp in tps}

        async def seek(self, tp: TP, offset: int) -> None:
            seeks.append((tp, offset))

    receivers: list = []
    app = SimpleNamespace(
        consumer=Consumer(),
        conf=SimpleNamespace(consumer_auto_offset_reset="earliest"),
        tables=SimpleNamespace(changelog_topics={"x-changelog"}),
        on_partitions_assigned=SimpleNamespace(connect=receivers.append),
    )
    rewind_uncommitted(app)
    [wrap] = receivers
    wrap(None, assigned=set())
    wrap(None, assigned=set())  # a later rebalance does not wrap twice
    asyncio.run(app.consumer.perform_seek())
    assert seeks[0] == (leads1, 7)
    assert sorted(seeks[1:]) == [(leads0, 3), (leads2, 3)], "uncommitted partitions to their log start"
    seeks.clear()
    app.conf.consumer_auto_offset_reset = "latest"  # an app that starts at the end is left alone
    asyncio.run(app.consumer.perform_seek())
    assert seeks == [(leads1, 7)]
