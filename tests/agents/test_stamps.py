"""Stamped changelogs: a late row of an evicted worker loses at recovery, and the owner writes the kept
value again (streams/tables.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from streams.changelog import GROUP_HEADER, EventGate, end_key, group_of, is_end_key
from streams.tables import STAMP_HEADER, StampedTable, stamp_of
from tests.agents.conftest import Kit


def row(
    table: StampedTable,
    key: str,
    value: Any,
    stamp: str | None,
    *,
    offset: int,
    partition: int = 0,
    group: int | None = None,
) -> Any:
    topic = table.changelog_topic.get_topic_name()
    headers = [(STAMP_HEADER, stamp.encode())] if stamp else []
    if group is not None:
        headers.append((GROUP_HEADER, str(group).encode()))
    raw = json.dumps(value).encode() if value is not None else None
    msg = SimpleNamespace(
        topic=topic,
        partition=partition,
        offset=offset,
        tp=TP(topic, partition),
        key=json.dumps(key).encode(),
        value=raw,
        headers=headers,
    )
    return SimpleNamespace(message=msg, key=key, value=value)  # the memory store reads these


@contextmanager
def changelog_sends(table: StampedTable) -> Iterator[list[dict[str, Any]]]:
    """What the table sends to its changelog (still sent: the buffer is dropped between tests)."""
    sent: list[dict[str, Any]] = []
    real = table.changelog_topic.send_soon

    def capture(**kwargs: Any) -> Any:
        sent.append(kwargs)
        return real(**kwargs)

    table.changelog_topic.send_soon = capture  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        del table.changelog_topic.send_soon


@pytest.fixture
def loads(kit: Kit) -> StampedTable:
    table = kit.ctx.tables.route  # keys here leave out the kind prefix: the table does not care
    table._high.clear()
    table._stale.clear()
    table._seen.clear()
    table._epoch.clear()
    table._distrusted_up_to = None
    table._retrusted.clear()
    table._gate = EventGate()  # the kit's app (and so this table) outlives a test
    table._groups.clear()
    return table


def test_stamps_are_read_from_headers_of_either_shape() -> None:
    assert stamp_of([(STAMP_HEADER, b"51:1:345")]) == (51, 1)  # epoch, generation (sequence dropped)
    assert stamp_of({STAMP_HEADER: b"3:3:4"}) == (3, 3)
    assert stamp_of([(STAMP_HEADER, b"12:345")]) == (12, 12)  # generation:sequence
    assert stamp_of([("other", b"x")]) is None
    assert stamp_of(None) is None
    assert stamp_of([(STAMP_HEADER, b"garbage")]) is None


def test_a_late_row_of_an_older_generation_is_skipped(kit: Kit, loads: StampedTable) -> None:
    """w2 (generation 8) wrote open=18 at offset 70; the zombie w1 (generation 7) flushed open=11 at 72.
    Its row for p|s has no newer row (compaction removed it, say): an old value beats none."""
    early = row(loads, "p|r", {"open": 17}, "7:4000", offset=60)
    successor = row(loads, "p|r", {"open": 18}, "8:100", offset=70)
    zombie = row(loads, "p|r", {"open": 11}, "7:5000", offset=72)
    zombie_only = row(loads, "p|s", {"open": 2}, "7:5001", offset=73)
    next_owner = row(loads, "p|s", {"open": 3}, "9:1", offset=74)
    assert loads.newest([early, successor, zombie, zombie_only, next_owner]) == [
        early,
        successor,
        zombie_only,
        next_owner,
    ]
    assert loads._stale == {0: {"p|r"}}
    assert loads.high_mark(0) == (9, 9)
    registry = kit.ctx.metrics.registry
    assert registry.get_sample_value("leadrelay_stale_changelog_records_total", {"table": "route"}) == 1


def test_a_late_row_loses_to_the_value_already_in_the_local_store(kit: Kit, loads: StampedTable) -> None:
    """Recovery continuing from the local store's offset: the newer row was applied in an earlier pass."""
    loads.apply_changelog_batch([row(loads, "p|r", {"open": 18}, "8:100", offset=70)])
    loads._seen.clear()  # a later rebalance: a new pass
    assert loads.newest([row(loads, "p|r", {"open": 11}, "7:5000", offset=72)]) == []


