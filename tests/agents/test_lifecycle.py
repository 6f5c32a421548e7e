"""Activity and follow-up timers through the stages: activity finds its lead through the lead index (or
waits for it), touches or closes it in its pool's log; a due timer reassigns inside the route task's
housekeeping, once, also for the next owner of the partition."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from routing import sla
from tests.agents.conftest import NOW, Harness, home, lead, policy, policy_changed, raw, rep_changed

pytestmark = pytest.mark.asyncio
POOL = "p"


def act(kind: str = "first_contact", lead_id: str = "lead-1", **extra: Any) -> bytes:
    return raw({"lead_id": lead_id, "kind": kind, "occurred_at": NOW.isoformat(), **extra})


async def activity(h: Harness, value: bytes, lead_id: str = "lead-1", partition: int | None = None) -> list[Any]:
    """A leads.activity record all the way (leads stage, then its pool's route task)."""
    p = home(lead_id) if partition is None else partition
    sent = await h.feed("leads", h.settings.topic_lead_activity, p, value, lead_id.encode())
    return await h.deliver(sent)


async def pool_with_sla(h: Harness, reps: str = "abc", **follow_up: Any) -> None:
    await h.route(policy_changed(POOL, policy(follow_up={"within": "1h", "max_attempts": 3, **follow_up})))
    for r in reps:
        await h.route(rep_changed(POOL, f"rep-{r}"))


async def decide(h: Harness, lead_id: str = "lead-1") -> dict[str, Any]:
    await h.lead(raw(lead(lead_id=lead_id, pool=POOL)), lead_id.encode())
    return decisions(h, lead_id)[-1]


def decisions(h: Harness, lead_id: str = "lead-1") -> list[dict[str, Any]]:
    return [s.json() for s in h.sent("assignments") if s.key == lead_id.encode()]


def loads(h: Harness) -> dict[str, int]:
    return {k.split("|")[1]: v["open"] for k, v in h.table("loads").items()}


def ledger(h: Harness, lead_id: str = "lead-1") -> dict[str, Any]:
    entry: dict[str, Any] = h.table("ledger")[f"{POOL}|{lead_id}"]
    return entry


def timers(h: Harness) -> list[str]:
    return sorted(h.table("sla"))


async def housekeep(h: Harness, at: datetime) -> list[Any]:
    return await h.housekeep("route", h.pool_partition(POOL), at)


def due_of(h: Harness, lead_id: str = "lead-1") -> datetime:
    return sla.parse_stamp(ledger(h, lead_id)["sla_due"])


# --- activity ----------------------------------------------------------------------------------------


async def test_activity_of_the_holder_stops_its_timer(h: Harness) -> None:
    await pool_with_sla(h)
    first = await decide(h)
    assert timers(h) == [sla.timer_key(ledger(h)["sla_due"], POOL, "lead-1")]
    assert h.table("sla")[timers(h)[0]]["lead"]["lead_id"] == "lead-1"
    assert "contact" not in h.table("sla")[timers(h)[0]]["lead"], "no contact data in a timer row"
    sent = await activity(h, act("first_contact", rep_id=first["rep_id"]))
    assert [s.json()["kind"] for s in sent if s.topic == h.topics["pool_events"]] == ["activity"]
    assert timers(h) == [] and "sla_due" not in ledger(h)
    assert ledger(h)["last_activity"]["kind"] == "first_contact"
    assert await housekeep(h, NOW + timedelta(hours=2)) == [], "a touched lead keeps its rep"
    assert h.metrics.activity.labels(kind="first_contact", outcome="touched")._value.get() == 1


async def test_a_closing_activity_closes_the_lead_and_releases_its_load(h: Harness) -> None:
    await pool_with_sla(h)
    first = await decide(h)
    assert loads(h)[first["rep_id"]] == 1
    await activity(h, act("disqualified", status="not_a_fit", note="budget"))
    entry = ledger(h)
    assert entry["status"] == "disqualified" and entry["closure"]["reason"] == "disqualified"
    assert loads(h)[first["rep_id"]] == 0 and timers(h) == []
    await activity(h, act("cancelled"))
    assert loads(h)[first["rep_id"]] == 0, "released once"
    assert ledger(h)["status"] == "disqualified"
    assert "budget" not in str(h.snapshot()), "the note is never stored"
    assert not any(b"budget" in (s.value or b"") for s in h.log), "nor forwarded"


async def test_activity_before_its_lead_waits_and_follows_it_into_the_pool_log(h: Harness) -> None:
    await pool_with_sla(h)
    sent = await activity(h, act("cancelled"))
    assert sent == [] and list(h.table("parked-activity")) == ["lead-1"]
    first = await decide(h)
    kinds = [s.json()["kind"] for s in h.sent("pool_events")]
    assert kinds[-2:] == ["lead", "activity"], "the lead first, then what waited for it"
    assert ledger(h)["status"] == "cancelled" and loads(h)[first["rep_id"]] == 0
    assert h.table("parked-activity") == {}


async def test_activity_whose_lead_never_comes_dead_letters_as_unknown_lead(h: Harness) -> None:
    await pool_with_sla(h)
    other = (home("lead-9") + 1) % 4
    await activity(h, act("follow_up", lead_id="lead-9"), lead_id="lead-9", partition=other)
    await h.housekeep("leads", home("lead-9"), datetime.now(UTC) + timedelta(seconds=60))
    assert h.sent("dlq") == [], "still within the wait"
    wait = h.settings.unknown_lead_wait_seconds
    await h.housekeep("leads", home("lead-9"), datetime.now(UTC) + timedelta(seconds=wait + 60))
    [dl] = h.sent("dlq")
    assert dl.header("x-leadrelay-reason") == "unknown_lead"
    assert dl.header("x-leadrelay-source-topic") == h.settings.topic_lead_activity
    assert dl.header("x-leadrelay-source-partition") == str(other)
    assert json.loads(dl.value or b"")["kind"] == "follow_up"
    assert h.table("parked-activity") == {}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (act("called_twice"), "schema_violation"),
        (act("follow_up", phone="+1 555 0100"), "schema_violation"),
        (b"{not json", "invalid_json"),
        (act("follow_up", note="x" * 2000), "payload_too_large"),
    ],
)
async def test_invalid_activity_is_dead_lettered_with_its_reason(h: Harness, value: bytes, reason: str) -> None:
    await h.feed("leads", h.settings.topic_lead_activity, home("lead-1"), value, b"lead-1")
    [dl] = h.sent("dlq")
    assert (dl.header("x-leadrelay-reason"), dl.value) == (reason, value)
    assert h.table("parked-activity") == {}


