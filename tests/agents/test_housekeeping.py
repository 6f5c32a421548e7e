"""Housekeeping inside each task's own transaction: closed ledger entries past retention (route), parked
deals past their wait and index entries past retention (leads)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agents.route import SWEEP_ROWS
from tests.agents.conftest import LONG_AGO, NOW, Harness, deal_arrived, deal_unrouted, home, lead_arrived, rep_changed

pytestmark = pytest.mark.asyncio


async def closed_lead(h: Harness, pool: str, lead_id: str, released_at: datetime | None = None) -> None:
    """A lead decided and closed through route; `released_at` pretends the close happened then."""
    await h.route(lead_arrived(pool, lead_id), deal_arrived(pool, lead_id), pool=pool)
    if released_at is not None:
        h.close_long_ago(pool, lead_id, released_at)


def closed_entry(released_at: datetime, closed_at: datetime = LONG_AGO) -> dict:
    return {
        "decision": {},
        "status": "won",
        "rep_id": "rep-a",
        "value": 0.0,
        "closed_at": closed_at.isoformat(),
        "released_at": released_at.isoformat(),
    }


def index_entry(at: datetime) -> dict:
    return {"pool": "p", "rep_id": None, "decision_id": None, "indexed_at": at.isoformat()}


async def test_nothing_to_clean_sends_and_writes_nothing(h: Harness) -> None:
    assert await h.housekeep_everywhere(datetime.now(UTC)) == []
    assert h.snapshot() == {key: {} for key in h.snapshot()}


async def test_route_housekeeping_removes_closed_ledger_entries_past_retention_only(h: Harness) -> None:
    now = datetime.now(UTC)
    await h.route(rep_changed("p", "rep-a"))
    await closed_lead(h, "p", "lead-old", LONG_AGO)
    await closed_lead(h, "p", "lead-recent", now - timedelta(days=1))
    await h.route(lead_arrived("p", "lead-open-old", created_at=LONG_AGO.isoformat()))
    await closed_lead(h, "q", "lead-old-q", LONG_AGO)
    # a backfilled deal (closed long ago, applied just now) keeps its entry for the whole retention
    await h.route(
        lead_arrived("p", "lead-backfill"), deal_arrived("p", "lead-backfill", closed_at=LONG_AGO.isoformat())
    )
    h.forget()

    assert await h.housekeep_everywhere(now) == []  # applied in place: no event round a topic
    assert set(h.table("ledger")) == {"p|lead-recent", "p|lead-open-old", "p|lead-backfill"}
    assert h.table("loads")["p|rep-a"]["open"] == 1  # lead-open-old still holds its load


async def test_leads_housekeeping_gives_up_parked_deals_and_forgets_old_index_entries(h: Harness) -> None:
    now = datetime.now(UTC)
    h.seed_parked("lead-stale", deal_unrouted("lead-stale", first_seen_at=LONG_AGO))
    h.seed_parked("lead-fresh", deal_unrouted("lead-fresh", first_seen_at=now))
    h.seed("leads", home("lead-ancient"), {"lead-index|lead-ancient": index_entry(LONG_AGO)})
    h.seed("leads", home("lead-new"), {"lead-index|lead-new": index_entry(now)})

    [dl] = await h.housekeep_everywhere(now)
    assert dl.key == b"lead-stale"
    assert dl.header("x-leadrelay-reason") == "unknown_lead"
    assert dl.header("x-leadrelay-source-topic") == "deals.closed"
    assert set(h.table("parked-deals")) == {"lead-fresh"}
    assert set(h.table("lead-index")) == {"lead-new"}

    # A second step finds nothing left.
    rows = h.snapshot()
    assert await h.housekeep_everywhere(now) == []
    assert h.snapshot() == rows


async def test_retention_and_wait_are_measured_from_now(h: Harness) -> None:
    retention = timedelta(days=h.settings.ledger_retention_days)
    wait = timedelta(seconds=h.settings.unknown_lead_wait_seconds)
    h.seed_route("p", {"ledger|inside": closed_entry(NOW - retention + timedelta(minutes=1))})
    h.seed_route("p", {"ledger|outside": closed_entry(NOW - retention - timedelta(minutes=1))})
    for lead_id, seen in (("waiting", NOW - wait + timedelta(seconds=1)), ("stale", NOW - wait - timedelta(seconds=1))):
        h.seed_parked(lead_id, deal_unrouted(lead_id, first_seen_at=seen))
    # one stale deal among fresh ones is given up; the fresh one keeps waiting
    h.seed_parked(
        "mixed",
        deal_unrouted("mixed", amount=1.0, first_seen_at=NOW),
        deal_unrouted("mixed", amount=2.0, first_seen_at=LONG_AGO),
    )
    index_retention = timedelta(days=h.settings.index_retention_days)
    for lead_id, at in (
        ("kept", NOW - index_retention + timedelta(minutes=1)),
        ("gone", NOW - index_retention - timedelta(minutes=1)),
    ):
        h.seed("leads", home(lead_id), {f"lead-index|{lead_id}": index_entry(at)})

    sent = await h.housekeep_everywhere(NOW)
    assert sorted(s.key or b"" for s in sent) == [b"mixed", b"stale"]
    assert [s.json()["amount"] for s in sent if s.key == b"mixed"] == [2.0]
    assert set(h.table("ledger")) == {"p|inside"}
    assert set(h.table("parked-deals")) == {"waiting", "mixed"}
    assert set(h.table("lead-index")) == {"kept"}

    later = NOW + timedelta(days=1)
    sent = await h.housekeep_everywhere(later)
    assert sorted(s.key or b"" for s in sent) == [b"mixed", b"waiting"]
    assert h.table("ledger") == {}
    assert h.table("parked-deals") == {}
    assert h.table("lead-index") == {}


async def test_entry_without_released_at_expires_by_its_closed_at(h: Harness) -> None:
    """Entries written before released_at existed still leave the ledger (by the deal's closed_at)."""
    old = {k: v for k, v in closed_entry(LONG_AGO).items() if k != "released_at"}
    h.seed_route("p", {"ledger|legacy": old, "ledger|recent-legacy": {**old, "closed_at": NOW.isoformat()}})
    await h.housekeep_everywhere(NOW)
    assert set(h.table("ledger")) == {"p|recent-legacy"}


async def test_a_housekeeping_step_looks_at_a_bounded_number_of_rows_and_goes_on_from_there(h: Harness) -> None:
    n = SWEEP_ROWS + 1
    h.seed_route("p", {f"ledger|lead-{i:05d}": closed_entry(LONG_AGO) for i in range(n)})
    h.seed_route("p", {"ledger|open": {"decision": {}, "status": "open", "rep_id": "rep-a", "value": 0.0}})
    partition = h.pool_partition("p")

    assert await h.housekeep("route", partition, datetime.now(UTC)) == []
    assert set(h.table("ledger")) == {f"p|lead-{n - 1:05d}", "p|open"}  # the first step's rows are gone
    await h.housekeep("route", partition, datetime.now(UTC))
    assert set(h.table("ledger")) == {"p|open"}
