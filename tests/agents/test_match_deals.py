"""The leads stage's lead index: the first pool stands, deals follow their lead or wait for it, the
wait, index expiry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from schemas.events import DealClosed
from schemas.internal import DealUnrouted, IndexExpired, LeadIndexed, Origin, PendingExpired
from tests.agents.conftest import (
    LONG_AGO,
    NOW,
    Harness,
    deal,
    deal_unrouted,
    encode,
    home,
    lead,
    leads_at,
    raw,
    rep_changed,
)

pytestmark = pytest.mark.asyncio
MAX_PARKED = 10  # deals one lead may keep waiting; the next is given up at once


async def arrive(h: Harness, lead_id: str = "lead-1", pool: str = "emea", at: datetime = NOW) -> None:
    """A lead on its own partition of leads.new (leads stage only)."""
    await h.feed("leads", "leads.new", home(lead_id), raw(lead(lead_id=lead_id, pool=pool)), lead_id.encode(), at=at)


async def close(h: Harness, lead_id: str = "lead-1", **fields: object) -> None:
    """A deal on its lead's partition of deals.closed (leads stage only)."""
    await h.feed("leads", "deals.closed", home(lead_id), raw(deal(lead_id=lead_id, **fields)), lead_id.encode())


def forwarded(h: Harness) -> list[tuple[bytes | None, dict]]:
    return [(s.key, s.json()) for s in h.sent("pool_events")]


def deals_forwarded(h: Harness) -> list[tuple[bytes | None, dict]]:
    return [(k, b) for k, b in forwarded(h) if b["kind"] == "deal"]


def parked(h: Harness, lead_id: str) -> list[DealUnrouted]:
    return [DealUnrouted.model_validate(p) for p in h.table("parked-deals").get(lead_id) or []]


def waited_out(h: Harness) -> datetime:
    """A moment past the wait of a deal parked now (the wait is measured on the wall clock)."""
    return datetime.now(UTC) + timedelta(seconds=h.settings.unknown_lead_wait_seconds + 60)


# --- the index -----------------------------------------------------------------------------------


async def test_a_lead_indexed_by_the_legacy_runtime_records_pool_owner_decision_and_time(h: Harness) -> None:
    """A LeadIndexed the Faust runtime left on the lead log is still applied."""
    indexed = LeadIndexed(lead_id="lead-1", pool="emea", rep_id="rep-a", decision_id="d-lead-1")
    before = datetime.now(UTC)
    await h.feed("leads", h.topics["lead_events"], home("lead-1"), encode(indexed), b"lead-1", at=LONG_AGO)
    entry = h.table("lead-index")["lead-1"]
    assert h.nothing_sent()
    assert {k: v for k, v in entry.items() if k != "indexed_at"} == {
        "pool": "emea",
        "rep_id": "rep-a",
        "decision_id": "d-lead-1",
    }
    assert before <= datetime.fromisoformat(entry["indexed_at"]) <= datetime.now(UTC)


async def test_a_lead_caught_up_on_long_after_it_was_published_stays_findable(h: Harness) -> None:
    """Index retention is "days after its decision": a lead handled today is findable for that long."""
    await arrive(h, pool="emea", at=LONG_AGO)  # a backfill, or a worker far behind
    await h.housekeep("leads", home("lead-1"), datetime.now(UTC))
    assert "lead-1" in h.table("lead-index")


async def test_deal_after_its_lead_is_forwarded_at_once(h: Harness) -> None:
    await arrive(h, pool="emea")
    await close(h, outcome="lost", amount=0.0)
    [(key, body)] = deals_forwarded(h)
    assert key == b"emea"
    assert body["deal"]["outcome"] == "lost"
    assert body["origin"] == {"topic": "deals.closed", "partition": home("lead-1"), "offset": 0}
    assert h.table("parked-deals") == {}


async def test_the_index_wins_over_the_pool_a_deal_names(h: Harness) -> None:
    await arrive(h, pool="emea")
    await close(h, pool="apac", rep_id="rep-a")
    assert [k for k, _ in deals_forwarded(h)] == [b"emea"]