# --- follow-up timers --------------------------------------------------------------------------------


async def test_a_due_timer_reassigns_once_to_a_rep_that_never_held_the_lead(h: Harness) -> None:
    await pool_with_sla(h)
    first = await decide(h)
    due = due_of(h)
    assert await housekeep(h, due - timedelta(seconds=1)) == [], "not due yet"
    fired_at = due + timedelta(seconds=5)
    [out] = await housekeep(h, fired_at)
    d = out.json()
    assert out.topic == h.topics["assignments"] and out.key == b"lead-1"
    assert d["attempt"] == 2 and d["rep_id"] not in (None, first["rep_id"])
    assert (d["trigger"], d["previous_holders"]) == ("sla_expired", [first["rep_id"]])
    assert d["decision_id"] != first["decision_id"]
    assert datetime.fromisoformat(d["decided_at"]) == fired_at, "the fire time is the decision's time"
    assert loads(h)[first["rep_id"]] == 0 and loads(h)[d["rep_id"]] == 1
    assert ledger(h)["holders"] == [first["rep_id"]] and ledger(h)["rep_id"] == d["rep_id"]
    assert timers(h) == [sla.timer_key(sla.stamp(fired_at + timedelta(hours=1)), POOL, "lead-1")]
    assert h.metrics.sla_reassignments.labels(outcome="reassigned")._value.get() == 1
    # The same moment again, and a new worker on the committed stores: nothing fires twice.
    assert await housekeep(h, fired_at) == []
    h.restart()
    assert await housekeep(h, fired_at + timedelta(minutes=30)) == []
    assert len(decisions(h)) == 2


async def test_after_max_attempts_the_lead_returns_to_the_open_pool(h: Harness) -> None:
    await pool_with_sla(h, reps="abcd", max_attempts=2)
    await decide(h)
    await housekeep(h, due_of(h))
    [out] = await housekeep(h, due_of(h))
    d = out.json()
    assert (d["rep_id"], d["reason"], d["attempt"]) == (None, "sent_to_claim_pool", 3)
    assert len(d["previous_holders"]) == 2 and ledger(h)["status"] == "claimable"
    assert timers(h) == [] and sum(loads(h).values()) == 0
    assert h.metrics.sla_reassignments.labels(outcome="returned_to_pool")._value.get() == 1
    # the pool's gauge follows the timers' decisions too (set after housekeeping, not only after records)
    assert h.registry.get_sample_value("leadrelay_open_leads", {"pool": POOL}) == 0


async def test_a_deal_stops_the_timer_in_effect(h: Harness) -> None:
    await pool_with_sla(h)
    await decide(h)
    due = due_of(h)
    deal = raw({"lead_id": "lead-1", "outcome": "won", "amount": 1.0, "closed_at": NOW.isoformat()})
    await h.deal(deal, b"lead-1")
    assert await housekeep(h, due + timedelta(seconds=1)) == []
    assert timers(h) == [], "the row left behind is dropped when it comes due"


async def test_timers_fire_in_due_order_across_leads(h: Harness) -> None:
    await pool_with_sla(h, reps="abcdef")
    for i in range(3):
        await h.lead(raw(lead(lead_id=f"lead-{i}", pool=POOL)), f"lead-{i}".encode(), at=NOW + timedelta(minutes=i))
    out = await housekeep(h, NOW + timedelta(hours=1, minutes=1, seconds=30))
    assert [s.key for s in out] == [b"lead-0", b"lead-1"], "due ones only, earliest first"


async def test_a_policy_without_follow_up_starts_no_timer(h: Harness) -> None:
    await h.route(rep_changed(POOL, "rep-a"))
    await decide(h)
    assert timers(h) == [] and "sla_due" not in ledger(h)


async def test_activity_off_its_partition_is_passed_on(h: Harness) -> None:
    other = (home("lead-1") + 1) % 4
    [out] = await h.feed("leads", h.settings.topic_lead_activity, other, act(), key=b"crm-1")
    assert (out.topic, out.key, out.partition) == (h.topics["lead_events"], b"lead-1", home("lead-1"))
    assert out.json()["kind"] == "activity" and out.json()["origin"]["partition"] == other