def test_stamps_keep_growing_when_the_group_generations_start_over(kit: Kit, loads: StampedTable) -> None:
    """A deleted or expired group restarts at generation 1: the owner stamps above its log's epoch."""
    topic = loads.changelog_topic.get_topic_name()
    loads.apply_changelog_batch([row(loads, "p|r", {"open": 5}, "50:50:7", offset=9, partition=1)])
    kit.relay.app.consumer_generation_id = 1
    try:
        with changelog_sends(loads) as sent:
            asyncio.run(loads.on_recovery_completed({TP(topic, 1)}, set()))
            asyncio.run(_write(loads, 1, "p|r", {"open": 6}))
    finally:
        kit.relay.app.consumer_generation_id = 0
    [write] = sent
    assert stamp_of(write["headers"]) == (51, 1)
    loads._high.clear()
    loads._seen.clear()  # a fresh reader of the whole log keeps both rows, in order
    first = row(loads, "p|r", {"open": 5}, "50:50:7", offset=9, partition=1)
    second = row(loads, "p|r", {"open": 6}, "51:1:8", offset=10, partition=1)
    assert loads.newest([first, second]) == [first, second]


async def _write(table: StampedTable, partition: int, key: str, value: Any) -> None:
    table.send_changelog(partition, key, value)


def test_confirmed_membership_withdraws_the_distrust(loads: StampedTable) -> None:
    topic = loads.changelog_topic.get_topic_name()
    loads.distrust(7)
    assert loads.persisted_offset(TP(topic, 0)) is None
    loads.trust_again()
    assert not loads._full_pass(0)


def test_partitions_have_their_own_high_marks_and_unstamped_rows_keep_log_order(loads: StampedTable) -> None:
    rows = [
        row(loads, "p|r", {"open": 1}, "9:1", offset=1, partition=0),
        row(loads, "p|q", {"open": 1}, "7:2", offset=1, partition=1),  # generation 9 is partition 0's
        row(loads, "p|r", {"open": 2}, "9:2", offset=2, partition=0),
        row(loads, "p|r", {"open": 3}, None, offset=3, partition=0),  # written before stamps existed
    ]
    assert loads.newest(rows) == rows


@pytest.mark.asyncio
async def test_a_live_write_raises_the_high_mark(kit: Kit, loads: StampedTable) -> None:
    """The successor's own writes count: after a restart on the same disk, a late row read from the
    changelog tail loses to the generation the successor wrote in."""
    app = kit.relay.app
    app.consumer_generation_id = 8
    try:
        loads.send_changelog(2, "p|r", {"open": 18})
    finally:
        app.consumer_generation_id = 0
    assert loads.high_mark(2) == (8, 8)
    loads.data["p|r"] = {"open": 18}  # what Table.__setitem__ stores beside the changelog row
    late = row(loads, "p|r", {"open": 11}, "7:5000", offset=72, partition=2)
    assert loads.newest([late]) == []


def test_the_owner_writes_the_kept_value_again_after_recovery(kit: Kit, loads: StampedTable) -> None:
    topic = loads.changelog_topic.get_topic_name()
    successor = row(loads, "p|r", {"open": 18}, "8:100", offset=70, partition=1)
    zombie = row(loads, "p|r", {"open": 11}, "7:5000", offset=72, partition=1)
    standby = row(loads, "p|q", {"open": 5}, "9:1", offset=10, partition=2)
    standby_late = row(loads, "p|q", {"open": 4}, "7:9", offset=11, partition=2)
    loads.apply_changelog_batch([successor, zombie, standby, standby_late])
    assert loads.data.get("p|r") == {"open": 18}
    with changelog_sends(loads) as sent:
        asyncio.run(loads.on_recovery_completed({TP(topic, 1)}, {TP(topic, 2)}))
    [heal] = sent
    assert (heal["key"], heal["value"], heal["partition"]) == ("p|r", {"open": 18}, 1)
    assert stamp_of(heal["headers"]) is not None
    assert loads._stale == {2: {"p|q"}}, "a standby partition is healed by its owner, not here"


