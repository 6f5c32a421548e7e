"""Reading a changelog back (streams/changelog.py): stamps, and events applied all or none."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.changelog import (
    GROUP_HEADER,
    STAMP_HEADER,
    EventGate,
    end_key,
    group_of,
    is_end_key,
    namespace,
    read_table,
)


def rec(key: str, value: Any, offset: int, stamp: str | None, *, partition: int = 0, group: int | None = None) -> Any:
    headers = [(STAMP_HEADER, stamp.encode())] if stamp else []
    if group is not None:
        headers.append((GROUP_HEADER, str(group).encode()))
    raw = None if value is None else orjson.dumps(value)
    key_bytes = orjson.dumps(key)
    return SimpleNamespace(
        key=key_bytes, value=raw, offset=offset, partition=partition, timestamp=offset, headers=headers
    )


def test_state_is_read_the_way_recovery_builds_it() -> None:
    """A late row of an evicted worker's generation (stamped below a row before it) is skipped where its
    key has a newer row, kept where it has none; rows without a stamp keep plain offset order."""
    log = [
        rec("p|r", {"open": 17}, 60, "7:1"),
        rec("p|r", {"open": 18}, 70, "8:1"),
        rec("p|r", {"open": 11}, 72, "7:2"),  # the zombie's late flush
        rec("p|t", {"open": 4}, 73, "7:3"),  # late too, but its key has no other row (compacted): kept
        rec("p|q", {"open": 1}, 74, "6:1"),  # an older row of its key...
        rec("p|q", None, 75, "7:4"),  # ...loses to a late tombstone stamped above it
        rec("p|s", {"open": 1}, 3, None, partition=1),
        rec("p|s", {"open": 2}, 4, None, partition=1),
    ]
    assert read_table(list(reversed(log))) == {"p|r": b'{"open":18}', "p|s": b'{"open":2}', "p|t": b'{"open":4}'}


def test_an_event_cut_short_is_left_out_whole() -> None:
    """Worker A (generation 3) wrote the ledger row of lead 2 but died before its load and pool rows;
    worker B (generation 4) handled lead 2 again and wrote all three, then its terminator."""
    log = [
        rec("ledger|p|l1", {"rep": "a"}, 0, "3:3:1", group=1),
        rec("loads|p|a", {"open": 1}, 1, "3:3:2", group=1),
        rec(end_key((3, 3)), {"event": 1}, 2, "3:3:3", group=1),
        rec("ledger|p|l2", {"rep": "b"}, 3, "3:3:4", group=4),  # cut here
        rec("ledger|p|l2", {"rep": "b"}, 4, "4:4:1", group=1),
        rec("loads|p|b", {"open": 1}, 5, "4:4:2", group=1),
        rec("pools|p", {"cursor": "b"}, 6, "4:4:3", group=1),
        rec(end_key((4, 4)), {"event": 1}, 7, "4:4:4", group=1),
    ]
    table = read_table(log)
    assert set(table) == {"ledger|p|l1", "loads|p|a", "ledger|p|l2", "loads|p|b", "pools|p"}
    assert namespace(table, "loads") == {"p|a": b'{"open":1}', "p|b": b'{"open":1}'}
    # Without B, the log ends in the middle of A's event: lead 2 was never decided as far as state goes.
    assert set(read_table(log[:4])) == {"ledger|p|l1", "loads|p|a"}


class Feed:
    """An EventGate fed in offset order, one partition unless told."""

    def __init__(self) -> None:
        self.gate: EventGate[str] = EventGate()
        self.offset: dict[int, int] = {}

    def __call__(self, stamp: tuple[int, int] | None, group: int | None, row: str, *, end: bool = False, p: int = 0):
        self.offset[p] = self.offset.get(p, -1) + 1
        return self.gate.feed(p, self.offset[p], stamp, group, end, row)


def test_an_event_overtaken_by_a_newer_writer_counts_only_if_its_end_arrives_late() -> None:
    """A froze in the middle of an event; B took over and handled it again. When A wakes, the rest of
    its event arrives: then (and only then) A's rows are passed on, as late rows, for the stamp rule."""
    feed = Feed()
    assert feed((3, 3), 4, "A ledger") == []
    assert feed((4, 4), 1, "B ledger") == []  # a newer writer: A's event is suspended
    assert feed((4, 4), 1, "B end", end=True) == ["B ledger"]
    assert feed((3, 3), 4, "A loads, late") == []
    assert feed((3, 3), 4, "A end, late", end=True) == ["A ledger", "A loads, late"]
    assert feed.gate.take_late() == ["A ledger", "A loads, late"] and feed.gate.take_late() == []
    # without the rest, the suspended event is cut short at the end of the log
    feed = Feed()
    feed((3, 3), 4, "A ledger")
    feed((4, 4), 1, "B ledger")
    assert feed.gate.close(0) == ["A ledger", "B ledger"] and feed.gate.dropped == 2