async def test_unassigned_lead_still_receives_its_deal(h: Harness) -> None:
    await h.lead(raw(lead(pool="p")), b"lead-1")  # nobody in pool p: decided unassigned
    assert h.sent("assignments")[0].json()["rep_id"] is None
    await h.deal(raw(deal()), b"lead-1")
    assert [k for k, _ in deals_forwarded(h)] == [b"p"]
    assert h.sent("dlq") == []  # route found the unassigned decision in its ledger
    assert h.table("lead-index")["lead-1"]["rep_id"] is None


async def test_index_only_serves_its_own_lead(h: Harness) -> None:
    first, second = leads_at(home("lead-1"), 2)  # one task holds both
    await arrive(h, first)
    h.forget()
    await close(h, second)
    assert h.sent("pool_events") == []
    assert set(h.table("parked-deals")) == {second}


# --- parking -------------------------------------------------------------------------------------


async def test_deal_before_its_lead_is_parked_then_forwarded_when_the_lead_arrives(h: Harness) -> None:
    p = home("lead-1")
    record = raw(deal(amount=900.0))
    before = datetime.now(UTC)
    await h.feed("leads", "deals.closed", p, record, b"lead-1", at=LONG_AGO)
    after = datetime.now(UTC)

    [stored] = parked(h, "lead-1")
    assert stored.deal == DealClosed.model_validate_json(record)
    assert stored.origin == Origin(topic="deals.closed", partition=p, offset=0)
    # the wait starts when the deal is parked (wall clock), not at its Kafka timestamp: a worker catching up
    # on lag must not give up on deals that only now had their chance to meet their lead
    assert before <= stored.first_seen_at <= after
    assert h.nothing_sent()

    await arrive(h, pool="emea")
    [(key, body)] = deals_forwarded(h)
    assert key == b"emea"
    assert body["kind"] == "deal"
    assert body["pool"] == "emea"
    assert body["deal"] == json.loads(stored.deal.model_dump_json())
    assert body["origin"] == {"topic": "deals.closed", "partition": p, "offset": 0}
    assert h.table("parked-deals") == {}
    assert h.sent("dlq") == []


async def test_several_deals_wait_for_one_lead_and_leave_in_order(h: Harness) -> None:
    amounts = [100.0, 200.0, 300.0]
    for a in amounts:
        await close(h, amount=a)
    assert [p.deal.amount for p in parked(h, "lead-1")] == amounts
    await arrive(h, pool="emea")
    assert [(k, b["deal"]["amount"]) for k, b in deals_forwarded(h)] == [(b"emea", a) for a in amounts]
    assert h.table("parked-deals") == {}


async def test_too_many_deals_for_one_lead(h: Harness) -> None:
    for i in range(MAX_PARKED):
        await close(h, amount=float(i))
    assert len(parked(h, "lead-1")) == MAX_PARKED
    assert h.nothing_sent()

    await close(h, amount=99.0)
    await close(h, amount=98.0, pool="emea", rep_id="rep-a")
    # one more without pool and rep: dead-lettered at once; one that names both: forwarded to that pool
    [dl] = h.sent("dlq")
    assert dl.key == b"lead-1"
    assert dl.value is not None
    assert json.loads(dl.value)["amount"] == 99.0
    assert dl.header("x-leadrelay-reason") == "unknown_lead"
    assert "more than" in dl.header("x-leadrelay-error-message")
    [(key, body)] = forwarded(h)
    assert (key, body["deal"]["amount"]) == (b"emea", 98.0)
    assert len(parked(h, "lead-1")) == MAX_PARKED  # the parked ones still wait


# --- the wait ------------------------------------------------------------------------------------


async def test_housekeeping_before_the_wait_keeps_the_deal(h: Harness) -> None:
    await close(h)
    rows = h.rows("leads", home("lead-1"))
    assert await h.housekeep("leads", home("lead-1"), datetime.now(UTC)) == []
    assert h.rows("leads", home("lead-1")) == rows


