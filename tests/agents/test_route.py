"""route: roster changes, decisions, duplicates, deal closing, ledger expiry, all through pool-events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import agents.route as route_module
from routing.frame import day_keys
from routing.ids import decision_id
from streams.metrics import LabelLimiter
from tests.agents.conftest import LONG_AGO, NOW, POOL_EVENTS, Kit

pytestmark = pytest.mark.asyncio
COUNTERS = ("open", "assigned", "value", "premium", "day_count", "day_value", "week_count", "vpass")


def counters(load: dict) -> dict:
    """A load row without its day/week keys (route stamps them from the wall clock)."""
    return {k: load[k] for k in COUNTERS}


def pool_state(members: list[str], cursor: str | None = None, **totals) -> dict:
    return {"members": members, "cursor": cursor, "vtime": 0.0, "assigned": 0, "value": 0.0, "premium": 0, **totals}


async def feed(kit: Kit, *records: bytes, key: bytes = b"p") -> dict[int, bool]:
    """Put internal events into route, in order; return what it yielded per event."""
    async with kit.agent("route").test_context() as route:
        for record in records:
            await route.put(value=record, key=key)
        return dict(route.results)


async def test_rep_changes_build_the_pool(kit: Kit) -> None:
    results = await feed(kit, kit.rep_changed("p", "rep-b"), kit.rep_changed("p", "rep-a", capacity=4))
    assert results == {0: True, 1: True}
    assert kit.table("pools") == {"p": pool_state(["rep-b", "rep-a"])}  # in the order they joined
    assert kit.table("reps")["p|rep-a"]["capacity"] == 4
    assert set(kit.table("reps")) == {"p|rep-a", "p|rep-b"}
    assert kit.sent_total() == dict.fromkeys(kit.sent_total(), 0)  # roster changes emit nothing


async def test_rep_leaving_the_pool_is_no_longer_chosen(kit: Kit) -> None:
    await feed(kit, kit.rep_changed("p", "rep-a"), kit.rep_changed("p", "rep-b"), kit.rep_left("p", "rep-a"))
    assert kit.table("pools")["p"]["members"] == ["rep-b"]
    assert "p|rep-a" not in kit.table("reps")
    await feed(kit, kit.lead_arrived("p", "lead-1"))
    [decision] = kit.sent("assignments")
    assert decision.json()["rep_id"] == "rep-b"


async def test_lead_gets_the_least_loaded_rep_and_is_indexed(kit: Kit) -> None:
    await feed(kit, kit.rep_changed("p", "rep-a"), kit.rep_changed("p", "rep-b"))
    # rep-a already holds two open leads (memory store: written directly, no event needed).
    kit.write("loads", "p|rep-a", {"open": 2, "assigned": 2, "value": 0.0})

    results = await feed(kit, kit.lead_arrived("p", "lead-1", estimated_value=1200.0))
    assert results == {0: True}

    [out] = kit.sent("assignments")
    assert out.key == b"lead-1"
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
    assert b"jane.roe@example.com" not in out.value

    [indexed] = kit.sent("lead_events")
    assert indexed.key == b"lead-1"
    assert indexed.json() == {
        "kind": "indexed",
        "lead_id": "lead-1",
        "pool": "p",
        "rep_id": "rep-b",
        "decision_id": decision["decision_id"],
    }

    entry = kit.table("ledger")["p|lead-1"]
    assert entry["status"] == "open"
    assert entry["rep_id"] == "rep-b"
    assert entry["value"] == 1200.0
    assert entry["decision"]["decision_id"] == decision["decision_id"]
    new_load = kit.table("loads")["p|rep-b"]
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
    assert (new_load["day"], new_load["week"]) == day_keys(datetime.now(UTC))[:2]
    assert kit.table("loads")["p|rep-a"] == {"open": 2, "assigned": 2, "value": 0.0}  # untouched
    assert kit.table("pools")["p"] == pool_state(["rep-a", "rep-b"], "rep-b", assigned=1, value=1200.0)
    assert kit.sent("dlq") == []


async def test_least_loaded_is_relative_to_capacity_and_beats_rotation(kit: Kit) -> None:
    await feed(kit, kit.rep_changed("p", "rep-a", capacity=4), kit.rep_changed("p", "rep-b", capacity=10))
    await feed(kit, *(kit.lead_arrived("p", f"lead-{n}") for n in range(3)))
    # lead-0: tie 4/4 vs 10/10 -> first in rotation (rep-a); lead-1: rep-b (0/10 < 1/4);
    # lead-2: rep-b again (1/10 open beats 1/4), although rotation alone would go back to rep-a.
    assert [s.json()["rep_id"] for s in kit.sent("assignments")] == ["rep-a", "rep-b", "rep-b"]
    assert kit.table("loads")["p|rep-b"]["open"] == 2


async def test_redelivered_lead_re_emits_the_same_decision_and_keeps_the_load(kit: Kit) -> None:
    await feed(kit, kit.rep_changed("p", "rep-a"), kit.rep_changed("p", "rep-b"))
    lead = kit.lead_arrived("p", "lead-1")
    await feed(kit, lead)
    ledger_before = kit.table("ledger")
    loads_before = kit.table("loads")

    results = await feed(kit, lead)
    assert results == {0: True}

    first, second = kit.sent("assignments")
    assert second.key == first.key == b"lead-1"
    assert second.value == first.value  # byte for byte: same decision_id, rep and decided_at
    assert first.json()["rep_id"] is not None
    one, two = kit.sent("lead_events")
    assert two.value == one.value
    assert kit.table("ledger") == ledger_before
    assert kit.table("loads") == loads_before
    assert kit.table("loads")[f"p|{first.json()['rep_id']}"]["open"] == 1


async def test_redelivered_lead_is_a_duplicate_even_after_the_roster_changed(kit: Kit) -> None:
    await feed(kit, kit.rep_changed("p", "rep-a"))
    await feed(kit, kit.lead_arrived("p", "lead-1"))
    await feed(kit, kit.rep_left("p", "rep-a"), kit.rep_changed("p", "rep-b"), kit.lead_arrived("p", "lead-1"))
    assert [s.json()["rep_id"] for s in kit.sent("assignments")] == ["rep-a", "rep-a"]


async def test_deal_releases_the_load_and_records_performance_once(kit: Kit) -> None:
    await feed(kit, kit.rep_changed("p", "rep-a"), kit.rep_changed("p", "rep-b"))
    kit.write("loads", "p|rep-a", {"open": 5, "assigned": 5, "value": 0.0})
    await feed(kit, kit.lead_arrived("p", "lead-1", estimated_value=300.0))
    assert counters(kit.table("loads")["p|rep-b"])["open"] == 1
    load_before = kit.table("loads")["p|rep-b"]
    sent_before = kit.sent_total()

    closed_at = NOW - timedelta(hours=2)
    deal = kit.deal_arrived("p", "lead-1", outcome="won", amount=5000.0, closed_at=closed_at.isoformat())
    assert await feed(kit, deal) == {0: True}

    assert kit.table("loads")["p|rep-b"] == {**load_before, "open": 0}  # only the open count goes down
    assert kit.table("loads")["p|rep-a"]["open"] == 5  # someone else's load is untouched
    entry = kit.table("ledger")["p|lead-1"]
    assert entry["status"] == "won"
    assert entry["rep_id"] == "rep-b"
    assert datetime.fromisoformat(entry["closed_at"]) == closed_at
    assert kit.table("performance") == {"p|rep-b": {closed_at.date().isoformat(): [1, 0, 5000.0]}}
    assert kit.table("models") == {"p|rep-b": {"n": [1, 0], "f": {"source=web": [1, 0]}}}
    assert kit.sent_total() == sent_before  # closing a deal emits nothing

    # The same deal again (redelivery) changes nothing.
    snapshot = kit.tables_snapshot()
    assert await feed(kit, deal) == {0: True}
    assert kit.tables_snapshot() == snapshot
    assert kit.sent_total() == sent_before


async def test_lost_deal_credits_the_named_rep(kit: Kit) -> None:
    await feed(kit, kit.rep_changed("p", "rep-a"))
    await feed(kit, kit.lead_arrived("p", "lead-1"))
    await feed(kit, kit.deal_arrived("p", "lead-1", outcome="lost", amount=0.0, rep_id="rep-z"))
    day = NOW.date().isoformat()
    assert kit.table("performance") == {"p|rep-z": {day: [0, 1, 0.0]}}
    assert kit.table("loads")["p|rep-a"]["open"] == 0  # the holder's load is released all the same
    assert kit.table("ledger")["p|lead-1"]["status"] == "lost"


async def test_deal_for_unknown_lead_without_rep_is_dead_lettered(kit: Kit) -> None:
    await feed(kit, kit.rep_changed("p", "rep-a"))
    deal = kit.deal_arrived("p", "lead-404")
    async with kit.agent("route").test_context() as route:
        await route.put(value=deal, key=b"p")
        # The loop goes on after the dead letter.
        await route.put(value=kit.lead_arrived("p", "lead-1"), key=b"p")
        assert route.results == {0: False, 1: True}

    [dl] = kit.sent("dlq")
    assert dl.key == b"p"
    assert dl.value == deal
    assert dl.header("x-leadrelay-reason") == "unknown_lead"
    assert dl.header("x-leadrelay-error-field") == "lead_id"
    assert dl.header("x-leadrelay-source-topic") == POOL_EVENTS
    assert dl.header("x-leadrelay-source-offset") == "0"
    assert "p|lead-404" not in kit.table("ledger")
    assert kit.table("performance") == {}
    assert len(kit.sent("assignments")) == 1


async def test_deal_for_unknown_lead_with_rep_counts_for_that_rep(kit: Kit) -> None:
    assert await feed(kit, kit.deal_arrived("p", "lead-404", rep_id="rep-a", amount=70.0)) == {0: True}
    assert kit.table("performance") == {"p|rep-a": {NOW.date().isoformat(): [1, 0, 70.0]}}
    assert kit.table("ledger") == {}
    assert kit.sent("dlq") == []


async def test_lead_when_every_rep_is_at_capacity_is_unassigned(kit: Kit) -> None:
    await feed(kit, kit.rep_changed("p", "rep-a", capacity=1), kit.rep_changed("p", "rep-b", capacity=1))
    await feed(kit, kit.lead_arrived("p", "lead-1"), kit.lead_arrived("p", "lead-2"))
    loads_full = kit.table("loads")
    assert {k: v["open"] for k, v in loads_full.items()} == {"p|rep-a": 1, "p|rep-b": 1}

    await feed(kit, kit.lead_arrived("p", "lead-3"))
    out = kit.sent("assignments")[-1]
    assert out.key == b"lead-3"
    decision = out.json()
    assert decision["rep_id"] is None
    assert decision["reason"] == "no_eligible_rep"
    assert decision["explanation"]["excluded"] == {"at_capacity": 2}
    assert kit.sent("lead_events")[-1].json()["rep_id"] is None
    assert kit.table("ledger")["p|lead-3"]["status"] == "unassigned"
    assert kit.table("loads") == loads_full


async def test_lead_in_a_pool_without_reps_is_unassigned(kit: Kit) -> None:
    await feed(kit, kit.lead_arrived("nobody", "lead-1"), key=b"nobody")
    [out] = kit.sent("assignments")
    assert out.json()["reason"] == "empty_pool"
    assert out.json()["rep_id"] is None
    assert kit.table("loads") == {}


async def test_ledger_expired_removes_only_closed_entries_past_retention(kit: Kit) -> None:
    await feed(kit, kit.rep_changed("p", "rep-a"))
    await feed(kit, *(kit.lead_arrived("p", f"lead-{n}") for n in ("old", "recent", "open")))
    await feed(
        kit,
        kit.deal_arrived("p", "lead-old", closed_at=LONG_AGO.isoformat()),
        kit.deal_arrived("p", "lead-recent", closed_at=(datetime.now(UTC) - timedelta(days=1)).isoformat()),
    )
    assert set(kit.table("ledger")) == {"p|lead-old", "p|lead-recent", "p|lead-open"}
    # retention counts from when the worker closed the entry, not from the deal's own (event) time
    released = datetime.fromisoformat(kit.table("ledger")["p|lead-old"]["released_at"])
    assert abs(released - datetime.now(UTC)) < timedelta(minutes=1)
    assert kit.table("ledger")["p|lead-old"]["closed_at"] == LONG_AGO.isoformat()

    everything = kit.ledger_expired("p", "lead-old", "lead-recent", "lead-open", "lead-gone")
    assert await feed(kit, everything) == {0: True}
    assert set(kit.table("ledger")) == {"p|lead-old", "p|lead-recent", "p|lead-open"}  # a backfill stays

    kit.closed_long_ago("p|lead-old")
    assert await feed(kit, everything) == {0: True}
    assert set(kit.table("ledger")) == {"p|lead-recent", "p|lead-open"}
    assert kit.table("ledger")["p|lead-open"]["status"] == "open"


async def test_ledger_expired_only_touches_its_own_pool(kit: Kit) -> None:
    await feed(kit, kit.lead_arrived("q", "lead-1"), key=b"q")
    await feed(kit, kit.deal_arrived("q", "lead-1"), key=b"q")
    kit.closed_long_ago("q|lead-1")
    await feed(kit, kit.ledger_expired("p", "lead-1"))
    assert "q|lead-1" in kit.table("ledger")
    await feed(kit, kit.ledger_expired("q", "lead-1"), key=b"q")
    assert "q|lead-1" not in kit.table("ledger")


async def test_garbage_on_the_pool_topic_is_dead_lettered(kit: Kit) -> None:
    results = await feed(kit, b'{"kind": "mystery"}', b"not json", kit.rep_changed("p", "rep-a"))
    assert results == {0: False, 1: False, 2: True}
    reasons = [d.header("x-leadrelay-reason") for d in kit.sent("dlq")]
    assert reasons == ["schema_violation", "invalid_json"]
    assert kit.table("pools")["p"]["members"] == ["rep-a"]


async def test_unexpected_error_is_dead_lettered_and_the_loop_goes_on(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_assign = route_module.assign
    calls = {"n": 0}

    def flaky_assign(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return real_assign(*args, **kwargs)

    monkeypatch.setattr(route_module, "assign", flaky_assign)
    registry = kit.ctx.metrics.registry
    before = registry.get_sample_value("leadrelay_internal_errors_total", {"agent": "route"}) or 0.0
    first = kit.lead_arrived("p", "lead-1")

    results = await feed(kit, kit.rep_changed("p", "rep-a"), first, kit.lead_arrived("p", "lead-2"))

    assert results == {0: True, 1: False, 2: True}
    [dl] = kit.sent("dlq")
    assert dl.value == first
    assert dl.header("x-leadrelay-reason") == "internal_error"
    assert dl.header("x-leadrelay-error-class") == "RuntimeError"
    assert dl.header("x-leadrelay-source-offset") == "1"
    assert registry.get_sample_value("leadrelay_internal_errors_total", {"agent": "route"}) == before + 1
    assert [s.key for s in kit.sent("assignments")] == [b"lead-2"]
    assert "p|lead-1" not in kit.table("ledger")


async def test_released_load_is_seen_by_the_next_lead_without_a_rebuild(kit: Kit) -> None:
    """The cached frame follows the writes: a deal frees rep-a, and the next lead goes back to it."""
    await feed(kit, kit.rep_changed("p", "rep-a", capacity=1), kit.rep_changed("p", "rep-b", capacity=1))
    await feed(kit, kit.lead_arrived("p", "lead-1"), kit.lead_arrived("p", "lead-2"))
    assert [s.json()["rep_id"] for s in kit.sent("assignments")] == ["rep-a", "rep-b"]
    await feed(kit, kit.deal_arrived("p", "lead-1"), kit.lead_arrived("p", "lead-3"))
    assert kit.sent("assignments")[-1].json()["rep_id"] == "rep-a"


async def test_rotation_state_survives_a_cache_clear(kit: Kit) -> None:
    """After a rebalance the frame is rebuilt from the tables: the rotation goes on where it stood."""
    await feed(kit, *(kit.rep_changed("p", r, capacity=100) for r in ("rep-a", "rep-b", "rep-c")))
    await feed(kit, kit.lead_arrived("p", "lead-1"), kit.lead_arrived("p", "lead-2"))
    kit.agent("route").cache.clear()
    await feed(kit, kit.lead_arrived("p", "lead-3"), kit.lead_arrived("p", "lead-4"))
    assert [s.json()["rep_id"] for s in kit.sent("assignments")] == ["rep-a", "rep-b", "rep-c", "rep-a"]


async def test_rep_profile_change_is_used_by_the_next_lead(kit: Kit) -> None:
    await feed(kit, kit.rep_changed("p", "rep-a"), kit.rep_changed("p", "rep-b"))
    await feed(kit, kit.lead_arrived("p", "lead-1"))
    assert kit.sent("assignments")[-1].json()["rep_id"] == "rep-a"
    await feed(kit, kit.rep_changed("p", "rep-b", availability="away"), kit.lead_arrived("p", "lead-2"))
    decision = kit.sent("assignments")[-1].json()
    assert decision["rep_id"] == "rep-a"
    assert decision["explanation"]["excluded"] == {"unavailable": 1}


async def test_decisions_update_pool_metrics(kit: Kit) -> None:
    registry = kit.ctx.metrics.registry
    await feed(kit, kit.rep_changed("p", "rep-a", capacity=4), kit.rep_changed("p", "rep-b", capacity=6))
    await feed(kit, kit.lead_arrived("p", "lead-1", estimated_value=100.0))
    assert registry.get_sample_value("leadrelay_open_leads", {"pool": "p"}) == 1
    assert registry.get_sample_value("leadrelay_capacity_leads", {"pool": "p"}) == 10
    # one rep received everything: the Gini of two reps is 1/2
    assert registry.get_sample_value("leadrelay_fairness_gini_ratio", {"pool": "p"}) == 0.5


async def test_unlimited_reps_are_decided_and_leave_out_capacity_metrics(kit: Kit, monkeypatch) -> None:
    monkeypatch.setattr(kit.ctx.metrics, "per_rep", True)
    monkeypatch.setattr(kit.ctx.metrics, "rep", LabelLimiter(10))
    registry = kit.ctx.metrics.registry
    await feed(kit, kit.rep_changed("p", "rep-a", capacity=None), kit.rep_changed("p", "rep-b", capacity=2))
    assert kit.table("reps")["p|rep-a"]["capacity"] is None
    await feed(kit, *(kit.lead_arrived("p", f"lead-{n}") for n in range(6)), kit.deal_arrived("p", "lead-0"))
    decisions = [s.json() for s in kit.sent("assignments")]
    assert all(d["reason"] == "assigned" for d in decisions)  # rep-b fills up, rep-a never does
    assert [d["rep_id"] for d in decisions].count("rep-a") == 4
    assert all("capacity" not in d["explanation"]["chosen"]["facts"] for d in decisions if d["rep_id"] == "rep-a")
    assert registry.get_sample_value("leadrelay_open_leads", {"pool": "p"}) == 5  # one deal closed
    assert registry.get_sample_value("leadrelay_capacity_leads", {"pool": "p"}) is None
    assert registry.get_sample_value("leadrelay_rep_capacity_leads", {"pool": "p", "rep": "rep-a"}) is None
    assert registry.get_sample_value("leadrelay_rep_capacity_leads", {"pool": "p", "rep": "rep-b"}) == 2
    assert registry.get_sample_value("leadrelay_rep_open_leads", {"pool": "p", "rep": "rep-a"}) is not None


async def test_rotation_goes_round_in_roster_order_not_id_order(kit: Kit) -> None:
    joined = ("zoe@x.io", "Adam@x.io", "bob@x.io")  # sorted, Adam would come first
    await feed(kit, *(kit.rep_changed("p", r, capacity=None) for r in joined))
    await feed(kit, *(kit.lead_arrived("p", f"lead-{n}") for n in range(4)))
    assert [s.json()["rep_id"] for s in kit.sent("assignments")] == [*joined, joined[0]]


async def test_explicit_positions_come_first_and_a_returning_rep_goes_to_the_end(kit: Kit) -> None:
    await feed(kit, *(kit.rep_changed("p", r, capacity=None) for r in ("rep-a", "rep-b", "rep-c")))
    await feed(kit, kit.rep_left("p", "rep-a"), kit.rep_changed("p", "rep-a", capacity=None))
    assert kit.table("pools")["p"]["members"] == ["rep-b", "rep-c", "rep-a"]
    await feed(kit, kit.rep_changed("p", "rep-c", capacity=None, position=0))
    await feed(kit, *(kit.lead_arrived("p", f"lead-{n}") for n in range(3)))
    assert [s.json()["rep_id"] for s in kit.sent("assignments")] == ["rep-c", "rep-b", "rep-a"]


async def test_pool_state_stored_sorted_before_goes_on_in_that_order(kit: Kit) -> None:
    kit.write("pools", "p", pool_state(["rep-a", "rep-c"], "rep-a"))  # members sorted, as stored before
    for r in ("rep-a", "rep-c"):
        kit.write("reps", f"p|{r}", {"rep_id": r, "capacity": 10})
    await feed(kit, kit.rep_changed("p", "rep-b"))
    assert kit.table("pools")["p"]["members"] == ["rep-a", "rep-c", "rep-b"]
    await feed(kit, *(kit.lead_arrived("p", f"lead-{n}") for n in range(3)))
    assert [s.json()["rep_id"] for s in kit.sent("assignments")] == ["rep-c", "rep-b", "rep-a"]


async def test_when_the_last_chosen_rep_leaves_the_next_in_order_is_still_next(kit: Kit) -> None:
    kit.write("pools", "p", pool_state(["rep-c", "rep-b", "rep-a"], "rep-b"))  # all tied: only order counts
    for r in ("rep-a", "rep-b", "rep-c"):
        kit.write("reps", f"p|{r}", {"rep_id": r, "capacity": 10})
    await feed(kit, kit.rep_left("p", "rep-b"))
    assert kit.table("pools")["p"] == pool_state(["rep-c", "rep-a"], "rep-c")
    await feed(kit, kit.lead_arrived("p", "lead-1"))
    assert kit.sent("assignments")[-1].json()["rep_id"] == "rep-a"  # after rep-b, not back to the top
