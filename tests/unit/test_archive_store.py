"""The archive's database on SQLite: idempotent upserts, export filters, CSV and Parquet round trips.

tests/integration/test_archive_postgres.py runs the same tests on a real PostgreSQL server (its own `store`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from streams.archive.archiver import row_of
from streams.archive.export import Query, export
from streams.archive.store import ArchiveStore, Row
from streams.archive.tables import DEALS, DECISIONS, InvalidRecord
from tests.archive_support import T0, Consumed, consumed, make_deal, make_decision

D, F = "leads.assignments", "deals.closed"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ArchiveStore]:
    s = ArchiveStore(f"sqlite:///{tmp_path}/archive.sqlite3")
    try:
        yield s
    finally:
        s.close()


def rows(records: list[Consumed]) -> list[Row]:
    return [row_of(DECISIONS if r.topic == D else DEALS, r) for r in records]


def ids(result: list[tuple[object, ...]]) -> list[object]:
    return [r[0] for r in result]


def test_a_batch_written_twice_leaves_the_same_rows(store: ArchiveStore) -> None:
    batch = rows(consumed(D, [make_decision(f"L{i}", minutes=i) for i in range(5)]))
    assert store.upsert(batch, now=T0) == {"decisions": 5}
    first = store.select(DECISIONS)
    assert store.upsert(batch, now=T0 + timedelta(hours=1)) == {"decisions": 5}
    assert store.count("decisions") == 5
    assert store.select(DECISIONS) == first, "same rows, first archived_at kept"


def test_a_re_emitted_decision_is_one_row_pointing_at_its_newest_copy(store: ArchiveStore) -> None:
    d = make_decision("L1")
    store.upsert(rows(consumed(D, [d], first_offset=7)))
    store.upsert(rows(consumed(D, [d], partition=0, first_offset=19)))
    [row] = store.select(DECISIONS)
    names = [n for n, _ in store.columns(DECISIONS)]
    values = dict(zip(names, row, strict=True))
    assert values["source_offset"] == 19 and values["decision_id"] == d.decision_id


def test_queryable_columns_and_the_whole_record_are_kept(store: ArchiveStore) -> None:
    d = make_decision("L1", attempt=2)
    [record] = consumed(D, [d])
    store.upsert([row_of(DECISIONS, record)])
    [row] = store.select(DECISIONS)
    v = dict(zip([n for n, _ in store.columns(DECISIONS)], row, strict=True))
    assert (v["lead_id"], v["pool"], v["rep_id"], v["attempt"], v["strategy"], v["variant"]) == (
        "L1",
        "dach",
        "anna",
        2,
        "balanced",
        "b",
    )
    assert v["decided_at"] == d.decided_at and v["lead_created_at"] == d.lead_created_at
    assert v["score"] == 0.75 and v["policy_version"] == 3 and v["reason"] == "assigned"
    assert orjson.loads(v["record"]) == orjson.loads(record.value)


def test_deals_are_keyed_by_lead_and_close_time(store: ArchiveStore) -> None:
    won = make_deal("L1")
    again = make_deal("L1")  # the CRM sent it twice
    later = make_deal("L1", minutes=90, outcome="lost")
    store.upsert(rows(consumed(F, [won, again, later])))
    assert store.count("deals") == 2
    assert [r[0] for r in store.select(DEALS)] == [
        f"L1@{won.closed_at.isoformat(timespec='microseconds')}",
        f"L1@{later.closed_at.isoformat(timespec='microseconds')}",
    ]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (None, "empty value"),
        (b'{"lead_id": "L1", "decided_at": "2026-11-02T09:00:00Z"}', "decision_id: missing"),
        (b'{"decision_id": "x", "lead_id": "L1", "decided_at": "yesterday"}', "decided_at: not a time"),
        (
            b'{"decision_id": "x", "lead_id": "L1", "decided_at": "2026-11-02T09:00:00Z", "attempt": "two"}',
            "attempt: not a int",
        ),
    ],
)
def test_records_that_cannot_be_keyed_or_typed_are_refused_by_field(value: bytes | None, problem: str) -> None:
    with pytest.raises(InvalidRecord, match=problem):
        row_of(DECISIONS, Consumed(D, 0, 0, value))


def test_a_time_without_an_offset_is_utc(store: ArchiveStore) -> None:
    body = make_decision("L1").model_dump(mode="json") | {"decided_at": "2026-11-02T09:00:00"}
    store.upsert([row_of(DECISIONS, Consumed(D, 0, 0, orjson.dumps(body)))])
    [row] = store.select(DECISIONS, since=T0, until=T0 + timedelta(seconds=1))
    assert row[0] == body["decision_id"]


# --- export filters --------------------------------------------------------------------------------


@pytest.fixture
def history(store: ArchiveStore) -> ArchiveStore:
    """Six decisions over six hours in two pools and three reps; L1 reassigned from anna to bernd; deals."""
    decisions = [
        make_decision("L1", minutes=0, rep_id="anna"),
        make_decision("L1", attempt=2, minutes=30, rep_id="bernd"),
        make_decision("L2", minutes=60, rep_id="anna"),
        make_decision("L3", minutes=120, pool="emea", rep_id="emma"),
        make_decision("L4", minutes=180, rep_id=None),
        make_decision("L5", minutes=300, pool="emea", rep_id="anna"),
    ]
    deals = [
        make_deal("L1", minutes=400),  # held by bernd (latest attempt)
        make_deal("L2", minutes=410, rep_id="emma"),  # credited to emma explicitly
        make_deal("L3", minutes=420, outcome="lost"),
        make_deal("X9", minutes=430, pool="emea", rep_id="emma"),  # a lead never decided here
    ]
    store.upsert(rows(consumed(D, decisions)) + rows(consumed(F, deals)))
    return store


def lead_ids(store: ArchiveStore, table: str, **query: object) -> list[str]:
    spec = DECISIONS if table == "decisions" else DEALS
    names = [n for n, _ in store.columns(spec)]
    at = names.index("lead_id")
    return [r[at] for r in store.select(spec, **query)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, ["L1", "L1", "L2", "L3", "L4", "L5"]),
        ({"since": T0 + timedelta(minutes=30)}, ["L1", "L2", "L3", "L4", "L5"]),
        ({"until": T0 + timedelta(minutes=60)}, ["L1", "L1"]),  # until is exclusive
        ({"since": T0 + timedelta(minutes=60), "until": T0 + timedelta(minutes=181)}, ["L2", "L3", "L4"]),
        ({"pool": "emea"}, ["L3", "L5"]),
        ({"rep": "anna"}, ["L1", "L2", "L5"]),
        ({"pool": "dach", "rep": "anna"}, ["L1", "L2"]),
        ({"pool": "nowhere"}, []),
    ],
)
def test_decisions_by_time_pool_and_rep(history: ArchiveStore, query: dict[str, object], expected: list[str]) -> None:
    assert lead_ids(history, "decisions", **query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, ["L1", "L2", "L3", "X9"]),
        ({"pool": "dach"}, ["L1", "L2"]),  # through the leads' decisions
        ({"pool": "emea"}, ["L3", "X9"]),  # X9 names its pool
        ({"rep": "bernd"}, ["L1"]),  # the holder at close: the latest attempt's rep
        ({"rep": "anna"}, []),  # anna held L1 before, and L2 is credited to emma
        ({"rep": "emma"}, ["L2", "L3", "X9"]),
        ({"since": T0 + timedelta(minutes=405), "until": T0 + timedelta(minutes=421)}, ["L2", "L3"]),
    ],
)
def test_deals_by_time_pool_and_rep(history: ArchiveStore, query: dict[str, object], expected: list[str]) -> None:
    assert lead_ids(history, "deals", **query) == expected


# --- CSV and Parquet --------------------------------------------------------------------------------


def test_csv_round_trip(history: ArchiveStore, tmp_path: Path) -> None:
    out = tmp_path / "dach.csv"
    assert export(history, Query(pool="dach"), "csv", str(out)) == 4
    with out.open(newline="") as fh:
        got = list(csv.DictReader(fh))
    expected = history.select(DECISIONS, pool="dach")
    names = [n for n, _ in history.columns(DECISIONS)]
    assert list(got[0]) == names
    for row, want in zip(got, expected, strict=True):
        w = dict(zip(names, want, strict=True))
        assert row["decision_id"] == w["decision_id"] and row["attempt"] == str(w["attempt"])
        assert row["decided_at"] == w["decided_at"].isoformat(timespec="microseconds")
        assert row["rep_id"] == (w["rep_id"] or "")
        assert orjson.loads(row["record"]) == orjson.loads(w["record"])


def test_csv_to_standard_output(history: ArchiveStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert export(history, Query(table="deals", rep="bernd"), "csv", None) == 1
    [row] = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert row["lead_id"] == "L1" and row["outcome"] == "won" and float(row["amount"]) == 1200.5


def test_parquet_round_trip_keeps_types(history: ArchiveStore, tmp_path: Path) -> None:
    out = tmp_path / "all.parquet"
    assert export(history, Query(), "parquet", str(out)) == 6
    table = pq.read_table(out)
    assert table.column_names == [n for n, _ in history.columns(DECISIONS)]
    assert str(table.schema.field("decided_at").type) == "timestamp[us, tz=UTC]"
    assert str(table.schema.field("attempt").type) == "int64"
    assert str(table.schema.field("score").type) == "double"
    back = table.to_pylist()
    want = history.select(DECISIONS)
    names = [n for n, _ in history.columns(DECISIONS)]
    assert [tuple(r[n] for n in names) for r in back] == want


def test_an_empty_export_still_has_its_columns(store: ArchiveStore, tmp_path: Path) -> None:
    out = tmp_path / "none.parquet"
    assert export(store, Query(pool="nowhere"), "parquet", str(out)) == 0
    assert pq.read_table(out).num_rows == 0 and "decided_at" in pq.read_table(out).column_names


def test_activity_and_claim_answers_are_kept_once_and_found_through_their_lead(history: ArchiveStore) -> None:
    """The lifecycle's records: activity keyed by lead, time and kind (it has no id), claims by their
    answer's claim_id; both written twice stay one row, and activity without a pool is found by its lead."""
    from schemas.events import ClaimResult, LeadActivity
    from streams.archive.tables import ACTIVITY, CLAIMS

    touch = LeadActivity(lead_id="L2", kind="first_contact", occurred_at=T0 + timedelta(minutes=90))
    closed = LeadActivity(lead_id="L3", kind="disqualified", rep_id="emma", occurred_at=T0 + timedelta(minutes=200))
    won = ClaimResult(
        claim_id="c-1",
        lead_id="L4",
        rep_id="anna",
        pool="dach",
        accepted=True,
        reason="claimed",
        decision_id="d-L4-2",
        attempt=2,
        answered_at=T0 + timedelta(minutes=240),
    )
    lost = won.model_copy(update={"claim_id": "c-2", "rep_id": "emma", "accepted": False, "reason": "not_claimable"})
    for _ in range(2):
        history.upsert(
            [row_of(ACTIVITY, r) for r in consumed("leads.activity", [touch, closed])]
            + [row_of(CLAIMS, r) for r in consumed("leads.claim-results", [won, lost])]
        )
    assert history.count("activity") == 2 and history.count("claims") == 2
    at = [n for n, _ in history.columns(ACTIVITY)].index("lead_id")
    assert [r[at] for r in history.select(ACTIVITY, pool="dach")] == ["L2"]  # through L2's decision
    assert [r[at] for r in history.select(ACTIVITY, pool="emea")] == ["L3"]
    reason = [n for n, _ in history.columns(CLAIMS)].index("reason")
    assert [r[reason] for r in history.select(CLAIMS)] == ["claimed", "not_claimable"]