def test_after_a_long_stall_recovery_rereads_every_changelog_partition(loads: StampedTable) -> None:
    topic = loads.changelog_topic.get_topic_name()
    loads.distrust(7)
    assert loads.persisted_offset(TP(topic, 0)) is None, "re-read from the start"
    asyncio.run(loads.on_recovery_completed({TP(topic, 0)}, set()))
    assert 0 in loads._retrusted
    assert loads.persisted_offset(TP(topic, 3)) is None, "partitions not yet re-read stay distrusted"


def test_a_late_row_of_the_stalled_generation_does_not_move_the_read_offset(loads: StampedTable, monkeypatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(
        "faust.tables.base.Collection._on_changelog_sent", lambda self, fut: calls.append(fut), raising=True
    )
    loads.distrust(7)
    late = SimpleNamespace(message=SimpleNamespace(headers=[(STAMP_HEADER, b"7:5000")]))
    fresh = SimpleNamespace(message=SimpleNamespace(headers=[(STAMP_HEADER, b"9:1")]))
    loads._on_changelog_sent(late)
    loads._on_changelog_sent(fresh)
    assert calls == [fresh]


@pytest.mark.asyncio
async def test_the_high_mark_survives_a_restart_on_the_same_disk(
    kit: Kit, loads: StampedTable, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """Kept in a file beside the RocksDB directory (inside it Faust would read it as a table key)."""
    (tmp_path / "loads-2.db").mkdir()
    monkeypatch.setattr(loads.data, "partition_path", lambda p: tmp_path / f"loads-{p}.db", raising=False)
    kit.relay.app.consumer_generation_id = 8
    try:
        loads.send_changelog(2, "p|r", {"open": 18})
    finally:
        kit.relay.app.consumer_generation_id = 0
    assert (tmp_path / "loads-2.db.leadrelay-high").read_text() == "8:8"
    loads._high.clear()  # a new process
    assert loads.high_mark(2) == (8, 8)
    loads.data["p|r"] = {"open": 18}
    assert loads.newest([row(loads, "p|r", {"open": 11}, "7:5000", offset=72, partition=2)]) == []


# --- event groups: one event's rows are applied all or none ---------------------------------------------


@pytest.mark.asyncio
async def test_a_decision_is_one_group_of_rows_ending_in_a_terminator(kit: Kit, loads: StampedTable) -> None:
    """Ledger entry, load and pool state of one lead: same group, then the terminator, in one partition."""
    async with kit.agent("route").test_context() as route:
        await route.put(value=kit.rep_changed("p", "rep-a"), key=b"p")
        with changelog_sends(loads) as sent:
            await route.put(value=kit.lead_arrived("p", "lead-1"), key=b"p")
    *rows, end = sent
    assert {r["key"].split("|")[0] for r in rows} == {"ledger", "loads", "pools"}
    assert is_end_key(end["key"]) and end["key"] == end_key(stamp_of(rows[0]["headers"]))
    assert len({group_of(r["headers"]) for r in sent}) == 1
    assert len({r["partition"] for r in sent}) == 1


def test_recovery_applies_an_event_once_its_terminator_is_read(kit: Kit, loads: StampedTable) -> None:
    first = row(loads, "ledger|p|l1", {"rep": "a"}, "5:5:1", offset=0, group=1)
    second = row(loads, "loads|p|a", {"open": 1}, "5:5:2", offset=1, group=1)
    end = row(loads, end_key((5, 5)), {"event": 1}, "5:5:3", offset=2, group=1)
    loads.apply_changelog_batch([first, second])  # a recovery batch can end in the middle of an event
    assert loads.data.get("ledger|p|l1") is None
    loads.apply_changelog_batch([end])
    assert loads.data.get("ledger|p|l1") == {"rep": "a"} and loads.data.get("loads|p|a") == {"open": 1}
    assert loads.data.get(end_key((5, 5))) is None, "terminators are not table rows"


def test_an_event_cut_short_at_the_end_of_the_log_is_left_out(kit: Kit, loads: StampedTable) -> None:
    """Its writer died after delivering one row: the new owner handles the event again from the state
    before it, instead of from half of it."""
    topic = loads.changelog_topic.get_topic_name()
    loads.apply_changelog_batch([row(loads, "ledger|p|l2", {"rep": "b"}, "5:5:4", offset=3, partition=1, group=4)])
    with changelog_sends(loads):
        asyncio.run(loads.on_recovery_completed({TP(topic, 1)}, set()))
    assert loads.data.get("ledger|p|l2") is None
    registry = kit.ctx.metrics.registry
    assert registry.get_sample_value("leadrelay_incomplete_event_changelog_records_total", {"table": "route"}) == 1


@contextmanager
def handling(partition: int) -> Iterator[None]:
    """Inside an event of `partition`, as Faust's stream sets it (faust.current_event())."""
    import weakref

    from faust.streams import _current_event

    class Event:  # weakly referenced, like Faust's
        message = SimpleNamespace(partition=partition)

    event = Event()
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def acked(partition: int, offset: int, stamp: bytes) -> Any:
    """A changelog send's future as the producer completes it."""
    meta = SimpleNamespace(topic_partition=SimpleNamespace(partition=partition), offset=offset)
    return SimpleNamespace(result=lambda: meta, message=SimpleNamespace(headers=[(STAMP_HEADER, stamp)]))


async def acks(table: StampedTable, read_range: Any, partition: int, stamp: bytes, *offsets: int) -> list[Any]:
    """The table's own rows acknowledged at `offsets`, a reader for what lies between; what it rewrites."""
    table.read_range = read_range
    try:
        with changelog_sends(table) as sent:
            for offset in offsets:
                table._on_changelog_sent(acked(partition, offset, stamp))
                await asyncio.gather(*table._overwriting)
    finally:
        table.read_range = None
    return sent


@pytest.mark.asyncio
async def test_the_owner_writes_again_what_another_writer_put_between_its_rows(kit: Kit, loads: StampedTable) -> None:
    """Rows 10 and 13 of partition 1 are this worker's: 11-12 are a frozen worker's late flush. The
    owner rewrites their keys with its own values, so the log (and compaction) ends with those."""
    loads.data["loads|p|r"] = {"open": 18}
    asked: list[tuple[str, int, int, int]] = []

    async def read_range(topic: str, partition: int, start: int, end: int) -> list[Any]:
        asked.append((topic, partition, start, end))
        late = [("loads|p|r", {"open": 11}), ("ledger|p|gone", {"rep": "x"}), (end_key((7, 7)), {"event": 3})]
        stamp = [(STAMP_HEADER, b"7:7:5")]
        return [
            SimpleNamespace(key=json.dumps(k).encode(), value=json.dumps(v).encode(), headers=stamp) for k, v in late
        ]

    sent = await acks(loads, read_range, 1, b"9:9:1", 10, 13, 14)  # 13 to 14: consecutive, nothing to do
    assert asked == [(loads.changelog_topic.get_topic_name(), 1, 11, 13)]
    assert sent == [], "not in the middle of whatever event is being handled"
    with changelog_sends(loads) as sent, handling(partition=2):
        loads.end_event()  # an event of another partition: its store is not this one's
    assert sent == []
    with changelog_sends(loads) as sent, handling(partition=1):
        loads.end_event()  # the end of the partition's next event
    assert sorted((s["key"], s["value"], s["partition"]) for s in sent) == [
        ("ledger|p|gone", None, 1),  # this worker has no such row: a tombstone
        ("loads|p|r", {"open": 18}, 1),
    ]
    assert all(group_of(s["headers"]) is None for s in sent), "rewrites stand alone"


@pytest.mark.asyncio
async def test_a_worker_that_finds_newer_rows_between_its_own_overwrites_nothing(kit: Kit, loads: StampedTable) -> None:
    """The frozen worker's own late rows are acknowledged after its successor's: the hole between its
    rows holds newer stamps. It was the one evicted, and must not write its stale values over them."""

    async def read_range(topic: str, partition: int, start: int, end: int) -> list[Any]:
        return [SimpleNamespace(key=b'"loads|p|r"', value=b'{"open": 18}', headers=[(STAMP_HEADER, b"9:9:1")])]

    assert await acks(loads, read_range, 2, b"7:7:1", 4, 9) == []
