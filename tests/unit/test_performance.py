"""routing.performance: daily event-time buckets, N-day windows, retention of KEEP_DAYS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from routing.performance import KEEP_DAYS, Window, record, window
from tests.factories import NOW, make_deal


def _at(days_ago: float, hour: int = 12) -> datetime:
    return datetime(NOW.year, NOW.month, NOW.day, hour, tzinfo=UTC) - timedelta(days=days_ago)


def _record_all(deals):
    buckets: dict[str, list[float]] = {}
    for outcome, amount, at in deals:
        buckets = record(buckets, outcome, amount, at)
    return buckets


def test_record_adds_to_the_deals_day():
    buckets = _record_all([("won", 100.0, _at(0)), ("won", 50.0, _at(0, hour=1)), ("lost", 70.0, _at(1))])
    today, yesterday = NOW.date().isoformat(), (NOW.date() - timedelta(days=1)).isoformat()
    assert buckets == {today: [2, 0, 150.0], yesterday: [0, 1, 0.0]}


def test_record_does_not_mutate_its_input():
    before = {NOW.date().isoformat(): [1, 0, 10.0]}
    snapshot = {k: list(v) for k, v in before.items()}
    after = record(before, "won", 5.0, NOW)
    assert before == snapshot
    assert after[NOW.date().isoformat()] == [2, 0, 15.0]


def test_lost_deals_add_no_revenue():
    buckets = _record_all([("lost", 1000.0, _at(0)), ("lost", 5.0, _at(2))])
    assert window(buckets, 30, NOW) == Window(won=0, lost=2, revenue=0.0)


DEALS = [
    ("won", 10.0, _at(0)),
    ("won", 20.0, _at(6)),  # last day inside the 7-day window
    ("lost", 0.0, _at(6)),
    ("won", 40.0, _at(7)),  # first day outside the 7-day window
    ("lost", 0.0, _at(29)),  # last day inside the 30-day window
    ("won", 80.0, _at(30)),  # outside 30 days
    ("won", 160.0, _at(-1)),  # tomorrow (event time ahead of `now`): in no window ending today
]


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        (1, Window(won=1, lost=0, revenue=10.0)),
        (7, Window(won=2, lost=1, revenue=30.0)),
        (8, Window(won=3, lost=1, revenue=70.0)),
        (30, Window(won=3, lost=2, revenue=70.0)),
        (31, Window(won=4, lost=2, revenue=150.0)),
    ],
)
def test_window_over_event_time(days, expected):
    assert window(_record_all(DEALS), days, NOW) == expected


def test_window_is_independent_of_time_of_day_of_now():
    buckets = _record_all(DEALS)
    early = NOW.replace(hour=0, minute=0)
    late = NOW.replace(hour=23, minute=59)
    assert window(buckets, 7, early) == window(buckets, 7, late)


def test_window_accepts_stored_json_lists():
    # buckets come back from a table as JSON: ints may be floats
    stored = {NOW.date().isoformat(): [1.0, 2.0, 3.5]}
    assert window(stored, 7, NOW) == Window(1, 2, 3.5)


def test_window_closed_count():
    assert Window(won=3, lost=4).closed == 7
    assert window({}, 7, NOW) == Window()


def test_buckets_older_than_keep_days_are_dropped():
    old = [("won", 1.0, _at(KEEP_DAYS + 5)), ("won", 1.0, _at(KEEP_DAYS)), ("won", 1.0, _at(KEEP_DAYS - 1))]
    buckets = _record_all(old)
    assert len(buckets) == 3  # all within KEEP_DAYS of the newest day so far
    newest = record(buckets, "won", 1.0, NOW)
    assert sorted(newest) == [(NOW.date() - timedelta(days=KEEP_DAYS - 1)).isoformat(), NOW.date().isoformat()]
    assert window(newest, 10_000, NOW) == Window(won=2, lost=0, revenue=2.0)


@pytest.mark.parametrize(("days_ago", "kept"), [(KEEP_DAYS - 1, True), (KEEP_DAYS, False), (KEEP_DAYS + 30, False)])
def test_keep_days_boundary(days_ago, kept):
    buckets = _record_all([("won", 1.0, _at(days_ago)), ("won", 1.0, _at(0))])
    assert ((NOW.date() - timedelta(days=days_ago)).isoformat() in buckets) is kept
    assert NOW.date().isoformat() in buckets


def test_late_old_deal_does_not_drop_newer_days():
    buckets = _record_all([("won", 1.0, _at(0)), ("won", 1.0, _at(KEEP_DAYS + 10))])
    assert list(buckets) == [NOW.date().isoformat()]


def test_same_instant_lands_in_the_same_day_whatever_the_senders_offset():
    """BUG: the bucket day is the *sender's* local date (at.date() keeps the offset), not the UTC date.

    2024-01-07T20:00-05:00 and 2024-01-08T01:00Z are the same instant, but they land in different buckets,
    so 7/30-day windows (computed from a UTC `now`) miss or include deals depending on the sender's zone.
    """
    local = make_deal(closed_at="2024-01-07T20:00:00-05:00")
    utc = make_deal(closed_at="2024-01-08T01:00:00Z")
    assert local.closed_at == utc.closed_at
    assert record({}, "won", 1.0, local.closed_at) == record({}, "won", 1.0, utc.closed_at)
