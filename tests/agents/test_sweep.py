"""sweep_once: finds expired ledger entries and stale parked deals, asks their owners to drop them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agents.sweep import BATCH, sweep_once
from tests.agents.conftest import LONG_AGO, NOW, Kit

pytestmark = pytest.mark.asyncio


async def route(kit: Kit, *records: bytes, pool: str = "p") -> None:
    async with kit.agent("route").test_context() as agent:
        for record in records:
            await agent.put(value=record, key=pool.encode())
        assert all(agent.results.values())


async def match(kit: Kit, *records: tuple[bytes, bytes]) -> None:
    async with kit.agent("match_deals").test_context() as agent:
        for key, value in records:
            await agent.put(value=value, key=key)
        assert all(agent.results.values())


async def closed_lead(kit: Kit, pool: str, lead_id: str, released_at: datetime | None = None) -> None:
    """A lead decided and closed through route; `released_at` pretends the close happened then."""
    await route(kit, kit.lead_arrived(pool, lead_id), kit.deal_arrived(pool, lead_id), pool=pool)
    if released_at is not None:
        kit.closed_long_ago(f"{pool}|{lead_id}", released_at)


def closed_entry(released_at: datetime, closed_at: datetime = LONG_AGO) -> dict:
    return {
        "decision": {},
        "status": "won",
        "rep_id": "rep-a",
        "value": 0.0,
        "closed_at": closed_at.isoformat(),
        "released_at": released_at.isoformat(),
    }


async def test_nothing_to_sweep_sends_nothing(kit: Kit) -> None:
    assert await sweep_once(kit.ctx, datetime.now(UTC)) == 0
    assert kit.sent_total() == dict.fromkeys(kit.sent_total(), 0)


async def test_sweep_hands_expired_items_to_their_owners(kit: Kit) -> None:
    now = datetime.now(UTC)
    await route(kit, kit.rep_changed("p", "rep-a"))
    await closed_lead(kit, "p", "lead-old", LONG_AGO)
    await closed_lead(kit, "p", "lead-recent", now - timedelta(days=1))
    await route(kit, kit.lead_arrived("p", "lead-open-old", created_at=LONG_AGO.isoformat()))
    await closed_lead(kit, "q", "lead-old-q", LONG_AGO)
    # a backfilled deal (closed long ago, applied just now) keeps its entry for the whole retention
    await route(
        kit,
        kit.lead_arrived("p", "lead-backfill"),
        kit.deal_arrived("p", "lead-backfill", closed_at=LONG_AGO.isoformat()),
    )
    # match_deals parks deals with the wall clock; written directly, they can be old already
    kit.park("lead-stale", kit.deal_unrouted("lead-stale", first_seen_at=LONG_AGO))
    kit.park("lead-fresh", kit.deal_unrouted("lead-fresh", first_seen_at=now))
    await match(kit, (b"lead-fresh-2", kit.encode(kit.deal_unrouted("lead-fresh-2", first_seen_at=LONG_AGO))))
    kit.forget_sent()
    tables_before = kit.tables_snapshot()

    assert await sweep_once(kit.ctx, now) == 3

    expired = sorted((s.key, s.json()["kind"], s.json()["pool"], s.json()["lead_ids"]) for s in kit.sent("pool_events"))
    assert expired == [(b"p", "expire", "p", ["lead-old"]), (b"q", "expire", "q", ["lead-old-q"])]
    [pending] = kit.sent("lead_events")
    assert pending.key == b"lead-stale"
    assert pending.json() == {"kind": "pending_expired", "lead_id": "lead-stale"}
    # The timer only reads: the owners change their tables in their own log order.
    assert kit.tables_snapshot() == tables_before
    assert kit.sent("dlq") == []
    assert kit.sent("assignments") == []


async def test_sweep_output_fed_back_removes_the_items(kit: Kit) -> None:
    await closed_lead(kit, "p", "lead-old", LONG_AGO)
    await closed_lead(kit, "p", "lead-recent", datetime.now(UTC) - timedelta(days=1))
    kit.park("lead-stale", kit.deal_unrouted("lead-stale", first_seen_at=LONG_AGO))
    old_index = {"pool": "p", "rep_id": "rep-a", "decision_id": "d", "indexed_at": LONG_AGO.isoformat()}
    kit.write("lead_index", "lead-ancient", old_index)
    kit.write("lead_index", "lead-new", {**old_index, "indexed_at": datetime.now(UTC).isoformat()})
    kit.forget_sent()

    assert await sweep_once(kit.ctx, datetime.now(UTC)) == 3
    [expire] = kit.sent("pool_events")
    index, pending = sorted(kit.sent("lead_events"), key=lambda s: s.json()["kind"])
    assert index.json() == {"kind": "index_expired", "lead_ids": ["lead-ancient"]}
    assert index.key == b"lead-ancient"  # each lead through its own partition
    await route(kit, expire.value)
    await match(kit, (pending.key, pending.value), (index.key, index.value))

    assert set(kit.table("ledger")) == {"p|lead-recent"}
    assert kit.table("parked_deals") == {}
    assert set(kit.table("lead_index")) == {"lead-new"}
    [dl] = kit.sent("dlq")
    assert dl.header("x-leadrelay-reason") == "unknown_lead"
    assert dl.header("x-leadrelay-source-topic") == "deals.closed"
    # A second sweep finds nothing left.
    kit.forget_sent()
    assert await sweep_once(kit.ctx, datetime.now(UTC)) == 0
    assert kit.sent("pool_events") == []


async def test_retention_and_wait_are_measured_from_now(kit: Kit) -> None:
    retention = timedelta(days=kit.ctx.settings.ledger_retention_days)
    wait = timedelta(seconds=kit.ctx.settings.unknown_lead_wait_seconds)
    kit.write("ledger", "p|inside", closed_entry(NOW - retention + timedelta(minutes=1)))
    kit.write("ledger", "p|outside", closed_entry(NOW - retention - timedelta(minutes=1)))
    for lead_id, seen in (("waiting", NOW - wait + timedelta(seconds=1)), ("stale", NOW - wait - timedelta(seconds=1))):
        kit.park(lead_id, kit.deal_unrouted(lead_id, first_seen_at=seen))
    # one stale deal among fresh ones is enough to hand the lead to its owner (which re-checks each)
    kit.park("mixed", kit.deal_unrouted("mixed", first_seen_at=NOW), kit.deal_unrouted("mixed", first_seen_at=LONG_AGO))
    index_retention = timedelta(days=kit.ctx.settings.index_retention_days)
    for lead_id, at in (
        ("kept", NOW - index_retention + timedelta(minutes=1)),
        ("gone", NOW - index_retention - timedelta(minutes=1)),
    ):
        kit.write(
            "lead_index", lead_id, {"pool": "p", "rep_id": None, "decision_id": "d", "indexed_at": at.isoformat()}
        )

    assert await sweep_once(kit.ctx, NOW) == 4
    assert [s.json()["lead_ids"] for s in kit.sent("pool_events")] == [["outside"]]
    assert sorted(s.key for s in kit.sent("lead_events")) == [b"gone", b"mixed", b"stale"]

    kit.forget_sent()
    later = NOW + timedelta(days=1)
    assert await sweep_once(kit.ctx, later) == 7
    assert sorted(kit.sent("pool_events")[0].json()["lead_ids"]) == ["inside", "outside"]
    assert sorted(s.key for s in kit.sent("lead_events")) == [b"gone", b"kept", b"mixed", b"stale", b"waiting"]


async def test_entry_without_released_at_expires_by_its_closed_at(kit: Kit) -> None:
    """Entries written before released_at existed still leave the ledger (by the deal's closed_at)."""
    old = {k: v for k, v in closed_entry(LONG_AGO).items() if k != "released_at"}
    kit.write("ledger", "p|legacy", old)
    kit.write("ledger", "p|recent-legacy", {**old, "closed_at": NOW.isoformat()})
    assert await sweep_once(kit.ctx, NOW) == 1
    assert [s.json()["lead_ids"] for s in kit.sent("pool_events")] == [["legacy"]]


async def test_expired_leads_are_batched_per_pool(kit: Kit) -> None:
    n = BATCH + 1
    for i in range(n):
        kit.write("ledger", f"p|lead-{i:04d}", closed_entry(LONG_AGO))
    kit.write("ledger", "p|open", {"decision": {}, "status": "open", "rep_id": "rep-a", "value": 0.0})
    assert kit.ctx.tables.ledger.get("p|lead-0000") is not None  # direct store writes are visible to reads

    assert await sweep_once(kit.ctx, datetime.now(UTC)) == n
    batches = [s.json()["lead_ids"] for s in kit.sent("pool_events")]
    assert [len(b) for b in batches] == [BATCH, 1]
    assert sorted(b for batch in batches for b in batch) == [f"lead-{i:04d}" for i in range(n)]
    assert {s.key for s in kit.sent("pool_events")} == {b"p"}