def test_an_event_whose_terminator_was_compacted_away_is_proved_whole_by_its_writers_later_rows() -> None:
    """A wrote event 1 whole, froze in event 2, and its late flush ended with event 2's terminator, under
    the same key as event 1's: compaction removed event 1's."""
    feed = Feed()
    assert feed((3, 3), 1, "A1 ledger") == []
    assert feed((4, 4), 7, "B ledger") == []
    assert feed((4, 4), 7, "B end", end=True) == ["B ledger"]
    assert feed((3, 3), 5, "A2 pools, late") == ["A1 ledger", "A2 pools, late"]
    assert feed((3, 3), 5, "A2 end, late", end=True) == []


def test_a_late_row_between_the_new_owners_rows_does_not_disturb_its_event() -> None:
    """A zombie's late rows (and the terminator of an event it gave up) land between its successor's
    rows: the successor's event is still applied whole, and the late rows are judged alone."""
    feed = Feed()
    assert feed((4, 4), 1, "B ledger") == []
    assert feed((3, 3), 9, "A end, late", end=True) == []
    assert feed((3, 3), 8, "A pools, late") == ["A pools, late"]
    assert feed((4, 4), 1, "B loads") == []
    assert feed((4, 4), 1, "B end", end=True) == ["B ledger", "B loads"]
    assert feed.gate.take_late() == ["A pools, late"]


def test_compaction_leaves_late_rows_between_a_writers_events() -> None:
    """B's first terminator was compacted away: a late row of A between B's events changes nothing."""
    feed = Feed()
    assert feed((4, 4), 1, "B1 ledger") == []
    assert feed((3, 3), 7, "A late") == ["A late"]
    assert feed((4, 4), 5, "B2 pools") == ["B1 ledger"]
    assert feed((4, 4), 5, "B2 end", end=True) == ["B2 pools"]


def test_a_group_spans_feeds_and_a_later_row_of_the_same_writer_completes_it() -> None:
    """Compaction keeps only the newest terminator per stamp: older events of a writer are known
    complete because the same writer went on."""
    feed = Feed()
    assert feed((5, 5), 1, "x") == []
    assert feed((5, 5), 1, "y") == []
    assert feed.gate.holding(0) == 2
    assert feed((5, 5), 3, "z") == ["x", "y"]
    assert feed((5, 5), None, "rewrite") == ["z", "rewrite"]  # ungrouped, same writer
    assert feed(None, None, "unstamped") == ["unstamped"]
    assert feed((5, 5), 9, "end of a compacted event", end=True) == []
    assert feed.gate.dropped == 0


def test_rows_read_again_after_a_rebalance_are_ignored_and_what_is_held_stays_held() -> None:
    gate: EventGate[str] = EventGate()
    assert gate.feed(0, 10, (5, 5), 1, False, "x") == []
    assert gate.feed(0, 11, (5, 5), 1, False, "y") == []
    # a new pass resumes from the store's offset (before x): the same rows come again
    assert gate.feed(0, 10, (5, 5), 1, False, "x") == []
    assert gate.feed(0, 11, (5, 5), 1, False, "y") == []
    assert gate.feed(0, 12, (5, 5), 1, True, "end") == ["x", "y"]
    gate.forget(0)  # the store is rebuilt: everything is read again
    assert gate.feed(0, 10, (5, 5), 1, False, "x") == []


def test_a_pass_resumed_from_the_store_knows_the_stamps_before_it() -> None:
    """The late rest of an event, read in a pass that starts after the successor's rows."""
    gate: EventGate[str] = EventGate()
    gate.seed(0, (4, 4))
    assert gate.feed(0, 20, (3, 3), 4, False, "A loads, late") == ["A loads, late"]
    assert gate.feed(0, 21, (3, 3), 4, True, "A end, late") == []
    assert gate.take_late() == ["A loads, late"]