async def test_expired_parked_deal_is_dead_lettered_with_its_origin(h: Harness) -> None:
    p = home("lead-1")
    other = (p + 1) % h.settings.partitions
    record = raw(deal(amount=123.0))
    await h.deal(record, b"crm-1", partition=other)  # off its partition: passed on, parked at home
    assert len(parked(h, "lead-1")) == 1
    h.forget()
    await h.housekeep("leads", p, waited_out(h))

    [dl] = h.sent("dlq")
    assert dl.key == b"lead-1"
    assert dl.value == parked_deal_bytes(record)  # the deal as published, not the envelope
    assert dl.header("x-leadrelay-reason") == "unknown_lead"
    assert dl.header("x-leadrelay-error-field") == "lead_id"
    assert dl.header("x-leadrelay-source-topic") == "deals.closed"
    assert dl.header("x-leadrelay-source-partition") == str(other)
    assert dl.header("x-leadrelay-source-offset") == "0"
    assert h.table("parked-deals") == {}

    # Its lead showing up later forwards nothing but itself: the deal went to the DLQ exactly once.
    await arrive(h, pool="emea")
    assert deals_forwarded(h) == []
    assert len(h.sent("dlq")) == 1


def parked_deal_bytes(record: bytes) -> bytes:
    """The deal as the DLQ carries it: validated and dumped again (same fields as published)."""
    return DealClosed.model_validate_json(record).model_dump_json().encode()


async def test_expired_deal_naming_pool_and_rep_goes_to_that_pool(h: Harness) -> None:
    """A lead decided outside leadrelay still teaches that rep's performance: no DLQ."""
    await close(h, pool="emea", rep_id="rep-a")
    await h.housekeep("leads", home("lead-1"), waited_out(h))
    [(key, body)] = forwarded(h)
    assert key == b"emea"
    assert (body["pool"], body["deal"]["rep_id"]) == ("emea", "rep-a")
    assert body["origin"] == {"topic": "deals.closed", "partition": home("lead-1"), "offset": 0}
    assert h.sent("dlq") == []
    assert h.table("parked-deals") == {}


@pytest.mark.parametrize(("pool", "rep_id"), [("emea", None), (None, "rep-a")])
async def test_expired_deal_naming_only_pool_or_rep_is_dead_lettered(
    h: Harness, pool: str | None, rep_id: str | None
) -> None:
    await close(h, **{k: v for k, v in {"pool": pool, "rep_id": rep_id}.items() if v})
    await h.housekeep("leads", home("lead-1"), waited_out(h))
    assert [d.header("x-leadrelay-reason") for d in h.sent("dlq")] == ["unknown_lead"]
    assert h.sent("pool_events") == []


async def test_housekeeping_gives_up_only_on_the_deals_that_waited_out(h: Harness) -> None:
    now = datetime.now(UTC)
    wait = timedelta(seconds=h.settings.unknown_lead_wait_seconds)
    old = deal_unrouted("lead-1", amount=1.0, first_seen_at=now - wait - timedelta(seconds=60))
    fresh = deal_unrouted("lead-1", amount=2.0, first_seen_at=now)
    h.seed_parked("lead-1", old, fresh)
    await h.housekeep("leads", home("lead-1"), now)
    assert [json.loads(d.value or b"")["amount"] for d in h.sent("dlq")] == [1.0]
    assert [p.deal.amount for p in parked(h, "lead-1")] == [2.0]
    # the lead arrives: the one still waiting is forwarded
    await arrive(h, pool="emea")
    assert [b["deal"]["amount"] for _, b in deals_forwarded(h)] == [2.0]


async def test_expired_parked_deal_without_origin_names_the_deals_topic(h: Harness) -> None:
    """Parked rows from before deals carried their origin."""
    now = datetime.now(UTC)
    stale = deal_unrouted("lead-1").model_copy(update={"origin": None, "first_seen_at": LONG_AGO})
    h.seed_parked("lead-1", stale)
    await h.housekeep("leads", home("lead-1"), now)
    [dl] = h.sent("dlq")
    assert dl.header("x-leadrelay-source-topic") == h.settings.topic_deals_closed
    assert dl.header("x-leadrelay-source-partition") == "-1"
    assert dl.header("x-leadrelay-source-offset") == "-1"


