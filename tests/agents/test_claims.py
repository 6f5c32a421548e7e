"""Claims through the stages: a claim finds its lead through the lead index, the first valid one in the
pool's log takes the lead, every claim gets exactly one answer."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.agents.conftest import NOW, Harness, home, lead, policy, policy_changed, raw, rep_changed

pytestmark = pytest.mark.asyncio
POOL = "p"
GRAB = {"strategies": {"default": {"selector": {"type": "claim_pool"}, "scorers": {"load": 1.0}}}}


def claim_record(claim_id: str, rep_id: str, lead_id: str = "lead-1") -> bytes:
    return raw({"claim_id": claim_id, "lead_id": lead_id, "rep_id": rep_id, "requested_at": NOW.isoformat()})


async def send_claim(h: Harness, value: bytes, lead_id: str = "lead-1") -> list[Any]:
    sent = await h.feed("leads", h.settings.topic_claims, home(lead_id), value, lead_id.encode())
    return await h.deliver(sent)


def answers(h: Harness) -> dict[str, dict[str, Any]]:
    return {s.json()["claim_id"]: s.json() for s in h.sent("claim_results")}


async def open_pool(h: Harness, **extra: Any) -> None:
    await h.route(policy_changed(POOL, policy(**GRAB, **extra)))
    for r in ("rep-a", "rep-b"):
        await h.route(rep_changed(POOL, r))
    await h.lead(raw(lead(pool=POOL)), b"lead-1")
    [d] = [s.json() for s in h.sent("assignments")]
    assert d["reason"] == "sent_to_claim_pool"


async def test_two_claims_one_winner_one_rejection_each_answered_once(h: Harness) -> None:
    await open_pool(h)
    await send_claim(h, claim_record("c1", "rep-b"))
    await send_claim(h, claim_record("c2", "rep-a"))
    got = answers(h)
    assert len(h.sent("claim_results")) == 2
    assert (got["c1"]["accepted"], got["c1"]["reason"], got["c1"]["attempt"]) == (True, "claimed", 2)
    assert (got["c2"]["accepted"], got["c2"]["reason"]) == (False, "not_claimable")
    decisions = [s.json() for s in h.sent("assignments")]
    assert [(d["attempt"], d["rep_id"], d["trigger"]) for d in decisions] == [
        (1, None, None),
        (2, "rep-b", "claim"),
    ]
    assert got["c1"]["decision_id"] == decisions[-1]["decision_id"]
    entry = h.table("ledger")[f"{POOL}|lead-1"]
    assert (entry["status"], entry["rep_id"], entry.get("claimed")) == ("open", "rep-b", True)
    assert "lead" not in entry, "the lead is kept only while claimable"
    assert h.table("loads")[f"{POOL}|rep-b"]["claimed"] == 1
    assert h.metrics.claims.labels(result="not_claimable")._value.get() == 1


async def test_a_claim_for_a_lead_never_decided_is_answered_at_once(h: Harness) -> None:
    sent = await send_claim(h, claim_record("c9", "rep-a", lead_id="ghost"), lead_id="ghost")
    [out] = sent
    assert out.topic == h.settings.topic_claim_results and out.key == b"ghost"
    assert (out.json()["reason"], out.json()["pool"], out.json()["accepted"]) == ("unknown_lead", None, False)


async def test_a_lead_returned_by_its_follow_up_sla_can_be_claimed(h: Harness) -> None:
    await h.route(policy_changed(POOL, policy(follow_up={"within": "1h", "max_attempts": 1})))
    for r in ("rep-a", "rep-b"):
        await h.route(rep_changed(POOL, r))
    await h.lead(raw(lead(pool=POOL)), b"lead-1")
    first = h.sent("assignments")[0].json()
    [back] = await h.housekeep("route", h.pool_partition(POOL), NOW + timedelta(hours=2))
    assert back.json()["reason"] == "sent_to_claim_pool"
    await send_claim(h, claim_record("c1", first["rep_id"]))
    assert answers(h)["c1"]["accepted"], "no cooldown in this policy: the previous holder may claim it"
    assert h.sent("assignments")[-1].json()["previous_holders"] == [first["rep_id"]]


async def test_an_invalid_claim_is_dead_lettered(h: Harness) -> None:
    bad = raw({"claim_id": "c1", "lead_id": "lead-1", "requested_at": NOW.isoformat()})
    await h.feed("leads", h.settings.topic_claims, home("lead-1"), bad, b"lead-1")
    [dl] = h.sent("dlq")
    assert dl.header("x-leadrelay-reason") == "schema_violation" and h.sent("claim_results") == []


async def test_the_claim_window_closes_once_and_the_pools_policy_assigns(h: Harness) -> None:
    await open_pool(h, claims={"window": "10m"})
    due = h.table("ledger")[f"{POOL}|lead-1"]["sla_due"]
    assert [k.split("|")[0] for k in h.table("sla")] == [due]
    part = h.pool_partition(POOL)
    assert await h.housekeep("route", part, NOW + timedelta(minutes=9)) == []
    [out] = await h.housekeep("route", part, NOW + timedelta(minutes=11))
    d = out.json()
    assert (d["attempt"], d["trigger"], d["reason"]) == (2, "claim_window", "assigned") and d["rep_id"]
    assert h.table("sla") == {} and h.table("ledger")[f"{POOL}|lead-1"]["status"] == "open"
    assert await h.housekeep("route", part, NOW + timedelta(minutes=12)) == []
    await send_claim(h, claim_record("late", "rep-a"))
    assert answers(h)["late"]["reason"] == "not_claimable"


async def test_a_claim_in_the_window_leaves_nothing_for_the_window_to_do(h: Harness) -> None:
    await open_pool(h, claims={"window": "10m"})
    await send_claim(h, claim_record("c1", "rep-a"))
    assert await h.housekeep("route", h.pool_partition(POOL), NOW + timedelta(minutes=11)) == []
    assert h.table("sla") == {}, "the row left behind is dropped when it comes due"
    assert [s.json()["attempt"] for s in h.sent("assignments")] == [1, 2]