def test_close_drops_what_is_pending_and_partitions_are_separate() -> None:
    feed = Feed()
    feed((5, 5), 1, "p0", p=0)
    feed((5, 5), 1, "p1", p=1)
    assert feed.gate.close(0) == ["p0"]
    assert feed.gate.close(0) == []
    assert feed((5, 5), 1, "end", end=True, p=1) == ["p1"]


def test_headers_and_keys() -> None:
    assert group_of([(GROUP_HEADER, b"17")]) == 17
    assert group_of([(GROUP_HEADER, b"x")]) is None
    assert group_of(None) is None
    assert is_end_key(end_key((1, 2)))
    assert not is_end_key("ledger|p|lead") and not is_end_key(None)


# --- property: whatever the cuts and the compaction, the table is the fold of the complete events -----


@dataclass
class Log:
    records: list[Any] = field(default_factory=list)
    expected: dict[str, Any] = field(default_factory=dict)

    def write(self, stamp: int, group: int, row: tuple[str, Any]) -> None:
        key, value = row
        self.records.append(rec(key, value, len(self.records), f"{stamp}:{stamp}:{len(self.records)}", group=group))

    def end(self, stamp: int, group: int) -> None:
        self.records.append(
            rec(end_key((stamp, stamp)), {"event": group}, len(self.records), f"{stamp}:{stamp}:0", group=group)
        )


KEYS = st.sampled_from(["ledger|p|l1", "ledger|p|l2", "loads|p|a", "loads|p|b", "pools|p"])
ROW = st.tuples(KEYS, st.one_of(st.none(), st.integers(0, 9)))
EVENT = st.lists(ROW, min_size=1, max_size=4)
# A writer's run: its events; how many rows of its last event were delivered (None: all, terminator
# too); and whether the rest of that cut event comes late, after its successor's first event (a worker
# frozen mid-flush that wakes after the group moved on).
RUN = st.tuples(st.lists(EVENT, min_size=1, max_size=5), st.one_of(st.none(), st.integers(0, 3)), st.booleans())


@settings(max_examples=400, deadline=None)
@given(runs=st.lists(RUN, min_size=1, max_size=4), keep=st.randoms(use_true_random=False))
def test_the_table_is_the_fold_of_complete_events_whatever_was_cut_or_compacted(runs: list, keep: Any) -> None:
    """Writers follow each other (stamps 1, 2, ...); each may die, or freeze, part-way through its last
    event. Its event was not committed, so the next writer handles it first, with the same rows
    (handlers are deterministic: route decides at the record's time); a frozen writer's remaining rows
    may arrive after that. Compaction may then clean the log up to any offset before its tail (the
    active segment, where a log cut short ends, is never cleaned)."""
    log = Log()
    redo: tuple[list[tuple[str, Any]], list[tuple[str, Any]], int, int] | None = None  # rows, rest, stamp, group
    tail = len(log.records)
    for stamp, (own, cut, wakes) in enumerate(runs, start=1):
        events = own if redo is None else [redo[0], *own]
        late, redo = redo, None
        for n, rows in enumerate(events):
            group = n + 1
            if cut is not None and n == len(events) - 1:
                tail = len(log.records)
                delivered = min(cut, len(rows) - 1)
                for row in rows[:delivered]:
                    log.write(stamp, group, row)
                redo = (rows, rows[delivered:] if wakes else [], stamp, group)
                continue
            for row in rows:
                log.write(stamp, group, row)
            log.end(stamp, group)
            for key, value in rows:
                log.expected[key] = value
            tail = len(log.records)
            if late is not None and late[1]:  # the frozen predecessor wakes and flushes the rest
                _, rest, late_stamp, late_group = late
                for row in rest:
                    log.write(late_stamp, late_group, row)
                log.end(late_stamp, late_group)
                tail = len(log.records)
            late = None
    # Kafka's cleaner: up to the first uncleanable offset (never in the active segment), a row goes
    # when its key has a later row before that offset. Later passes only move that offset on.
    cleaned_to = keep.randint(0, tail)
    cleanable = log.records[:cleaned_to]
    superseded = {i for i, r in enumerate(cleanable) if any(s.key == r.key for s in cleanable[i + 1 :])}
    compacted = [r for i, r in enumerate(log.records) if i not in superseded]
    want = {k: orjson.dumps(v) for k, v in log.expected.items() if v is not None}
    assert read_table(log.records) == want, "uncompacted"
    assert read_table(compacted) == want