async def test_housekeeping_after_the_deal_was_forwarded_does_nothing(h: Harness) -> None:
    await close(h)
    await arrive(h, pool="emea")
    assert len(h.sent("pool_events")) == 2
    h.forget()
    assert await h.housekeep_everywhere(waited_out(h)) == []
    assert h.sent("dlq") == []


async def test_a_legacy_housekeeping_request_on_the_lead_log_is_left_to_housekeeping(h: Harness) -> None:
    """PendingExpired/IndexExpired the Faust runtime left on the lead log change nothing by themselves."""
    p = home("lead-1")
    old = leads_at(p, 2)[1]
    h.seed_parked("lead-1", deal_unrouted("lead-1", first_seen_at=LONG_AGO))
    entry = {"pool": "p", "rep_id": None, "decision_id": None, "indexed_at": LONG_AGO.isoformat()}
    h.seed("leads", p, {f"lead-index|{old}": entry})
    rows = h.rows("leads", p)
    await h.feed("leads", h.topics["lead_events"], p, encode(PendingExpired(lead_id="lead-1")), b"lead-1")
    await h.feed("leads", h.topics["lead_events"], p, encode(IndexExpired(lead_ids=[old])), old.encode())
    assert h.rows("leads", p) == rows
    assert h.nothing_sent()


# --- index expiry --------------------------------------------------------------------------------


async def test_housekeeping_removes_only_index_entries_past_retention(h: Harness) -> None:
    retention = timedelta(days=h.settings.index_retention_days)
    now = datetime.now(UTC)
    for lead_id, at in (
        ("old", now - retention - timedelta(hours=1)),
        ("recent", now - retention + timedelta(hours=1)),
    ):
        entry = {"pool": "emea", "rep_id": "rep-a", "decision_id": f"d-{lead_id}", "indexed_at": at.isoformat()}
        h.seed("leads", home(lead_id), {f"lead-index|{lead_id}": entry})

    assert await h.housekeep_everywhere(now) == []
    assert set(h.table("lead-index")) == {"recent"}

    # A deal for the forgotten lead now waits like any deal whose lead is unknown.
    await close(h, "old")
    assert h.sent("pool_events") == []
    assert len(parked(h, "old")) == 1


async def test_garbage_on_the_lead_topic_is_dead_lettered(h: Harness) -> None:
    p = home("lead-1")
    await h.feed("leads", h.topics["lead_events"], p, b'{"kind": "lead"}', b"lead-1")
    await h.lead(raw(lead(pool="p")), b"lead-1", partition=(p + 1) % h.settings.partitions)  # via the lead log
    [dl] = h.sent("dlq")
    assert dl.header("x-leadrelay-reason") == "schema_violation"
    assert dl.header("x-leadrelay-source-topic") == h.topics["lead_events"]
    assert dl.header("x-leadrelay-source-offset") == "0"
    assert h.table("lead-index")["lead-1"]["pool"] == "p"


async def test_pool_less_deal_closes_its_lead_end_to_end(h: Harness) -> None:
    """deals.closed (any partition) -> leads -> lead-events -> leads -> pool-events -> route."""
    await h.route(rep_changed("p", "rep-a"))
    await h.lead(raw(lead(pool="p")), b"lead-1")
    assert h.table("loads")["p|rep-a"]["open"] == 1

    other = (home("lead-1") + 1) % h.settings.partitions
    sent = await h.deal(raw(deal(amount=10.0)), b"crm-1", partition=other)
    assert [(s.topic, s.key) for s in sent] == [(h.topics["lead_events"], b"lead-1"), (h.topics["pool_events"], b"p")]

    assert h.table("loads")["p|rep-a"]["open"] == 0
    assert h.table("ledger")["p|lead-1"]["status"] == "won"
    assert h.table("parked-deals") == {}
    assert h.sent("dlq") == []


