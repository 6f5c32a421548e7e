"""match_deals: the lead index, parking deals that overtake their lead, the wait, index expiry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from agents.match_deals import MAX_PARKED
from schemas.internal import DealUnrouted
from tests.agents.conftest import LEAD_EVENTS, LONG_AGO, Kit

pytestmark = pytest.mark.asyncio


async def feed(kit: Kit, *records: tuple[bytes, bytes]) -> dict[int, bool]:
    async with kit.agent("match_deals").test_context() as agent:
        for key, value in records:
            await agent.put(value=value, key=key)
        return dict(agent.results)


def forwarded(kit: Kit) -> list[tuple[bytes | None, dict]]:
    return [(s.key, s.json()) for s in kit.sent("pool_events")]


def parked(kit: Kit, lead_id: str) -> list[DealUnrouted]:
    return [DealUnrouted.model_validate(p) for p in kit.table("parked_deals").get(lead_id) or []]


def waited_out(kit: Kit) -> datetime:
    """A first_seen_at older than the wait (match_deals measures the wait on the wall clock)."""
    return datetime.now(UTC) - timedelta(seconds=kit.ctx.settings.unknown_lead_wait_seconds + 60)


# --- the index -----------------------------------------------------------------------------------


async def test_index_entry_records_pool_owner_decision_and_time(kit: Kit) -> None:
    before = datetime.now(UTC)
    assert await feed(kit, (b"lead-1", kit.lead_indexed("lead-1", "emea", "rep-a"))) == {0: True}
    entry = kit.table("lead_index")["lead-1"]
    assert {k: v for k, v in entry.items() if k != "indexed_at"} == {
        "pool": "emea",
        "rep_id": "rep-a",
        "decision_id": "d-lead-1",
    }
    assert before <= datetime.fromisoformat(entry["indexed_at"]) <= datetime.now(UTC)
    assert kit.sent_total() == dict.fromkeys(kit.sent_total(), 0)


async def test_deal_after_its_lead_is_forwarded_at_once(kit: Kit) -> None:
    await feed(kit, (b"lead-1", kit.lead_indexed("lead-1", "emea")))
    assert kit.sent("pool_events") == []
    deal = kit.deal_unrouted("lead-1", outcome="lost", amount=0.0)
    assert await feed(kit, (b"lead-1", kit.encode(deal))) == {0: True}
    [(key, body)] = forwarded(kit)
    assert key == b"emea"
    assert body["kind"] == "deal"
    assert body["deal"]["outcome"] == "lost"
    assert body["origin"]["offset"] == 42
    assert kit.table("parked_deals") == {}


async def test_the_index_wins_over_the_pool_a_deal_names(kit: Kit) -> None:
    await feed(kit, (b"lead-1", kit.lead_indexed("lead-1", "emea")))
    await feed(kit, (b"lead-1", kit.encode(kit.deal_unrouted("lead-1", pool="apac", rep_id="rep-a"))))
    assert [k for k, _ in forwarded(kit)] == [b"emea"]


async def test_unassigned_lead_still_receives_its_deal(kit: Kit) -> None:
    await feed(kit, (b"lead-1", kit.encode(kit.deal_unrouted("lead-1"))))
    await feed(kit, (b"lead-1", kit.lead_indexed("lead-1", "p", rep_id=None)))
    assert [k for k, _ in forwarded(kit)] == [b"p"]
    assert kit.table("lead_index")["lead-1"]["rep_id"] is None


async def test_index_only_serves_its_own_lead(kit: Kit) -> None:
    await feed(
        kit,
        (b"lead-1", kit.lead_indexed("lead-1", "emea")),
        (b"lead-2", kit.encode(kit.deal_unrouted("lead-2"))),
    )
    assert kit.sent("pool_events") == []
    assert set(kit.table("parked_deals")) == {"lead-2"}


# --- parking -------------------------------------------------------------------------------------


async def test_deal_before_its_lead_is_parked_then_forwarded_when_indexed(kit: Kit) -> None:
    deal = kit.deal_unrouted("lead-1", amount=900.0, first_seen_at=LONG_AGO)
    before = datetime.now(UTC)
    assert await feed(kit, (b"lead-1", kit.encode(deal))) == {0: True}
    after = datetime.now(UTC)

    [stored] = parked(kit, "lead-1")
    assert stored.deal == deal.deal
    assert stored.origin == deal.origin
    # the wait starts when the deal is parked (wall clock), not at its Kafka timestamp: a worker catching up
    # on lag must not give up on deals that only now had their chance to meet their lead
    assert before <= stored.first_seen_at <= after
    assert kit.sent_total() == dict.fromkeys(kit.sent_total(), 0)

    assert await feed(kit, (b"lead-1", kit.lead_indexed("lead-1", "emea", "rep-a"))) == {0: True}
    [(key, body)] = forwarded(kit)
    assert key == b"emea"
    assert body["kind"] == "deal"
    assert body["pool"] == "emea"
    assert body["deal"] == json.loads(deal.deal.model_dump_json())
    assert body["origin"] == {"topic": "deals.closed", "partition": 3, "offset": 42}
    assert kit.table("parked_deals") == {}
    assert kit.sent("dlq") == []


async def test_several_deals_wait_for_one_lead_and_leave_in_order(kit: Kit) -> None:
    amounts = [100.0, 200.0, 300.0]
    await feed(kit, *((b"lead-1", kit.encode(kit.deal_unrouted("lead-1", amount=a))) for a in amounts))
    assert [p.deal.amount for p in parked(kit, "lead-1")] == amounts
    await feed(kit, (b"lead-1", kit.lead_indexed("lead-1", "emea")))
    assert [(k, b["deal"]["amount"]) for k, b in forwarded(kit)] == [(b"emea", a) for a in amounts]
    assert kit.table("parked_deals") == {}


async def test_too_many_deals_for_one_lead(kit: Kit) -> None:
    deals = [kit.deal_unrouted("lead-1", amount=float(i)) for i in range(MAX_PARKED)]
    await feed(kit, *((b"lead-1", kit.encode(d)) for d in deals))
    assert len(parked(kit, "lead-1")) == MAX_PARKED

    extra = kit.deal_unrouted("lead-1", amount=99.0)
    named = kit.deal_unrouted("lead-1", amount=98.0, pool="emea", rep_id="rep-a")
    assert await feed(kit, (b"lead-1", kit.encode(extra)), (b"lead-1", kit.encode(named))) == {0: True, 1: True}
    # one more without pool and rep: dead-lettered at once; one that names both: forwarded to that pool
    [dl] = kit.sent("dlq")
    assert dl.key == b"lead-1"
    assert json.loads(dl.value)["amount"] == 99.0
    assert dl.header("x-leadrelay-reason") == "unknown_lead"
    assert "more than" in dl.header("x-leadrelay-error-message")
    [(key, body)] = forwarded(kit)
    assert (key, body["deal"]["amount"]) == (b"emea", 98.0)
    assert len(parked(kit, "lead-1")) == MAX_PARKED  # the parked ones still wait


# --- the wait ------------------------------------------------------------------------------------


async def test_pending_expired_before_the_wait_keeps_the_deal(kit: Kit) -> None:
    """The sweep's hint is re-checked: a deal parked just now keeps waiting."""
    await feed(kit, (b"lead-1", kit.encode(kit.deal_unrouted("lead-1"))))
    snapshot = kit.table("parked_deals")
    assert await feed(kit, (b"lead-1", kit.pending_expired("lead-1"))) == {0: True}
    assert kit.table("parked_deals") == snapshot
    assert kit.sent_total() == dict.fromkeys(kit.sent_total(), 0)


