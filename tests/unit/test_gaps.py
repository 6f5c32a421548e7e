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


class FakeThread:
    """Faust's consumer thread around a fake aiokafka consumer that records offset resets."""

    def __init__(self, assigned: set, fail: bool = False) -> None:
        self.resets: list = []
        self.fail = fail
        fetcher = type("Fetcher", (), {"request_offset_reset": lambda _, tps, strategy: self.resets.append(tps)})()
        self.aio = type("Aio", (), {"assignment": lambda _: assigned, "_fetcher": fetcher})()

    def _ensure_consumer(self):
        return self.aio

    async def call_thread(self, fun):
        if self.fail:
            raise RuntimeError("the consumer thread is gone")
        return await fun()


def fake_app(consumer):
    from types import SimpleNamespace

    receivers: list = []
    app = SimpleNamespace(
        consumer=consumer,
        conf=SimpleNamespace(consumer_auto_offset_reset="earliest"),
        tables=SimpleNamespace(changelog_topics={"x-changelog"}),
        on_partitions_assigned=SimpleNamespace(connect=receivers.append),
    )
    return app, receivers


def test_partitions_without_a_committed_offset_are_rewound_after_faust_seeks() -> None:
    """Faust's seek leaves them where the fetcher got to while the flow was suspended (streams/gaps.py)."""
    import asyncio
    from collections import defaultdict

    from aiokafka import TopicPartition
    from faust.types import TP

    from streams.gaps import rewind_uncommitted

    leads0, leads1, leads2, changelog = TP("leads.new", 0), TP("leads.new", 1), TP("leads.new", 2), TP("x-changelog", 0)
    assignor = TP("lr-__assignor-__leader", 0)
    thread = FakeThread({TopicPartition("leads.new", p) for p in (0, 1)})  # leads.new 2 was taken meanwhile
    seeks: list = []

    class Consumer:
        _committed_offset = defaultdict(lambda: None, {leads1: 7, leads2: None})
        _thread = thread

        async def perform_seek(self) -> None:
            seeks.append("faust")

        def assignment(self) -> set[TP]:
            return {leads0, leads1, leads2, changelog, assignor}

    app, receivers = fake_app(Consumer())
    rewind_uncommitted(app)
    [wrap] = receivers
    wrap(None, assigned=set())
    wrap(None, assigned=set())  # a later rebalance does not wrap twice
    asyncio.run(app.consumer.perform_seek())
    assert seeks == ["faust"]
    assert thread.resets == [[TopicPartition("leads.new", 0)]], "uncommitted, still assigned, not Faust's own"
    thread.resets.clear()
    app.conf.consumer_auto_offset_reset = "latest"  # an app that starts at the end is left alone
    asyncio.run(app.consumer.perform_seek())
    assert thread.resets == []


def test_a_failing_rewind_never_fails_the_recovery_it_runs_in() -> None:
    import asyncio
    from collections import defaultdict

    from faust.types import TP

    from streams.gaps import rewind_uncommitted

    class Consumer:
        _committed_offset: dict = defaultdict(lambda: None)
        _thread = FakeThread(set(), fail=True)
        sought = False

        async def perform_seek(self) -> None:
            Consumer.sought = True

        def assignment(self) -> set[TP]:
            return {TP("leads.new", 0)}

    app, receivers = fake_app(Consumer())
    rewind_uncommitted(app)
    receivers[0](None)
    asyncio.run(app.consumer.perform_seek())  # logs a warning, raises nothing
    assert Consumer.sought
