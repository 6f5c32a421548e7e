"""The route stage: roster changes, decisions, duplicates, deal closing, all through pool-events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from routing.frame import day_keys
from routing.ids import decision_id
from tests.agents.conftest import (
    LONG_AGO,
    NOW,
    Harness,
    deal_arrived,
    lead_arrived,
    rep_changed,
    rep_left,
)

pytestmark = pytest.mark.asyncio
COUNTERS = ("open", "assigned", "value", "premium", "day_count", "day_value", "week_count", "vpass")


def counters(load: dict) -> dict:
    """A load row without its day/week keys."""
    return {k: load[k] for k in COUNTERS}


def pool_state(members: list[str], cursor: str | None = None, **totals: float) -> dict:
    return {"members": members, "cursor": cursor, "vtime": 0.0, "assigned": 0, "value": 0.0, "premium": 0, **totals}


def decided(h: Harness) -> list[str | None]:
    return [s.json()["rep_id"] for s in h.sent("assignments")]


def seed_pool(h: Harness, members: list[str], cursor: str) -> None:
    """A pool as an earlier worker left it: members in this order, all with room."""
    rows: dict[str, object] = {"pools": pool_state(members, cursor)}
    rows |= {f"reps|{r}": {"rep_id": r, "capacity": 10} for r in members}
    h.seed_route("p", rows)


async def test_rep_changes_build_the_pool(h: Harness) -> None:
    await h.route(rep_changed("p", "rep-b"), rep_changed("p", "rep-a", capacity=4))
    assert h.table("pools") == {"p": pool_state(["rep-b", "rep-a"])}  # in the order they joined
    assert h.table("reps")["p|rep-a"]["capacity"] == 4
    assert set(h.table("reps")) == {"p|rep-a", "p|rep-b"}
    assert h.nothing_sent()  # roster changes emit nothing


async def test_rep_leaving_the_pool_is_no_longer_chosen(h: Harness) -> None:
    await h.route(rep_changed("p", "rep-a"), rep_changed("p", "rep-b"), rep_left("p", "rep-a"))
    assert h.table("pools")["p"]["members"] == ["rep-b"]
    assert "p|rep-a" not in h.table("reps")
    await h.route(lead_arrived("p", "lead-1"))
    assert decided(h) == ["rep-b"]


async def test_lead_gets_the_least_loaded_rep_and_nothing_goes_back_to_the_lead_log(h: Harness) -> None:
    await h.route(rep_changed("p", "rep-a"), rep_changed("p", "rep-b"))
    h.seed_route("p", {"loads|rep-a": {"open": 2, "assigned": 2, "value": 0.0}})  # rep-a holds two open leads
    at = NOW - timedelta(seconds=1)

    [out] = await h.route(lead_arrived("p", "lead-1", estimated_value=1200.0), at=at)

    assert (out.topic, out.key) == (h.settings.topic_assignments, b"lead-1")
    decision = out.json()
    assert decision["rep_id"] == "rep-b"
    assert decision["reason"] == "assigned"
    assert decision["pool"] == "p"
    assert decision["lead_id"] == "lead-1"
    assert decision["decision_id"] == decision_id("lead-1", 1)
    assert (decision["policy_id"], decision["policy_version"]) == ("default", 1)  # no policy published
    assert decision["explanation"]["chosen"]["rep_id"] == "rep-b"
    assert decision["explanation"]["chosen"]["facts"]["open"] == 0
    assert [r["rep_id"] for r in decision["explanation"]["runners_up"]] == ["rep-a"]
    assert decision["explanation"]["eligible"] == 2
    assert out.value is not None
    assert b"jane.roe@example.com" not in out.value
    # The leads stage pinned the index when the lead arrived: route sends no LeadIndexed back.
    assert h.sent("lead_events") == []

    entry = h.table("ledger")["p|lead-1"]
    assert entry["status"] == "open"
    assert entry["rep_id"] == "rep-b"
    assert entry["value"] == 1200.0
    assert entry["decision"]["decision_id"] == decision["decision_id"]
    new_load = h.table("loads")["p|rep-b"]
    assert counters(new_load) == {
        "open": 1,
        "assigned": 1,
        "value": 1200.0,
        "premium": 0,
        "day_count": 1,
        "day_value": 1200.0,
        "week_count": 1,
        "vpass": 1.0,
    }
    assert (new_load["day"], new_load["week"]) == day_keys(at)[:2]  # the record's time decides
    assert h.table("loads")["p|rep-a"] == {"open": 2, "assigned": 2, "value": 0.0}  # untouched
    assert h.table("pools")["p"] == pool_state(["rep-a", "rep-b"], "rep-b", assigned=1, value=1200.0)
    assert h.sent("dlq") == []


async def test_least_loaded_is_relative_to_capacity_and_beats_rotation(h: Harness) -> None:
    await h.route(rep_changed("p", "rep-a", capacity=4), rep_changed("p", "rep-b", capacity=10))
    await h.route(*(lead_arrived("p", f"lead-{n}") for n in range(3)))
    # lead-0: tie 4/4 vs 10/10 -> first in rotation (rep-a); lead-1: rep-b (0/10 < 1/4);
    # lead-2: rep-b again (1/10 open beats 1/4), although rotation alone would go back to rep-a.
    assert decided(h) == ["rep-a", "rep-b", "rep-b"]
    assert h.table("loads")["p|rep-b"]["open"] == 2


async def test_redelivered_lead_re_emits_the_same_decision_and_keeps_the_load(h: Harness) -> None:
    await h.route(rep_changed("p", "rep-a"), rep_changed("p", "rep-b"))
    lead = lead_arrived("p", "lead-1")
    await h.route(lead)
    rows = h.snapshot()

    await h.route(lead, at=NOW + timedelta(minutes=5))

    first, second = h.sent("assignments")
    assert second.key == first.key == b"lead-1"
    assert second.value == first.value  # byte for byte: same decision_id, rep and decided_at
    assert first.json()["rep_id"] is not None
    assert h.sent("lead_events") == []
    assert h.snapshot() == rows
    assert h.table("loads")[f"p|{first.json()['rep_id']}"]["open"] == 1
    assert h.registry.get_sample_value("leadrelay_duplicate_leads_total", {"pool": "p"}) == 1


async def test_redelivered_lead_is_a_duplicate_even_after_the_roster_changed(h: Harness) -> None:
    await h.route(rep_changed("p", "rep-a"))
    await h.route(lead_arrived("p", "lead-1"))
    await h.route(rep_changed("p", "rep-b"), rep_left("p", "rep-a"), lead_arrived("p", "lead-1"))
    # rep-a's leaving hands its lead to rep-b (attempt 2); the redelivered lead re-emits that decision
    # unchanged instead of deciding again.
    assert decided(h) == ["rep-a", "rep-b", "rep-b"]
    _, second, again = (r.json() for r in h.sent("assignments"))
    assert (second["attempt"], second["trigger"]) == (2, "rep_left")
    assert again == second
    assert h.table("loads")["p|rep-b"]["open"] == 1 and h.table("loads")["p|rep-a"]["open"] == 0


async def test_deal_releases_the_load_and_records_performance_once(h: Harness) -> None:
    await h.route(rep_changed("p", "rep-a"), rep_changed("p", "rep-b"))
    h.seed_route("p", {"loads|rep-a": {"open": 5, "assigned": 5, "value": 0.0}})
    await h.route(lead_arrived("p", "lead-1", estimated_value=300.0))
    assert counters(h.table("loads")["p|rep-b"])["open"] == 1
    load_before = h.table("loads")["p|rep-b"]
    h.forget()

    closed_at = NOW - timedelta(hours=2)
    deal = deal_arrived("p", "lead-1", outcome="won", amount=5000.0, closed_at=closed_at.isoformat())
    await h.route(deal)

    assert h.table("loads")["p|rep-b"] == {**load_before, "open": 0}  # only the open count goes down
    assert h.table("loads")["p|rep-a"]["open"] == 5  # someone else's load is untouched
    entry = h.table("ledger")["p|lead-1"]
    assert entry["status"] == "won"
    assert entry["rep_id"] == "rep-b"
    assert datetime.fromisoformat(entry["closed_at"]) == closed_at
    assert h.table("performance") == {"p|rep-b": {closed_at.date().isoformat(): [1, 0, 5000.0]}}
    assert h.table("models") == {"p|rep-b": {"n": [1, 0], "f": {"source=web": [1, 0]}}}
    assert h.nothing_sent()  # closing a deal emits nothing

    # The same deal again (redelivery) changes nothing.
    rows = h.snapshot()
    await h.route(deal)
    assert h.snapshot() == rows
    assert h.nothing_sent()


async def test_lost_deal_credits_the_named_rep(h: Harness) -> None:
    await h.route(rep_changed("p", "rep-a"))
    await h.route(lead_arrived("p", "lead-1"))
    await h.route(deal_arrived("p", "lead-1", outcome="lost", amount=0.0, rep_id="rep-z"))
    day = NOW.date().isoformat()
    assert h.table("performance") == {"p|rep-z": {day: [0, 1, 0.0]}}
    assert h.table("loads")["p|rep-a"]["open"] == 0  # the holder's load is released all the same
    assert h.table("ledger")["p|lead-1"]["status"] == "lost"


async def test_deal_for_unknown_lead_without_rep_is_dead_lettered(h: Harness) -> None:
    await h.route(rep_changed("p", "rep-a"))
    deal = deal_arrived("p", "lead-404")
    await h.route(deal, lead_arrived("p", "lead-1"))  # the task goes on after the dead letter

    [dl] = h.sent("dlq")
    assert dl.key == b"p"
    assert dl.value == deal
    assert dl.header("x-leadrelay-reason") == "unknown_lead"
    assert dl.header("x-leadrelay-error-field") == "lead_id"
    assert dl.header("x-leadrelay-source-topic") == h.topics["pool_events"]
    assert dl.header("x-leadrelay-source-partition") == str(h.pool_partition("p"))
    assert dl.header("x-leadrelay-source-offset") == "1"
    assert "p|lead-404" not in h.table("ledger")
    assert h.table("performance") == {}
    assert len(h.sent("assignments")) == 1


async def test_deal_for_unknown_lead_with_rep_counts_for_that_rep(h: Harness) -> None:
    await h.route(deal_arrived("p", "lead-404", rep_id="rep-a", amount=70.0))
    assert h.table("performance") == {"p|rep-a": {NOW.date().isoformat(): [1, 0, 70.0]}}
    assert h.table("ledger") == {}
    assert h.sent("dlq") == []


async def test_lead_when_every_rep_is_at_capacity_is_unassigned(h: Harness) -> None:
    await h.route(rep_changed("p", "rep-a", capacity=1), rep_changed("p", "rep-b", capacity=1))
    await h.route(lead_arrived("p", "lead-1"), lead_arrived("p", "lead-2"))
    loads_full = h.table("loads")
    assert {k: v["open"] for k, v in loads_full.items()} == {"p|rep-a": 1, "p|rep-b": 1}

    [out] = await h.route(lead_arrived("p", "lead-3"))
    assert out.key == b"lead-3"
    decision = out.json()
    assert decision["rep_id"] is None
    assert decision["reason"] == "no_eligible_rep"
    assert decision["explanation"]["excluded"] == {"at_capacity": 2}
    assert h.table("ledger")["p|lead-3"]["status"] == "unassigned"
    assert h.table("loads") == loads_full


async def test_lead_in_a_pool_without_reps_is_unassigned(h: Harness) -> None:
    [out] = await h.route(lead_arrived("nobody", "lead-1"), pool="nobody")
    assert out.json()["reason"] == "empty_pool"
    assert out.json()["rep_id"] is None
    assert h.table("loads") == {}


async def test_released_at_is_the_deal_records_time_and_retention_counts_from_it(h: Harness) -> None:
    await h.route(rep_changed("p", "rep-a"))
    await h.route(*(lead_arrived("p", f"lead-{n}") for n in ("old", "recent", "open")))
    applied = NOW + timedelta(seconds=5)
    await h.route(deal_arrived("p", "lead-old", closed_at=LONG_AGO.isoformat()), at=applied)
    recent = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    await h.route(deal_arrived("p", "lead-recent", closed_at=recent))
    assert set(h.table("ledger")) == {"p|lead-old", "p|lead-recent", "p|lead-open"}
    # retention counts from when the worker closed the entry, not from the deal's own (event) time
    assert datetime.fromisoformat(h.table("ledger")["p|lead-old"]["released_at"]) == applied
    assert h.table("ledger")["p|lead-old"]["closed_at"] == LONG_AGO.isoformat()

    partition = h.pool_partition("p")
    assert await h.housekeep("route", partition, datetime.now(UTC)) == []
    assert set(h.table("ledger")) == {"p|lead-old", "p|lead-recent", "p|lead-open"}  # a backfill stays

    h.close_long_ago("p", "lead-old")
    await h.housekeep("route", partition, datetime.now(UTC))
    assert set(h.table("ledger")) == {"p|lead-recent", "p|lead-open"}
    assert h.table("ledger")["p|lead-open"]["status"] == "open"


async def test_route_housekeeping_only_touches_its_own_partition(h: Harness) -> None:
    q = next(pool for pool in (f"q{i}" for i in range(100)) if h.pool_partition(pool) != h.pool_partition("p"))
    await h.route(lead_arrived(q, "lead-1"), deal_arrived(q, "lead-1"), pool=q)
    h.close_long_ago(q, "lead-1")
    await h.housekeep("route", h.pool_partition("p"), datetime.now(UTC))
    assert f"{q}|lead-1" in h.table("ledger")
    await h.housekeep("route", h.pool_partition(q), datetime.now(UTC))
    assert f"{q}|lead-1" not in h.table("ledger")


async def test_garbage_on_the_pool_topic_is_dead_lettered(h: Harness) -> None:
    await h.route(b'{"kind": "mystery"}', b"not json", rep_changed("p", "rep-a"))
    reasons = [d.header("x-leadrelay-reason") for d in h.sent("dlq")]
    assert reasons == ["schema_violation", "invalid_json"]
    assert h.table("pools")["p"]["members"] == ["rep-a"]


async def test_unexpected_error_is_dead_lettered_and_the_task_goes_on(h: Harness) -> None:
    q = next(pool for pool in (f"q{i}" for i in range(100)) if h.pool_partition(pool) == h.pool_partition("p"))
    await h.route(rep_changed("p", "rep-a"), rep_changed("p", "rep-b"))
    await h.route(rep_changed(q, "rep-a"), pool=q)
    h.seed_route("p", {"loads|rep-b": {"open": "x"}})  # a row no decision can be built from
    first = lead_arrived("p", "lead-1")

    await h.route(first)
    await h.route(lead_arrived(q, "lead-2"), pool=q)  # same task, next record

    [dl] = h.sent("dlq")
    assert dl.value == first
    assert dl.header("x-leadrelay-reason") == "internal_error"
    assert dl.header("x-leadrelay-error-class") == "ValueError"
    assert dl.header("x-leadrelay-source-offset") == "3"  # after three roster changes on this partition
    assert h.registry.get_sample_value("leadrelay_internal_errors_total", {"agent": "route"}) == 1
    assert [s.key for s in h.sent("assignments")] == [b"lead-2"]
    assert "p|lead-1" not in h.table("ledger")


async def test_released_load_is_seen_by_the_next_lead_without_a_rebuild(h: Harness) -> None:
    """The cached frame follows the writes: a deal frees rep-a, and the next lead goes back to it."""
    await h.route(rep_changed("p", "rep-a", capacity=1), rep_changed("p", "rep-b", capacity=1))
    await h.route(lead_arrived("p", "lead-1"), lead_arrived("p", "lead-2"))
    assert decided(h) == ["rep-a", "rep-b"]
    await h.route(deal_arrived("p", "lead-1"), lead_arrived("p", "lead-3"))
    assert decided(h)[-1] == "rep-a"


async def test_rotation_state_survives_a_restart_of_the_task(h: Harness) -> None:
    """A new worker rebuilds its frames from the committed rows: the rotation goes on where it stood."""
    await h.route(*(rep_changed("p", r, capacity=100) for r in ("rep-a", "rep-b", "rep-c")))
    await h.route(lead_arrived("p", "lead-1"), lead_arrived("p", "lead-2"))
    h.restart()
    await h.route(lead_arrived("p", "lead-3"), lead_arrived("p", "lead-4"))
    assert decided(h) == ["rep-a", "rep-b", "rep-c", "rep-a"]


async def test_rep_profile_change_is_used_by_the_next_lead(h: Harness) -> None:
    await h.route(rep_changed("p", "rep-a"), rep_changed("p", "rep-b"))
    await h.route(lead_arrived("p", "lead-1"))
    assert decided(h)[-1] == "rep-a"
    await h.route(rep_changed("p", "rep-b", availability="away"), lead_arrived("p", "lead-2"))
    decision = h.sent("assignments")[-1].json()
    assert decision["rep_id"] == "rep-a"
    assert decision["explanation"]["excluded"] == {"unavailable": 1}


async def test_decisions_update_pool_metrics(h: Harness) -> None:
    await h.route(rep_changed("p", "rep-a", capacity=4), rep_changed("p", "rep-b", capacity=6))
    await h.route(lead_arrived("p", "lead-1", estimated_value=100.0))
    assert h.registry.get_sample_value("leadrelay_open_leads", {"pool": "p"}) == 1
    assert h.registry.get_sample_value("leadrelay_capacity_leads", {"pool": "p"}) == 10
    # one rep received everything: the Gini of two reps is 1/2
    assert h.registry.get_sample_value("leadrelay_fairness_gini_ratio", {"pool": "p"}) == 0.5


async def test_unlimited_reps_are_decided_and_leave_out_capacity_metrics(tmp_path: Path) -> None:
    h = Harness(tmp_path, metrics_per_rep=True, metrics_max_reps=10)
    try:
        registry = h.registry
        await h.route(rep_changed("p", "rep-a", capacity=None), rep_changed("p", "rep-b", capacity=2))
        assert h.table("reps")["p|rep-a"]["capacity"] is None
        await h.route(*(lead_arrived("p", f"lead-{n}") for n in range(6)), deal_arrived("p", "lead-0"))
        decisions = [s.json() for s in h.sent("assignments")]
        assert all(d["reason"] == "assigned" for d in decisions)  # rep-b fills up, rep-a never does
        assert [d["rep_id"] for d in decisions].count("rep-a") == 4
        assert all("capacity" not in d["explanation"]["chosen"]["facts"] for d in decisions if d["rep_id"] == "rep-a")
        assert registry.get_sample_value("leadrelay_open_leads", {"pool": "p"}) == 5  # one deal closed
        assert registry.get_sample_value("leadrelay_capacity_leads", {"pool": "p"}) is None
        assert registry.get_sample_value("leadrelay_rep_capacity_leads", {"pool": "p", "rep": "rep-a"}) is None
        assert registry.get_sample_value("leadrelay_rep_capacity_leads", {"pool": "p", "rep": "rep-b"}) == 2
        assert registry.get_sample_value("leadrelay_rep_open_leads", {"pool": "p", "rep": "rep-a"}) is not None
    finally:
        h.close()


async def test_rotation_goes_round_in_roster_order_not_id_order(h: Harness) -> None:
    joined = ("zoe@x.io", "Adam@x.io", "bob@x.io")  # sorted, Adam would come first
    await h.route(*(rep_changed("p", r, capacity=None) for r in joined))
    await h.route(*(lead_arrived("p", f"lead-{n}") for n in range(4)))
    assert decided(h) == [*joined, joined[0]]


async def test_explicit_positions_come_first_and_a_returning_rep_goes_to_the_end(h: Harness) -> None:
    await h.route(*(rep_changed("p", r, capacity=None) for r in ("rep-a", "rep-b", "rep-c")))
    await h.route(rep_left("p", "rep-a"), rep_changed("p", "rep-a", capacity=None))
    assert h.table("pools")["p"]["members"] == ["rep-b", "rep-c", "rep-a"]
    await h.route(rep_changed("p", "rep-c", capacity=None, position=0))
    await h.route(*(lead_arrived("p", f"lead-{n}") for n in range(3)))
    assert decided(h) == ["rep-c", "rep-b", "rep-a"]


async def test_pool_state_stored_sorted_before_goes_on_in_that_order(h: Harness) -> None:
    seed_pool(h, ["rep-a", "rep-c"], "rep-a")  # members sorted, as stored before
    await h.route(rep_changed("p", "rep-b"))
    assert h.table("pools")["p"]["members"] == ["rep-a", "rep-c", "rep-b"]
    await h.route(*(lead_arrived("p", f"lead-{n}") for n in range(3)))
    assert decided(h) == ["rep-c", "rep-b", "rep-a"]


async def test_when_the_last_chosen_rep_leaves_the_next_in_order_is_still_next(h: Harness) -> None:
    seed_pool(h, ["rep-c", "rep-b", "rep-a"], "rep-b")  # all tied: only order counts
    await h.route(rep_left("p", "rep-b"))
    assert h.table("pools")["p"] == pool_state(["rep-c", "rep-a"], "rep-c")
    await h.route(lead_arrived("p", "lead-1"))
    assert decided(h)[-1] == "rep-a"  # after rep-b, not back to the top
