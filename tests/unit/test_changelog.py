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
    """A late row of an evicted worker's generation is skipped when its key has a newer row; rows without
    a stamp keep plain offset order."""
    log = [
        rec("p|r", {"open": 17}, 60, "7:1"),
        rec("p|r", {"open": 18}, 70, "8:1"),
        rec("p|r", {"open": 11}, 72, "7:2"),  # the zombie's late flush
        rec("p|t", {"open": 4}, 73, "7:3"),  # late too, but its key has no newer row (compacted): kept
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


def test_the_rest_of_a_cut_short_event_delivered_late_stays_out() -> None:
    gate: EventGate[str] = EventGate()
    assert gate.feed(0, (3, 3), 4, False, "A ledger") == []
    assert gate.feed(0, (4, 4), 1, False, "B ledger") == []  # another writer: A's event is abandoned
    assert gate.feed(0, (4, 4), 1, True, "B end") == ["B ledger"]
    assert gate.feed(0, (3, 3), 4, False, "A loads, late") == []
    assert gate.feed(0, (3, 3), 4, True, "A end, late") == []
    assert gate.dropped == 2


def test_a_group_spans_feeds_and_a_later_row_of_the_same_writer_completes_it() -> None:
    """Compaction keeps only the newest terminator per stamp: older events of a writer are known
    complete because the same writer went on."""
    gate: EventGate[str] = EventGate()
    assert gate.feed(0, (5, 5), 1, False, "x") == []
    assert gate.feed(0, (5, 5), 1, False, "y") == []
    assert gate.holding(0) == 2
    assert gate.feed(0, (5, 5), 3, False, "z") == ["x", "y"]
    assert gate.feed(0, (5, 5), None, False, "rewrite") == ["z", "rewrite"]  # ungrouped, same writer
    assert gate.feed(0, None, None, False, "unstamped") == ["unstamped"]
    assert gate.feed(0, (5, 5), 9, True, "end of a compacted event") == []
    assert gate.dropped == 0


def test_close_drops_what_is_pending_and_partitions_are_separate() -> None:
    gate: EventGate[str] = EventGate()
    gate.feed(0, (5, 5), 1, False, "p0")
    gate.feed(1, (5, 5), 1, False, "p1")
    assert gate.close(0) == ["p0"]
    assert gate.close(0) == []
    assert gate.feed(1, (5, 5), 1, True, "end") == ["p1"]
    gate.feed(2, (5, 5), 7, False, "held")
    gate.reset()  # a new recovery pass reads it again
    assert gate.holding(2) == 0


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
# A writer's run: its events, and how many rows of its last event were delivered (None: all, terminator too).
RUN = st.tuples(st.lists(EVENT, min_size=1, max_size=5), st.one_of(st.none(), st.integers(0, 3)))


@settings(max_examples=300, deadline=None)
@given(runs=st.lists(RUN, min_size=1, max_size=4), keep=st.randoms(use_true_random=False))
def test_the_table_is_the_fold_of_complete_events_whatever_was_cut_or_compacted(runs: list, keep: Any) -> None:
    """Writers follow each other (stamps 1, 2, ...); each may die part-way through its last event. Its
    event was not committed, so the next writer handles it first, with the same rows (handlers are
    deterministic: route decides at the record's time). Compaction may then remove any row that a later
    row of its key supersedes, except that rows of the active segment (the log's tail) supersede nothing:
    the tail of a log cut short is never used to clean older rows."""
    log = Log()
    redo: list[tuple[str, Any]] | None = None
    tail = len(log.records)
    for stamp, (own, cut) in enumerate(runs, start=1):
        events = own if redo is None else [redo, *own]
        redo = None
        for n, rows in enumerate(events):
            group = n + 1
            last = n == len(events) - 1
            if cut is not None and last:
                tail = len(log.records)
                for row in rows[: min(cut, len(rows) - 1)]:
                    log.write(stamp, group, row)
                redo = rows
                continue
            for row in rows:
                log.write(stamp, group, row)
            log.end(stamp, group)
            for key, value in rows:
                log.expected[key] = value
            tail = len(log.records)
    cleanable = log.records[:tail]
    superseded = {i for i, r in enumerate(cleanable) if any(s.key == r.key for s in cleanable[i + 1 :])}
    compacted = [r for i, r in enumerate(log.records) if i not in superseded or keep.random() < 0.5]
    want = {k: orjson.dumps(v) for k, v in log.expected.items() if v is not None}
    assert read_table(compacted) == want