async def test_expired_parked_deal_is_dead_lettered_with_its_origin(kit: Kit) -> None:
    deal = kit.deal_unrouted("lead-1", amount=123.0, first_seen_at=waited_out(kit))
    kit.park("lead-1", deal)
    assert await feed(kit, (b"lead-1", kit.pending_expired("lead-1"))) == {0: True}

    [dl] = kit.sent("dlq")
    assert dl.key == b"lead-1"
    assert dl.value == deal.deal.model_dump_json().encode()  # the deal as published, not the envelope
    assert dl.header("x-leadrelay-reason") == "unknown_lead"
    assert dl.header("x-leadrelay-error-field") == "lead_id"
    assert dl.header("x-leadrelay-source-topic") == "deals.closed"
    assert dl.header("x-leadrelay-source-partition") == "3"
    assert dl.header("x-leadrelay-source-offset") == "42"
    assert kit.table("parked_deals") == {}

    # Its lead showing up later forwards nothing: the deal went to the DLQ exactly once.
    await feed(kit, (b"lead-1", kit.lead_indexed("lead-1", "emea")))
    assert kit.sent("pool_events") == []
    assert len(kit.sent("dlq")) == 1


async def test_expired_deal_naming_pool_and_rep_goes_to_that_pool(kit: Kit) -> None:
    """A lead decided outside leadrelay still teaches that rep's performance: no DLQ."""
    deal = kit.deal_unrouted("lead-1", pool="emea", rep_id="rep-a", first_seen_at=waited_out(kit))
    kit.park("lead-1", deal)
    assert await feed(kit, (b"lead-1", kit.pending_expired("lead-1"))) == {0: True}
    [(key, body)] = forwarded(kit)
    assert key == b"emea"
    assert (body["pool"], body["deal"]["rep_id"]) == ("emea", "rep-a")
    assert body["origin"]["offset"] == 42
    assert kit.sent("dlq") == []
    assert kit.table("parked_deals") == {}