async def test_deal_of_a_lead_decided_elsewhere_teaches_performance_end_to_end(h: Harness) -> None:
    """A deal naming pool and rep for a lead leadrelay never saw: after the wait it counts for that rep."""
    await h.deal(raw(deal(lead_id="lead-x", pool="p", rep_id="rep-a", amount=70.0)), b"lead-x")
    assert h.nothing_sent()
    await h.deliver(await h.housekeep("leads", home("lead-x"), waited_out(h)))
    day = NOW.date().isoformat()  # the deal's closed_at
    assert h.table("performance") == {"p|rep-a": {day: [1, 0, 70.0]}}
    assert h.table("ledger") == {}
    assert h.sent("dlq") == []


# --- leads: the first pool stands ------------------------------------------------------------------


async def test_first_sight_of_a_lead_fixes_its_pool_before_the_decision(h: Harness) -> None:
    await arrive(h, pool="emea")
    [(key, body)] = forwarded(h)
    assert (key, body["kind"], body["pool"]) == (b"emea", "lead", "emea")
    entry = h.table("lead-index")["lead-1"]
    assert (entry["pool"], entry["rep_id"], entry["decision_id"]) == ("emea", None, None)


async def test_a_re_sent_lead_that_resolves_to_another_pool_goes_to_its_first_pool(h: Harness) -> None:
    await h.route(rep_changed("emea", "rep-a"), pool="emea")
    await h.lead(raw(lead(pool="emea")), b"lead-1")
    entry = h.table("lead-index")["lead-1"]
    h.forget()
    await h.lead(raw(lead(pool="apac")), b"lead-1", at=NOW + timedelta(minutes=1))
    [(key, body)] = forwarded(h)
    assert (key, body["pool"]) == (b"emea", "emea")
    assert h.table("lead-index")["lead-1"] == entry  # pinned at first sight, time and all
    [decision] = h.sent("assignments")
    assert (decision.json()["pool"], decision.json()["rep_id"]) == ("emea", "rep-a")


async def test_a_re_send_before_route_decided_also_keeps_the_first_pool(h: Harness) -> None:
    await arrive(h, pool="emea")
    await arrive(h, pool="apac")
    assert [(k, b["pool"]) for k, b in forwarded(h)] == [(b"emea", "emea"), (b"emea", "emea")]


async def test_a_deal_after_its_lead_arrived_follows_it_into_the_pool_log_at_once(h: Harness) -> None:
    await arrive(h, pool="emea")
    await close(h)
    assert [(k, b["kind"]) for k, b in forwarded(h)] == [(b"emea", "lead"), (b"emea", "deal")]
    assert h.table("parked-deals") == {}


async def test_re_sent_lead_with_a_new_pool_keeps_one_decision_and_one_load(h: Harness) -> None:
    """End to end: leads.new -> leads -> pool log -> route, sent twice with pools a then b. The second
    send is a duplicate of the first decision; pool b decides nothing."""
    for pool in ("a", "b"):
        await h.route(rep_changed(pool, "rep-a"), pool=pool)
    for pool in ("a", "b"):
        await h.lead(raw(lead(lead_id="lead-9", pool=pool)), b"lead-9")
    first, second = (s.json() for s in h.sent("assignments"))
    assert first == second
    assert first["pool"] == "a" and first["rep_id"] == "rep-a"
    loads = h.table("loads")
    assert loads["a|rep-a"]["open"] == 1
    assert "b|rep-a" not in loads or loads["b|rep-a"]["open"] == 0
    assert "b|lead-9" not in h.table("ledger")


async def test_deals_that_overtook_their_lead_follow_it_into_the_pool_log(h: Harness) -> None:
    await close(h, outcome="won", amount=5.0)
    assert forwarded(h) == []
    await arrive(h, pool="emea")
    assert [(k, b["kind"]) for k, b in forwarded(h)] == [(b"emea", "lead"), (b"emea", "deal")]
    assert h.table("parked-deals") == {}
