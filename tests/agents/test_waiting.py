"""Waiting for capacity through the stages: leads everyone was too full for wait in their pool and are
assigned, in order, when a deal, a closing activity or the roster frees capacity; a maximum wait sends
them to the open pool once."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from routing import sla
from tests.agents.conftest import NOW, Harness, deal, home, lead, policy, policy_changed, raw, rep_changed

pytestmark = pytest.mark.asyncio
POOL = "p"


async def full_pool(h: Harness, **waiting: Any) -> None:
    """Two reps with room for one lead each, both taken (lead-a, lead-b)."""
    await h.route(policy_changed(POOL, policy(waiting=waiting)))
    for r in "ab":
        await h.route(rep_changed(POOL, f"rep-{r}", capacity=1))
    for x in "ab":
        await decide(h, f"lead-{x}")


async def decide(h: Harness, lead_id: str, at: Any = NOW, **fields: Any) -> dict[str, Any]:
    await h.lead(raw(lead(lead_id=lead_id, pool=POOL, **fields)), lead_id.encode(), at=at)
    return decisions(h, lead_id)[-1]


def decisions(h: Harness, lead_id: str) -> list[dict[str, Any]]:
    return [s.json() for s in h.sent("assignments") if s.key == lead_id.encode()]


def ledger(h: Harness, lead_id: str) -> dict[str, Any]:
    entry: dict[str, Any] = h.table("ledger")[f"{POOL}|{lead_id}"]
    return entry


def queue(h: Harness) -> list[str]:
    return [k.rsplit("|", 1)[1] for k in sorted(h.table("wait"))]


async def close_by_deal(h: Harness, lead_id: str, at: Any) -> list[Any]:
    return await h.deal(raw(deal(lead_id=lead_id, closed_at=at.isoformat())), lead_id.encode(), at=at)


async def test_waiting_leads_are_assigned_in_order_as_deals_free_capacity(h: Harness) -> None:
    await full_pool(h)
    arrivals = [("small-old", 100.0, 50), ("big", 9000.0, 5), ("small-new", 100.0, 10)]
    for lid, value, minutes_ago in arrivals:
        d = await decide(h, lid, estimated_value=value, created_at=(NOW - timedelta(minutes=minutes_ago)).isoformat())
        assert (d["reason"], d["rep_id"]) == ("no_eligible_rep", None)
        assert ledger(h, lid)["status"] == "waiting"
    assert queue(h) == ["big", "small-old", "small-new"], "value first, then age"
    assert h.metrics.waiting.labels(pool=POOL)._value.get() == 3
    assert "contact" not in str(h.table("wait")) and "contact" not in str(ledger(h, "big")["lead"])
    freed = []
    for i, holder in enumerate(["lead-a", "lead-b", "big"], start=1):
        at = NOW + timedelta(minutes=10 * i)
        holder_rep = ledger(h, holder)["rep_id"]
        await close_by_deal(h, holder, at)
        [taken] = [lid for lid, *_ in arrivals if lid not in freed and ledger(h, lid)["status"] == "open"]
        freed.append(taken)
        d = decisions(h, taken)[-1]
        assert (d["attempt"], d["trigger"], d["rep_id"]) == (2, "capacity_freed", holder_rep)
        assert datetime.fromisoformat(d["decided_at"]) == at, "the freeing record's log time"
        assert ledger(h, taken)["waited_seconds"] == d["waited_seconds"] == 600.0 * i
        assert any(f"waited {600 * i}s" in n for n in d["explanation"]["notes"])
    assert freed == ["big", "small-old", "small-new"]
    assert queue(h) == []
    assert h.metrics.waiting.labels(pool=POOL)._value.get() == 0
    assert h.metrics.waiting_assigned.labels(pool=POOL)._value.get() == 3


async def test_max_wait_sends_a_lead_to_the_open_pool_exactly_once(h: Harness) -> None:
    await full_pool(h, max_wait="1h")
    await decide(h, "lead-w")
    due = sla.parse_stamp(ledger(h, "lead-w")["sla_due"])
    assert due == NOW + timedelta(hours=1)
    partition = h.pool_partition(POOL)
    assert await h.housekeep("route", partition, due - timedelta(seconds=1)) == []
    [out] = await h.housekeep("route", partition, due + timedelta(seconds=2))
    d = out.json()
    assert (d["reason"], d["attempt"], d["trigger"], d["rep_id"]) == ("sent_to_claim_pool", 2, "max_wait", None)
    assert ledger(h, "lead-w")["status"] == "claimable" and queue(h) == []
    assert await h.housekeep("route", partition, due + timedelta(hours=5)) == []
    h.restart()
    assert await h.housekeep("route", partition, due + timedelta(hours=6)) == []
    await close_by_deal(h, "lead-a", NOW + timedelta(hours=7))
    assert len(decisions(h, "lead-w")) == 2, "a claimable lead no longer waits for capacity"
    assert h.metrics.waiting_timeouts.labels(pool=POOL)._value.get() == 1


async def test_a_lead_closed_by_activity_while_waiting_leaves_the_queue(h: Harness) -> None:
    await full_pool(h, max_wait="1h")
    await decide(h, "lead-w")
    assert queue(h) == ["lead-w"]
    value = raw({"lead_id": "lead-w", "kind": "cancelled", "occurred_at": NOW.isoformat()})
    await h.deliver(await h.feed("leads", h.settings.topic_lead_activity, home("lead-w"), value, b"lead-w"))
    assert ledger(h, "lead-w")["status"] == "cancelled" and queue(h) == [] and h.table("sla") == {}
    await close_by_deal(h, "lead-a", NOW + timedelta(minutes=5))
    assert len(decisions(h, "lead-w")) == 1, "nothing assigns a closed lead"
    assert await h.housekeep("route", h.pool_partition(POOL), NOW + timedelta(hours=2)) == []


async def test_a_new_rep_takes_waiting_leads_and_without_the_option_nothing_waits(h: Harness) -> None:
    await full_pool(h)
    await decide(h, "lead-w")
    await h.route(rep_changed(POOL, "rep-c", capacity=1), at=NOW + timedelta(minutes=1))
    d = decisions(h, "lead-w")[-1]
    assert (d["rep_id"], d["trigger"]) == ("rep-c", "capacity_freed")
    await h.route(policy_changed(POOL, policy(version=3)))
    await decide(h, "lead-x")
    assert ledger(h, "lead-x")["status"] == "unassigned" and queue(h) == []


async def test_a_follow_up_sla_that_releases_its_silent_rep_gives_it_the_waiting_lead(h: Harness) -> None:
    await h.route(policy_changed(POOL, policy(waiting={"max_wait": "3h"}, follow_up={"within": "1h"})))
    for r in "ab":
        await h.route(rep_changed(POOL, f"rep-{r}", capacity=1))
    silent = (await decide(h, "lead-a"))["rep_id"]
    await decide(h, "lead-b")
    await decide(h, "lead-w")
    assert queue(h) == ["lead-w"]
    partition = h.pool_partition(POOL)
    fired = NOW + timedelta(hours=1, seconds=1)
    out = [s.json() for s in await h.housekeep("route", partition, fired)]
    by_lead = {d["lead_id"]: d for d in out}
    assert by_lead["lead-a"]["reason"] == "sent_to_claim_pool", "nobody else had room"
    w = by_lead["lead-w"]
    assert (w["rep_id"], w["trigger"], w["attempt"]) == (silent, "capacity_freed", 2)
    assert datetime.fromisoformat(w["decided_at"]) == fired
    assert queue(h) == [] and ledger(h, "lead-w")["waited_seconds"] == w["waited_seconds"] == 3601.0
    follow_up = sla.timer_key(ledger(h, "lead-w")["sla_due"], POOL, "lead-w")
    assert [k for k in h.table("sla") if k.endswith("|lead-w")] == [follow_up], "its max_wait timer is gone"
    later = [s.json() for s in await h.housekeep("route", partition, NOW + timedelta(hours=4))]
    assert "max_wait" not in [d["trigger"] for d in later]
