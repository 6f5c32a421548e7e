"""Availability changes in a pool's log (issue 12 item 5): a rep turning unavailable hands back its
untouched leads (per policy), a rep leaving has its open leads reassigned, a returning rep ramps up, and
availability tiers accept away reps when nobody available qualifies."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from routing import sla
from tests.agents.conftest import NOW, Harness, lead, lead_arrived, policy, policy_changed, raw, rep_changed, rep_left
from tests.agents.test_lifecycle import act, activity, decisions, ledger, loads

pytestmark = pytest.mark.asyncio
POOL = "p"


def held(h: Harness) -> list[str]:
    """The `held` rows as rep|lead."""
    return sorted(k.split("|", 1)[1] for k in h.table("held"))


async def pool_of(h: Harness, *reps: str, **availability: Any) -> None:
    await h.route(policy_changed(POOL, policy(availability=availability) if availability else policy()))
    for r in reps:
        await h.route(rep_changed(POOL, r))


async def give(h: Harness, rep_id: str, *lead_ids: str) -> None:
    """Leads decided now, each checked to go to `rep_id`."""
    for lead_id in lead_ids:
        await h.lead(raw(lead(lead_id=lead_id, pool=POOL)), lead_id.encode())  # through the lead index
        assert decisions(h, lead_id)[-1]["rep_id"] == rep_id


async def test_a_rep_turning_offline_hands_back_its_untouched_leads_per_policy(h: Harness) -> None:
    await pool_of(h, "rep-a", **{"hand_back": ["offline"]})
    await give(h, "rep-a", "lead-1", "lead-2")
    await activity(h, act("first_contact", lead_id="lead-2", rep_id="rep-a"), "lead-2")
    await h.route(rep_changed(POOL, "rep-b"))
    assert held(h) == ["rep-a|lead-1", "rep-a|lead-2"]
    assert "contact" not in h.table("held")["p|rep-a|lead-1"]["lead"], "no contact data in a held row"

    await h.route(rep_changed(POOL, "rep-a", availability="offline"), at=NOW + timedelta(minutes=3))

    moved = decisions(h, "lead-1")[-1]
    assert (moved["rep_id"], moved["attempt"], moved["trigger"]) == ("rep-b", 2, "rep_unavailable")
    assert moved["previous_holders"] == ["rep-a"]
    assert moved["decided_at"].startswith((NOW + timedelta(minutes=3)).isoformat()[:19]), "the roster change's log time"
    assert any("rep-a turned offline" in n for n in moved["explanation"]["notes"])
    assert len(decisions(h, "lead-2")) == 1, "a lead the rep worked on stays with it"
    assert loads(h) == {"rep-a": 1, "rep-b": 1}
    assert held(h) == ["rep-a|lead-2", "rep-b|lead-1"]
    assert (
        h.registry.get_sample_value(
            "leadrelay_hand_backs_total", {"trigger": "rep_unavailable", "outcome": "reassigned"}
        )
        == 1
    )

    await h.route(rep_changed(POOL, "rep-a", availability="away"))  # offline -> away: nothing more to give
    assert len(decisions(h, "lead-2")) == 1


async def test_without_hand_back_an_offline_rep_keeps_its_leads(h: Harness) -> None:
    await pool_of(h, "rep-a")
    await give(h, "rep-a", "lead-1")
    await h.route(rep_changed(POOL, "rep-b"), rep_changed(POOL, "rep-a", availability="offline"))
    assert len(decisions(h, "lead-1")) == 1 and loads(h)["rep-a"] == 1


async def test_a_departed_reps_open_leads_are_reassigned_touched_or_not(h: Harness) -> None:
    await pool_of(h, "rep-a")
    await give(h, "rep-a", "lead-1", "lead-2")
    await activity(h, act("first_contact", lead_id="lead-2", rep_id="rep-a"), "lead-2")
    await h.route(rep_changed(POOL, "rep-b"), rep_changed(POOL, "rep-c"))
    await h.route(rep_left(POOL, "rep-a"))
    after = [decisions(h, lead_id)[-1] for lead_id in ("lead-1", "lead-2")]
    assert {d["rep_id"] for d in after} == {"rep-b", "rep-c"}, "spread by the policy, previous holder excluded"
    assert all((d["attempt"], d["trigger"]) == (2, "rep_left") for d in after)
    assert loads(h) == {"rep-a": 0, "rep-b": 1, "rep-c": 1}
    assert not [k for k in held(h) if k.startswith("rep-a|")]


async def test_a_departed_reps_leads_go_to_the_open_pool_when_nobody_else_is_eligible(h: Harness) -> None:
    await pool_of(h, "rep-a")
    await give(h, "rep-a", "lead-1")
    await h.route(rep_left(POOL, "rep-a"))
    d = decisions(h, "lead-1")[-1]
    assert (d["rep_id"], d["reason"], d["trigger"]) == (None, "sent_to_claim_pool", "rep_left")
    assert ledger(h)["status"] == "claimable" and ledger(h)["lead"]["lead_id"] == "lead-1"
    assert held(h) == [] and loads(h) == {"rep-a": 0}


async def test_on_leave_open_pool_and_keep(h: Harness) -> None:
    await pool_of(h, "rep-a", "rep-b", on_leave="open_pool")
    await h.route(lead_arrived(POOL, "lead-1"))
    holder = decisions(h)[-1]["rep_id"]
    await h.route(rep_left(POOL, holder))
    d = decisions(h)[-1]
    assert (d["reason"], d["trigger"]) == ("sent_to_claim_pool", "rep_left")
    assert "the policy sends a departed rep's leads there" in d["explanation"]["summary"]

    await h.route(policy_changed(POOL, policy(version=3, availability={"on_leave": "keep"})))
    await h.route(lead_arrived(POOL, "lead-2"))
    other = decisions(h, "lead-2")[-1]["rep_id"]
    await h.route(rep_left(POOL, other))
    assert len(decisions(h, "lead-2")) == 1, "keep: the lead stays with the rep that left"


async def test_a_handed_back_lead_loses_its_follow_up_timer_and_the_new_holder_gets_one(h: Harness) -> None:
    await h.route(policy_changed(POOL, policy(follow_up={"within": "1h"}, availability={"hand_back": ["away"]})))
    await h.route(rep_changed(POOL, "rep-a"))
    await give(h, "rep-a", "lead-1")
    old_due = ledger(h)["sla_due"]
    later = NOW + timedelta(minutes=10)
    await h.route(rep_changed(POOL, "rep-b"), rep_changed(POOL, "rep-a", availability="away"), at=later)
    assert decisions(h)[-1]["rep_id"] == "rep-b"
    new_due = ledger(h)["sla_due"]
    assert new_due != old_due, "the new holder's own hour"
    (row_key, row), *others = h.table("sla").items()
    assert others == [] and row_key.endswith(sla.timer_key(new_due, POOL, "lead-1"))
    assert (row["rep_id"], row["attempt"]) == ("rep-b", 2)


async def test_a_returning_rep_ramps_up_instead_of_taking_a_flood(h: Harness) -> None:
    await pool_of(h, **{"ramp_up": "1h", "ramp_start": 0.25})
    await h.route(rep_changed(POOL, "rep-a", capacity=8, availability="offline"), rep_changed(POOL, "rep-b"))
    await h.route(rep_changed(POOL, "rep-a", capacity=8), at=NOW)  # back: 2 of 8 at once
    assert h.table("reps")["p|rep-a"]["returned_at"].startswith(NOW.isoformat()[:19])
    for i in range(6):
        await h.route(lead_arrived(POOL, f"lead-{i}"), at=NOW + timedelta(minutes=1))
    to_a = [i for i in range(6) if decisions(h, f"lead-{i}")[-1]["rep_id"] == "rep-a"]
    assert len(to_a) == 2, "least loaded would have sent rep-a far more; the ramp holds it at 2 of 8"
    # 30 minutes on: 0.25 + 0.75 * 0.5 = 62.5 % of 8 = 5 open at most.
    for i in range(6, 14):
        await h.route(lead_arrived(POOL, f"lead-{i}"), at=NOW + timedelta(minutes=30))
    assert loads(h)["rep-a"] == 5
    # an hour on: the whole capacity
    await h.route(lead_arrived(POOL, "lead-x"), at=NOW + timedelta(hours=1))
    assert loads(h)["rep-a"] == 6


async def test_ramp_up_counts_from_the_end_of_an_absence(h: Harness) -> None:
    await pool_of(h, **{"ramp_up": "2h", "ramp_start": 0.5})
    away = {"start": (NOW - timedelta(days=3)).isoformat(), "end": (NOW - timedelta(minutes=1)).isoformat()}
    await h.route(rep_changed(POOL, "rep-a", capacity=4, out_of_office=[away]), rep_changed(POOL, "rep-b"))
    for i in range(6):
        await h.route(lead_arrived(POOL, f"lead-{i}"))
    assert loads(h)["rep-a"] == 2, "half of 4 just after the absence"


async def test_availability_tiers_accept_away_reps_only_when_nobody_available_qualifies(h: Harness) -> None:
    await pool_of(h, **{"tiers": ["away"]})
    await h.route(rep_changed(POOL, "rep-a", availability="away"), rep_changed(POOL, "rep-b", availability="offline"))
    await h.route(lead_arrived(POOL, "lead-1"))
    d = decisions(h)[-1]
    assert d["rep_id"] == "rep-a" and "accepted away reps" in d["explanation"]["relaxed"]
    await h.route(rep_changed(POOL, "rep-c"))
    await h.route(lead_arrived(POOL, "lead-2"))
    assert decisions(h, "lead-2")[-1]["rep_id"] == "rep-c", "an available rep first"
    assert decisions(h, "lead-2")[-1]["explanation"]["relaxed"] == []


async def test_without_tiers_away_reps_get_nothing(h: Harness) -> None:
    await pool_of(h)
    await h.route(rep_changed(POOL, "rep-a", availability="away"))
    await h.route(lead_arrived(POOL, "lead-1"))
    assert decisions(h)[-1]["reason"] == "no_eligible_rep"


async def test_a_lead_waiting_behind_a_ramp_is_taken_by_housekeeping_as_the_ramp_grows(h: Harness) -> None:
    doc = policy(availability={"ramp_up": "1h", "ramp_start": 0.5}, waiting={})
    await h.route(policy_changed(POOL, doc))
    await h.route(rep_changed(POOL, "rep-a", capacity=4, availability="offline"))
    await h.route(rep_changed(POOL, "rep-a", capacity=4))  # back at NOW: 2 of 4
    for i in range(3):
        await h.route(lead_arrived(POOL, f"lead-{i}"))
    assert decisions(h, "lead-2")[-1]["reason"] == "no_eligible_rep" and ledger(h, "lead-2")["status"] == "waiting"
    out = await h.housekeep("route", h.pool_partition(POOL), NOW + timedelta(minutes=10))
    assert out == [], "10 minutes on the ramp is 2.33 of 4: still 2"
    out = await h.housekeep("route", h.pool_partition(POOL), NOW + timedelta(minutes=31))
    [d] = [s.json() for s in out if s.topic == h.settings.topic_assignments]
    assert (d["lead_id"], d["rep_id"], d["trigger"], d["attempt"]) == ("lead-2", "rep-a", "capacity_freed", 2)
    assert d["waited_seconds"] == 31 * 60