@pytest.mark.parametrize(("pool", "rep_id"), [("emea", None), (None, "rep-a")])
async def test_expired_deal_naming_only_pool_or_rep_is_dead_lettered(kit: Kit, pool, rep_id) -> None:
    kit.park("lead-1", kit.deal_unrouted("lead-1", pool=pool, rep_id=rep_id, first_seen_at=waited_out(kit)))
    await feed(kit, (b"lead-1", kit.pending_expired("lead-1")))
    assert [d.header("x-leadrelay-reason") for d in kit.sent("dlq")] == ["unknown_lead"]
    assert kit.sent("pool_events") == []


async def test_pending_expired_gives_up_only_on_the_deals_that_waited_out(kit: Kit) -> None:
    old = kit.deal_unrouted("lead-1", amount=1.0, first_seen_at=waited_out(kit))
    fresh = kit.deal_unrouted("lead-1", amount=2.0, first_seen_at=datetime.now(UTC))
    kit.park("lead-1", old, fresh)
    await feed(kit, (b"lead-1", kit.pending_expired("lead-1")))
    assert [json.loads(d.value)["amount"] for d in kit.sent("dlq")] == [1.0]
    assert [p.deal.amount for p in parked(kit, "lead-1")] == [2.0]
    # the lead arrives: the one still waiting is forwarded
    await feed(kit, (b"lead-1", kit.lead_indexed("lead-1", "emea")))
    assert [b["deal"]["amount"] for _, b in forwarded(kit)] == [2.0]


async def test_expired_parked_deal_without_origin_names_the_deals_topic(kit: Kit) -> None:
    deal = kit.deal_unrouted("lead-1")
    kit.park("lead-1", DealUnrouted(deal=deal.deal, origin=None, first_seen_at=waited_out(kit)))
    await feed(kit, (b"lead-1", kit.pending_expired("lead-1")))
    [dl] = kit.sent("dlq")
    assert dl.header("x-leadrelay-source-topic") == kit.ctx.settings.topic_deals_closed
    assert dl.header("x-leadrelay-source-partition") == "-1"
    assert dl.header("x-leadrelay-source-offset") == "-1"


async def test_pending_expired_for_a_deal_already_forwarded_does_nothing(kit: Kit) -> None:
    await feed(
        kit,
        (b"lead-1", kit.encode(kit.deal_unrouted("lead-1"))),
        (b"lead-1", kit.lead_indexed("lead-1", "emea")),
        (b"lead-1", kit.pending_expired("lead-1")),
        (b"lead-7", kit.pending_expired("lead-7")),
    )
    assert len(kit.sent("pool_events")) == 1
    assert kit.sent("dlq") == []


# --- index expiry --------------------------------------------------------------------------------


