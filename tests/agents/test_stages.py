"""The transactional runtime's stages without a broker: each stage's handler on one task, its sends
caught in place of the transactional producer, its rows committed to a real local store.

Covers what the runtime adds to the agents' functions: the lead index pinned at first sight, records
off their lead's partition passed on with their origin, dead letters naming the original record,
deals following their lead, housekeeping inside the task, and no send back from route.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.events import RepUpdated
from schemas.internal import LeadIndexed, PendingExpired, RepChanged
from streams.kafka.topics import home_partition as home
from streams.kafka.topics import lead_events_topic, pool_events_topic
from streams.runtime.loop import Event, Message
from tests.agents.conftest import NOW, PARTITIONS, Harness

pytestmark = pytest.mark.asyncio


def lead(lead_id: str = "lead-1", **extra: Any) -> bytes:
    body = {"lead_id": lead_id, "created_at": (NOW - timedelta(minutes=5)).isoformat(), **extra}
    body.setdefault("contact", {"email": "jane@example.com"})
    return json.dumps(body).encode()


def deal(lead_id: str = "lead-1", **extra: Any) -> bytes:
    return json.dumps(
        {"lead_id": lead_id, "outcome": "won", "amount": 10.0, "closed_at": NOW.isoformat(), **extra}
    ).encode()


# --- leads: hop 1 ----------------------------------------------------------------------------------


async def test_a_lead_on_its_own_partition_is_pinned_to_its_pool_and_sent_to_the_pool_log(h: Harness) -> None:
    p = home("lead-1", PARTITIONS)
    [out] = await h.feed("leads", h.settings.topic_leads_new, p, lead(pool="emea"), key=b"lead-1")
    assert (out.topic, out.key) == (pool_events_topic(h.settings), b"emea")
    body = out.json()
    assert body["kind"] == "lead" and body["pool"] == "emea"
    assert "contact" not in body["lead"], "contact data never reaches an internal topic"
    assert body["origin"] == {"topic": h.settings.topic_leads_new, "partition": p, "offset": 0}
    assert h.rows("leads", p)["lead-index|lead-1"]["pool"] == "emea"


async def test_a_lead_off_its_partition_is_passed_on_validated_with_its_origin_and_time(h: Harness) -> None:
    p = home("lead-1", PARTITIONS)
    other = (p + 1) % PARTITIONS
    sent_at = NOW - timedelta(seconds=3)
    [out] = await h.feed("leads", h.settings.topic_leads_new, other, lead(pool="emea"), key=None, at=sent_at)
    assert (out.topic, out.key, out.partition) == (lead_events_topic(h.settings), b"lead-1", p)
    body = out.json()
    assert (body["kind"], body["pool"]) == ("lead", "emea")
    assert body["origin"] == {"topic": h.settings.topic_leads_new, "partition": other, "offset": 0}
    assert "contact" not in body["lead"]
    assert out.timestamp_ms == int(sent_at.timestamp() * 1000), "the record keeps its time"
    assert h.rows("leads", other) == {}, "the foreign partition keeps nothing"
    # On the lead's partition it is handled as if it had arrived there, origin and all.
    [arrived] = await h.feed("leads", lead_events_topic(h.settings), p, out.value, out.key, at=sent_at)
    assert (arrived.topic, arrived.key) == (pool_events_topic(h.settings), b"emea")
    assert arrived.json()["origin"] == body["origin"]
    assert h.rows("leads", p)["lead-index|lead-1"]["pool"] == "emea"


async def test_a_deal_off_its_partition_is_passed_on_too(h: Harness) -> None:
    p = home("lead-1", PARTITIONS)
    [out] = await h.feed("leads", h.settings.topic_deals_closed, (p + 2) % PARTITIONS, deal(), key=b"crm-77")
    assert (out.topic, out.key, out.json()["kind"]) == (lead_events_topic(h.settings), b"lead-1", "deal")


async def test_the_legacy_runtimes_lead_log_is_read_on(h: Harness) -> None:
    """A worker switched from the Faust runtime finds LeadIndexed and housekeeping requests there."""
    p = home("lead-1", PARTITIONS)
    topic = lead_events_topic(h.settings)
    indexed = LeadIndexed(lead_id="lead-1", pool="emea", rep_id="rep-a", decision_id="d-1")
    assert await h.feed("leads", topic, p, indexed.model_dump_json().encode(), b"lead-1") == []
    assert h.rows("leads", p)["lead-index|lead-1"]["rep_id"] == "rep-a"
    assert await h.feed("leads", topic, p, PendingExpired(lead_id="lead-1").model_dump_json().encode()) == []


async def test_a_re_sent_lead_keeps_its_first_pool(h: Harness) -> None:
    p = home("lead-1", PARTITIONS)
    await h.feed("leads", h.settings.topic_leads_new, p, lead(pool="emea"))
    [again] = await h.feed("leads", h.settings.topic_leads_new, p, lead(pool="apac"))
    assert (again.key, again.json()["pool"]) == (b"emea", "emea")


async def test_a_deal_before_its_lead_waits_then_follows_it(h: Harness) -> None:
    p = home("lead-1", PARTITIONS)
    assert await h.feed("leads", h.settings.topic_deals_closed, p, deal()) == []
    sent = await h.feed("leads", h.settings.topic_leads_new, p, lead(pool="emea"))
    assert [(s.key, s.json()["kind"]) for s in sent] == [(b"emea", "lead"), (b"emea", "deal")]
    assert sent[1].json()["origin"] == {"topic": h.settings.topic_deals_closed, "partition": p, "offset": 0}
    assert not any(k.startswith("parked-deals|") for k in h.rows("leads", p))


async def test_bad_input_is_dead_lettered_with_the_record_as_it_arrived(h: Harness) -> None:
    [dl] = await h.feed("leads", h.settings.topic_leads_new, 2, b"{oops", key=b"k-1")
    assert (dl.topic, dl.key, dl.value) == (h.settings.topic_dlq, b"k-1", b"{oops")
    assert dl.headers["x-leadrelay-reason"] == b"invalid_json"
    assert dl.headers["x-leadrelay-source-partition"] == b"2"


async def test_a_parked_deal_past_its_wait_is_dead_lettered_as_unknown_lead_by_housekeeping(h: Harness) -> None:
    p = home("ghost", PARTITIONS)
    await h.feed("leads", h.settings.topic_deals_closed, p, deal("ghost"), key=b"ghost")
    later = datetime.now(UTC) + timedelta(seconds=h.settings.unknown_lead_wait_seconds + 1)  # waits on the clock
    [dl] = await h.housekeep("leads", p, later)
    assert dl.topic == h.settings.topic_dlq and dl.headers["x-leadrelay-reason"] == b"unknown_lead"
    assert dl.headers["x-leadrelay-source-topic"] == h.settings.topic_deals_closed.encode()
    assert h.rows("leads", p) == {}


async def test_index_entries_past_retention_leave_in_housekeeping(h: Harness) -> None:
    p = home("lead-1", PARTITIONS)
    await h.feed("leads", h.settings.topic_leads_new, p, lead(pool="emea"))
    assert await h.housekeep("leads", p, NOW + timedelta(days=1)) == []
    assert "lead-index|lead-1" in h.rows("leads", p)
    await h.housekeep("leads", p, NOW + timedelta(days=h.settings.index_retention_days + 1))
    assert "lead-index|lead-1" not in h.rows("leads", p)


# --- route: hop 2 ----------------------------------------------------------------------------------


async def test_route_decides_and_sends_only_the_decision(h: Harness) -> None:
    pool_log = pool_events_topic(h.settings)
    rep = RepUpdated(rep_id="rep-a", pools=["emea"])
    await h.feed("route", pool_log, 1, RepChanged(pool="emea", rep_id="rep-a", profile=rep).model_dump_json().encode())
    [arrived] = await h.feed("leads", h.settings.topic_leads_new, home("lead-1", PARTITIONS), lead(pool="emea"))
    [decision] = await h.feed("route", pool_log, 1, arrived.value, arrived.key)
    assert decision.topic == h.settings.topic_assignments and decision.key == b"lead-1"
    assert decision.json()["rep_id"] == "rep-a"
    rows = h.rows("route", 1)
    assert rows["loads|emea|rep-a"]["open"] == 1 and rows["ledger|emea|lead-1"]["rep_id"] == "rep-a"
    # the same lead again: the stored decision, unchanged, and no second load
    [again] = await h.feed("route", pool_log, 1, arrived.value, arrived.key)
    assert again.value == decision.value
    assert h.rows("route", 1)["loads|emea|rep-a"]["open"] == 1


async def test_route_housekeeping_drops_closed_ledger_entries_past_retention(h: Harness) -> None:
    pool_log = pool_events_topic(h.settings)
    rep = RepUpdated(rep_id="rep-a", pools=["emea"])
    await h.feed("route", pool_log, 1, RepChanged(pool="emea", rep_id="rep-a", profile=rep).model_dump_json().encode())
    p = home("lead-1", PARTITIONS)
    [arrived] = await h.feed("leads", h.settings.topic_leads_new, p, lead(pool="emea"))
    await h.feed("route", pool_log, 1, arrived.value, arrived.key)
    [closed] = await h.feed("leads", h.settings.topic_deals_closed, p, deal())
    await h.feed("route", pool_log, 1, closed.value, closed.key)
    assert h.rows("route", 1)["ledger|emea|lead-1"]["status"] == "won"
    await h.housekeep("route", 1, datetime.now(UTC) + timedelta(days=h.settings.ledger_retention_days + 1))
    assert "ledger|emea|lead-1" not in h.rows("route", 1)


async def test_a_record_that_fails_leaves_no_table_write_behind(h: Harness) -> None:
    """The per-record guard undoes a failed record's own writes; the records around it keep theirs."""
    from streams.runtime.boundary import guarded

    task = h.task("leads", 0)

    async def half_done(ctx: Any, event: Event) -> None:
        ctx.tables.lead_index[event.message.key.decode()] = {"pool": "p"}
        if event.message.key == b"bad":
            raise RuntimeError("a bug after the first write")

    handle = guarded("test", half_done)
    for offset, key in enumerate((b"good-1", b"bad", b"good-2")):
        await handle(task.ctx, Event(Message(h.settings.topic_leads_new, 0, offset, NOW.timestamp(), key, b"{}")))
    sent = h.commit(task)
    assert [s.headers.get("x-leadrelay-reason") for s in sent] == [b"internal_error"]
    assert set(h.rows("leads", 0)) == {"lead-index|good-1", "lead-index|good-2"}


async def test_a_record_too_big_for_a_produce_request_is_dead_lettered_truncated(h: Harness) -> None:
    from streams.runtime.boundary import MAX_DLQ_VALUE

    huge = b'{"lead_id": "x", "pad": "' + b"y" * (1024 * 1024) + b'"}'
    [dl] = await h.feed("leads", h.settings.topic_leads_new, 0, huge, key=b"x")
    assert dl.headers["x-leadrelay-reason"] == b"payload_too_large"
    assert dl.value == huge[:MAX_DLQ_VALUE]
    assert dl.headers["x-leadrelay-truncated-from"] == str(len(huge)).encode()
