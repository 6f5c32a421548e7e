"""Waiting for capacity (routing/waiting.py): who waits, in which order, and how a waiting lead is decided
again when capacity frees or its maximum wait runs out."""

from __future__ import annotations

from datetime import timedelta

from routing import sla
from routing.frame import PoolFrame
from routing.ids import decision_id
from routing.ledger import CLAIMABLE, OPEN, WAITING, LedgerEntry, assign
from routing.model import Load
from routing.policy import Policy
from routing.waiting import freed, order_key, start, timed_out, wait_key, waits
from tests.factories import NOW, apply, make_lead, make_policy, make_rep, make_view

WAIT = {"waiting": {"max_wait": "2h"}}


def full_pool() -> PoolFrame:
    return make_view([make_rep(rep_id="a", capacity=1), make_rep(rep_id="b", capacity=1)], {"a": 1, "b": 1})


def waiting_entry(frame: PoolFrame, policy: Policy, lead_id: str = "lead-1", **lead: object) -> LedgerEntry:
    made = make_lead(lead_id=lead_id, **lead)
    result = assign(made, frame, policy, None, now=NOW)
    assert waits(result.decision, policy)
    return start(result, made, policy, now=NOW).entry


def test_the_order_is_value_first_then_age_then_id() -> None:
    old, new = NOW - timedelta(hours=3), NOW - timedelta(minutes=1)
    keys = {
        "small-old": wait_key("p", 100.0, old, "small-old"),
        "big-new": wait_key("p", 5000.0, new, "big-new"),
        "small-new": wait_key("p", 100.0, new, "small-new"),
        "big-old": wait_key("p", 5000.0, old, "big-old"),
        "zero": wait_key("p", 0.0, old, "zero"),
        "huge": wait_key("p", 1e18, new, "huge"),
    }
    in_order = [k for k, _ in sorted(keys.items(), key=lambda kv: kv[1])]
    assert in_order == ["huge", "big-old", "big-new", "small-old", "small-new", "zero"]
    assert len(order_key(0.0, old)) == len(order_key(1e9, new)), "fixed width"
    assert order_key(100.004, old) == order_key(100.0, old), "cents"


def test_only_a_no_eligible_rep_for_capacity_waits_and_only_with_the_option() -> None:
    lead = make_lead()
    full = assign(lead, full_pool(), make_policy(**WAIT), None, now=NOW).decision
    assert full.reason == "no_eligible_rep" and waits(full, make_policy(**WAIT))
    assert not waits(full, make_policy()), "off by default"
    away = make_view([make_rep(rep_id="a", availability="offline")])
    nobody = assign(lead, away, make_policy(**WAIT), None, now=NOW).decision
    assert nobody.reason == "no_eligible_rep" and not waits(nobody, make_policy(**WAIT)), "not for capacity"
    room = assign(lead, make_view([make_rep(rep_id="a")]), make_policy(**WAIT), None, now=NOW).decision
    assert room.reason == "assigned" and not waits(room, make_policy(**WAIT))


def test_a_waiting_entry_keeps_the_lead_without_contact_and_its_max_wait() -> None:
    frame, policy = full_pool(), make_policy(**WAIT)
    entry = waiting_entry(frame, policy, contact={"name": "Jane Roe"})
    assert entry.status == WAITING and not entry.closed
    assert entry.lead is not None and "contact" not in entry.lead
    assert entry.sla_due == sla.stamp(NOW + timedelta(hours=2))
    no_limit = waiting_entry(frame, make_policy(waiting={}))
    assert no_limit.sla_due is None


def test_freed_capacity_assigns_the_lead_as_the_next_attempt_with_its_wait() -> None:
    frame, policy = full_pool(), make_policy(**WAIT)
    entry = waiting_entry(frame, policy)
    assert freed(make_lead(), frame, policy, entry, now=NOW + timedelta(minutes=1)) is None, "still full"
    frame.set_load("b", Load(open=0))
    at = NOW + timedelta(minutes=30)
    new = freed(make_lead(), frame, policy, entry, now=at)
    assert new is not None
    d = new.decision
    assert (d.rep_id, d.reason, d.attempt, d.trigger) == ("b", "assigned", 2, "capacity_freed")
    assert d.decision_id == decision_id("lead-1", 2) and d.decided_at == at
    assert any("waited 1800s" in n for n in d.explanation.notes)
    assert new.entry.status == OPEN and new.entry.waited_seconds == 1800.0 and new.entry.lead is None
    assert new.load is not None and new.load.open == 1


def test_the_first_waiting_lead_in_order_takes_the_freed_place() -> None:
    frame, policy = full_pool(), make_policy(**WAIT)
    entries = {
        lid: waiting_entry(frame, policy, lid, estimated_value=v, created_at=NOW - timedelta(minutes=m))
        for lid, v, m in (("cheap", 10.0, 60), ("rich", 900.0, 1), ("rich-old", 900.0, 30))
    }
    queue = sorted(
        (wait_key("p", e.value, make_lead(**dict(e.lead or {})).created_at, lid), lid) for lid, e in entries.items()
    )
    assert [lid for _, lid in queue] == ["rich-old", "rich", "cheap"]
    frame.set_load("a", Load(open=0))
    taken = []
    for _, lid in queue:
        lead = make_lead(**dict(entries[lid].lead or {}))
        new = freed(lead, frame, policy, entries[lid], now=NOW + timedelta(minutes=5))
        if new is not None:
            apply(frame, new)
            taken.append(lid)
    assert taken == ["rich-old"], "one place freed, the first in order takes it"


def test_max_wait_sends_the_lead_to_the_open_pool() -> None:
    frame = full_pool()
    policy = make_policy(waiting={"max_wait": "2h"}, claims={"window": "30m"})
    entry = waiting_entry(frame, policy)
    at = NOW + timedelta(hours=2, seconds=3)
    out = timed_out(make_lead(), frame, policy, entry, now=at)
    d = out.decision
    assert (d.rep_id, d.reason, d.attempt, d.trigger) == (None, "sent_to_claim_pool", 2, "max_wait")
    assert d.decision_id == decision_id("lead-1", 2) and d.decided_at == at
    assert out.entry.status == CLAIMABLE and out.entry.lead is not None
    assert out.entry.sla_due == sla.stamp(at + timedelta(minutes=30)), "the claim window starts"
    assert out.entry.waited_seconds == 7203.0 and out.load is None


def test_a_max_wait_that_fires_after_the_policy_dropped_waiting_still_ends_the_wait() -> None:
    frame = full_pool()
    entry = waiting_entry(frame, make_policy(**WAIT))
    out = timed_out(make_lead(), frame, make_policy(), entry, now=NOW + timedelta(hours=2))
    d = out.decision
    assert (d.reason, d.trigger, out.entry.status) == ("sent_to_claim_pool", "max_wait", CLAIMABLE)
    assert entry.sla_due is not None and entry.sla_due in out.decision.explanation.summary