async def test_index_expired_removes_only_entries_past_retention(kit: Kit) -> None:
    retention = timedelta(days=kit.ctx.settings.index_retention_days)
    now = datetime.now(UTC)
    for lead_id, at in (
        ("old", now - retention - timedelta(hours=1)),
        ("recent", now - retention + timedelta(hours=1)),
    ):
        entry = {"pool": "emea", "rep_id": "rep-a", "decision_id": f"d-{lead_id}", "indexed_at": at.isoformat()}
        kit.write("lead_index", lead_id, entry)

    assert await feed(kit, (b"old", kit.index_expired("old", "recent", "never-indexed"))) == {0: True}
    assert set(kit.table("lead_index")) == {"recent"}
    assert kit.sent_total() == dict.fromkeys(kit.sent_total(), 0)

    # A deal for the forgotten lead now waits like any deal whose lead is unknown.
    await feed(kit, (b"old", kit.encode(kit.deal_unrouted("old"))))
    assert kit.sent("pool_events") == []
    assert len(parked(kit, "old")) == 1


async def test_reindexed_lead_is_not_expired_by_a_stale_hint(kit: Kit) -> None:
    """The lead was re-emitted (a duplicate) after the sweep looked: its fresh index entry stays."""
    await feed(kit, (b"lead-1", kit.lead_indexed("lead-1", "emea")))
    await feed(kit, (b"lead-1", kit.index_expired("lead-1")))
    assert set(kit.table("lead_index")) == {"lead-1"}


async def test_garbage_on_the_lead_topic_is_dead_lettered(kit: Kit) -> None:
    results = await feed(kit, (b"lead-1", b'{"kind": "lead"}'), (b"lead-1", kit.lead_indexed("lead-1", "p")))
    assert results == {0: False, 1: True}
    [dl] = kit.sent("dlq")
    assert dl.header("x-leadrelay-reason") == "schema_violation"
    assert dl.header("x-leadrelay-source-topic") == LEAD_EVENTS


async def test_pool_less_deal_closes_its_lead_end_to_end(kit: Kit) -> None:
    """deals.closed -> ingest_deals -> lead-events -> match_deals -> pool-events -> route, via the mocks."""
    async with kit.agent("route").test_context() as route:
        await route.put(value=kit.rep_changed("p", "rep-a"), key=b"p")
        await route.put(value=kit.lead_arrived("p", "lead-1"), key=b"p")
    [indexed] = kit.sent("lead_events")
    assert kit.table("loads")["p|rep-a"]["open"] == 1

    async with kit.agent("ingest_deals").test_context() as ingest:
        await ingest.put(value=kit.raw(kit.deal(lead_id="lead-1", amount=10.0)), key=b"lead-1")
    unrouted = kit.sent("lead_events")[-1]
    assert unrouted.json()["kind"] == "deal"

    # The deal overtakes the decision on lead-events: parked first, then released by the index.
    await feed(kit, (unrouted.key, unrouted.value), (indexed.key, indexed.value))
    routed = kit.sent("pool_events")[-1]
    assert routed.key == b"p"

    async with kit.agent("route").test_context() as route:
        await route.put(value=routed.value, key=routed.key)
        assert route.results == {0: True}
    assert kit.table("loads")["p|rep-a"]["open"] == 0
    assert kit.table("ledger")["p|lead-1"]["status"] == "won"
    assert kit.table("parked_deals") == {}


async def test_deal_of_a_lead_decided_elsewhere_teaches_performance_end_to_end(kit: Kit) -> None:
    """A deal naming pool and rep for a lead leadrelay never saw: after the wait it counts for that rep."""
    deal = kit.deal_unrouted("lead-x", pool="p", rep_id="rep-a", amount=70.0, first_seen_at=waited_out(kit))
    kit.park("lead-x", deal)
    await feed(kit, (b"lead-x", kit.pending_expired("lead-x")))
    [routed] = kit.sent("pool_events")
    async with kit.agent("route").test_context() as route:
        await route.put(value=routed.value, key=routed.key)
        assert route.results == {0: True}
    day = deal.deal.closed_at.date().isoformat()
    assert kit.table("performance") == {"p|rep-a": {day: [1, 0, 70.0]}}
    assert kit.table("ledger") == {}
    assert kit.sent("dlq") == []


# --- leads: the first pool stands ------------------------------------------------------------------


async def test_first_sight_of_a_lead_fixes_its_pool_before_the_decision(kit: Kit) -> None:
    assert await feed(kit, (b"lead-1", kit.lead_arrived("emea"))) == {0: True}
    [(key, body)] = forwarded(kit)
    assert (key, body["kind"], body["pool"]) == (b"emea", "lead", "emea")
    entry = kit.table("lead_index")["lead-1"]
    assert (entry["pool"], entry["rep_id"], entry["decision_id"]) == ("emea", None, None)


async def test_a_re_sent_lead_that_resolves_to_another_pool_goes_to_its_first_pool(kit: Kit) -> None:
    await feed(kit, (b"lead-1", kit.lead_arrived("emea")))
    await feed(kit, (b"lead-1", kit.lead_indexed("lead-1", "emea", "rep-a")))
    kit.forget_sent()
    assert await feed(kit, (b"lead-1", kit.lead_arrived("apac"))) == {0: True}
    [(key, body)] = forwarded(kit)
    assert (key, body["pool"]) == (b"emea", "emea")
    assert kit.table("lead_index")["lead-1"]["rep_id"] == "rep-a"  # the decision's owner is kept


async def test_a_re_send_before_the_decision_came_back_also_keeps_the_first_pool(kit: Kit) -> None:
    await feed(kit, (b"lead-1", kit.lead_arrived("emea")), (b"lead-1", kit.lead_arrived("apac")))
    assert [(k, b["pool"]) for k, b in forwarded(kit)] == [(b"emea", "emea"), (b"emea", "emea")]


async def test_a_deal_after_its_lead_arrived_follows_it_into_the_pool_log_at_once(kit: Kit) -> None:
    await feed(kit, (b"lead-1", kit.lead_arrived("emea")))
    await feed(kit, (b"lead-1", kit.encode(kit.deal_unrouted("lead-1"))))
    assert [(k, b["kind"]) for k, b in forwarded(kit)] == [(b"emea", "lead"), (b"emea", "deal")]
    assert kit.table("parked_deals") == {}


async def test_re_sent_lead_with_a_new_pool_keeps_one_decision_and_one_load(kit: Kit) -> None:
    """End to end through the agents: ingest -> lead log -> pool log -> route, sent twice with pools
    a then b. The second send is a duplicate of the first decision; pool b decides nothing."""
    for pool in ("a", "b"):
        async with kit.agent("route").test_context() as route:
            await route.put(value=kit.rep_changed(pool, "rep-a"), key=pool.encode())
    outputs = []
    for pool in ("a", "b"):
        kit.forget_sent()
        async with kit.agent("ingest_leads").test_context() as ingest:
            await ingest.put(value=kit.raw(kit.lead(lead_id="lead-9", pool=pool)), key=b"lead-9")
        [lead_log] = kit.sent("lead_events")
        kit.forget_sent()
        async with kit.agent("match_deals").test_context() as match:
            await match.put(value=lead_log.value, key=lead_log.key)
        [arrived] = kit.sent("pool_events")
        kit.forget_sent()
        async with kit.agent("route").test_context() as route:
            await route.put(value=arrived.value, key=arrived.key)
        [decision] = kit.sent("assignments")
        outputs.append(decision.json())
    assert outputs[0] == outputs[1]
    assert outputs[0]["pool"] == "a" and outputs[0]["rep_id"] == "rep-a"
    loads = kit.table("loads")
    assert loads["a|rep-a"]["open"] == 1
    assert "b|rep-a" not in loads or loads["b|rep-a"]["open"] == 0
    assert "b|lead-9" not in kit.table("ledger")


async def test_deals_that_overtook_their_lead_follow_it_into_the_pool_log(kit: Kit) -> None:
    await feed(kit, (b"lead-1", kit.encode(kit.deal_unrouted("lead-1", outcome="won", amount=5.0))))
    assert forwarded(kit) == []
    await feed(kit, (b"lead-1", kit.lead_arrived("emea")))
    assert [(k, b["kind"]) for k, b in forwarded(kit)] == [(b"emea", "lead"), (b"emea", "deal")]
    assert kit.table("parked_deals") == {}
