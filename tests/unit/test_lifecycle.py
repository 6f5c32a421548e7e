"""The lead's life after its first decision (routing/lifecycle.py, routing/sla.py): activity touches or
closes a lead, a follow-up timer reassigns it to a rep that never held it, then returns it to the pool."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routing import sla
from routing.frame import PoolFrame
from routing.ids import decision_id
from routing.ledger import CLAIMABLE, OPEN, LedgerEntry, assign
from routing.lifecycle import due, expire, touch
from routing.model import Load
from routing.policy import FollowUp, Policy, parse_policy
from schemas.events import LeadActivity
from tests.factories import NOW, apply, make_lead, make_policy, make_rep, make_view

SLA = {"follow_up": {"within": "4h", "max_attempts": 3}}


def activity(kind: str = "first_contact", rep_id: str | None = None, **extra: Any) -> LeadActivity:
    return LeadActivity.model_validate(
        {"lead_id": "lead-1", "kind": kind, "rep_id": rep_id, "occurred_at": NOW.isoformat(), **extra}
    )


def first_entry(frame: PoolFrame, policy: Policy, now: datetime = NOW) -> LedgerEntry:
    result = assign(make_lead(), frame, policy, None, now=now)
    apply(frame, result)
    return result.entry


def fire(frame: PoolFrame, policy: Policy, entry: LedgerEntry, now: datetime) -> tuple[LedgerEntry, Any]:
    """Let the entry's timer fire at `now` and feed the result back into the frame."""
    assert entry.rep_id is not None
    result = expire(make_lead(), frame, policy, entry, frame.loads[frame.index[entry.rep_id]], now=now)
    frame.set_load(*result.released)
    apply(frame, result.assigned)
    return result.assigned.entry, result


# --- the policy --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("within", "seconds"), [("90s", 90), ("30m", 1800), ("4h", 14400), ("2d", 172800)])
def test_follow_up_durations(within: str, seconds: float) -> None:
    assert FollowUp(within=within).seconds == seconds


@pytest.mark.parametrize("within", ["0h", "4", "4 h", "-1h", "1.5h", "4w", ""])
def test_follow_up_refuses_a_duration_it_cannot_read(within: str) -> None:
    with pytest.raises(ValueError, match="within"):
        parse_policy({"follow_up": {"within": within}})


def test_follow_up_is_off_unless_the_policy_asks() -> None:
    frame = make_view([make_rep(rep_id="a")])
    assert first_entry(frame, make_policy()).sla_due is None


# --- timers ------------------------------------------------------------------------------------------


def test_the_first_decision_starts_the_holders_timer() -> None:
    entry = first_entry(make_view([make_rep(rep_id="a")]), make_policy(**SLA))
    assert entry.sla_due == sla.stamp(NOW + timedelta(hours=4))


def test_timer_keys_sort_by_due_time() -> None:
    times = [NOW + timedelta(seconds=s) for s in (0, 0.5, 9, 10, 3600 * 30, 86400 * 400)]
    keys = [sla.timer_key(sla.stamp(t), "zz", "a") for t in reversed(times)]
    assert [sla.parse_stamp(sla.split_timer_key(k)[0]) for k in sorted(keys)] == times


def test_a_timer_key_splits_back_into_its_parts() -> None:
    assert sla.split_timer_key(sla.timer_key("2024-06-01T12:00:00.000000Z", "emea", "L:1/x")) == (
        "2024-06-01T12:00:00.000000Z",
        "emea",
        "L:1/x",
    )


HOURS = {"mon": ["09:00-17:00"], "tue": ["09:00-17:00"], "wed": ["09:00-17:00"], "thu": ["09:00-17:00"]}


@pytest.mark.parametrize(
    ("start", "within", "expected"),
    [
        # 2024-06-03 is a Monday; Berlin is UTC+2 in June.
        ("2024-06-03T08:00:00+00:00", "4h", "2024-06-03T12:00:00+00:00"),  # inside one shift
        ("2024-06-03T13:00:00+00:00", "4h", "2024-06-04T09:00:00+00:00"),  # 2 h today, 2 h tomorrow
        ("2024-06-03T20:00:00+00:00", "1h", "2024-06-04T08:00:00+00:00"),  # after hours: from the next shift
        ("2024-06-06T14:00:00+00:00", "2h", "2024-06-10T08:00:00+00:00"),  # Thursday evening -> Monday
    ],
)
def test_working_hours_count_only_the_holders_shifts(start: str, within: str, expected: str) -> None:
    rep = make_rep(rep_id="a", timezone="Europe/Berlin", working_hours=HOURS)
    follow_up = FollowUp(within=within, working_hours=True)
    assert sla.due_at(datetime.fromisoformat(start), follow_up, rep) == datetime.fromisoformat(expected)


def test_a_night_shift_runs_past_midnight() -> None:
    rep = make_rep(rep_id="a", working_hours={"mon": ["22:00-06:00"]})
    at = datetime(2024, 6, 3, 21, 0, tzinfo=UTC)
    assert sla.due_at(at, FollowUp(within="3h", working_hours=True), rep) == datetime(2024, 6, 4, 1, 0, tzinfo=UTC)


def test_without_working_hours_the_time_is_wall_time() -> None:
    at = datetime(2024, 6, 3, 21, 0, tzinfo=UTC)
    follow_up = FollowUp(within="3h", working_hours=True)
    assert sla.due_at(at, follow_up, make_rep(rep_id="a")) == at + timedelta(hours=3)
    no_shifts = make_rep(rep_id="a", working_hours={})
    assert sla.due_at(at, follow_up, no_shifts) == at + timedelta(hours=3), "nothing to count in: wall time"
    shifts = make_rep(rep_id="a", working_hours=HOURS)
    assert sla.due_at(at, FollowUp(within="3h"), shifts) == at + timedelta(hours=3), "the policy did not ask"


# --- activity ----------------------------------------------------------------------------------------


def test_a_touch_by_the_holder_stops_the_timer() -> None:
    entry = first_entry(make_view([make_rep(rep_id="a")]), make_policy(**SLA))
    result = touch(activity("first_contact", "a"), entry, Load(open=1), now=NOW)
    assert (result.outcome, result.stopped, result.released) == ("touched", entry.sla_due, None)
    assert result.entry.sla_due is None and result.entry.status == OPEN
    assert result.entry.last_activity == {"kind": "first_contact", "rep_id": "a", "occurred_at": NOW.isoformat()}
    assert not due(result.entry, entry.sla_due or "")


def test_an_activity_naming_no_rep_counts_as_the_holders() -> None:
    entry = first_entry(make_view([make_rep(rep_id="a")]), make_policy(**SLA))
    assert touch(activity("follow_up"), entry, None, now=NOW).outcome == "touched"


def test_another_reps_activity_is_recorded_but_the_holders_timer_runs_on() -> None:
    entry = first_entry(make_view([make_rep(rep_id="a")]), make_policy(**SLA))
    result = touch(activity("follow_up", "b"), entry, None, now=NOW)
    assert (result.outcome, result.stopped) == ("not_holder", None)
    assert result.entry.sla_due == entry.sla_due and due(result.entry, entry.sla_due or "")


@pytest.mark.parametrize("kind", ["disqualified", "duplicate", "cancelled"])
def test_a_closing_kind_closes_the_lead_and_releases_the_holder_once(kind: str) -> None:
    entry = first_entry(make_view([make_rep(rep_id="a")]), make_policy(**SLA))
    result = touch(activity(kind, "b"), entry, Load(open=3, assigned=3), now=NOW)
    assert result.outcome == "closed" and result.released == ("a", Load(open=2, assigned=3))
    assert result.entry.closed and result.entry.status == kind and result.stopped == entry.sla_due
    closure = result.entry.closure or {}
    assert (closure["reason"], closure["holder"], closure["by"]) == (kind, "a", "activity")
    assert "released one open lead of a" in closure["summary"]
    again = touch(activity(kind, "a"), result.entry, Load(open=2), now=NOW)
    assert (again.outcome, again.released, again.entry) == ("ignored", None, result.entry)


@pytest.mark.parametrize("kind", ["first_contact", "follow_up", "status_change", "converted"])
def test_other_kinds_never_close(kind: str) -> None:
    entry = first_entry(make_view([make_rep(rep_id="a")]), make_policy(**SLA))
    result = touch(activity(kind, "a"), entry, Load(open=1), now=NOW)
    assert not result.entry.closed and result.released is None


def test_closing_an_unassigned_lead_releases_nothing() -> None:
    entry = first_entry(make_view([]), make_policy(**SLA))
    result = touch(activity("cancelled"), entry, None, now=NOW)
    assert result.outcome == "closed" and result.released is None and result.stopped is None


def test_the_entry_round_trips_with_its_lifecycle_fields() -> None:
    entry = first_entry(make_view([make_rep(rep_id="a")]), make_policy(**SLA))
    closed = touch(activity("duplicate", "a"), replace(entry, holders=("x",)), Load(open=1), now=NOW).entry
    assert LedgerEntry.from_dict(closed.to_dict()) == closed
    plain = first_entry(make_view([make_rep(rep_id="a")]), make_policy())
    assert set(plain.to_dict()) == {
        "decision",
        "status",
        "rep_id",
        "value",
        "closed_at",
        "features",
        "released_at",
    }, "an entry without a lifecycle is stored as before"


# --- expiry ------------------------------------------------------------------------------------------


def test_an_expired_timer_reassigns_to_a_rep_that_never_held_the_lead() -> None:
    frame = make_view([make_rep(rep_id=r) for r in "abc"])
    policy = make_policy(**SLA)
    entry = first_entry(frame, policy)
    first = entry.rep_id
    fired_at = NOW + timedelta(hours=4, seconds=3)
    after, result = fire(frame, policy, entry, fired_at)
    d = result.assigned.decision
    assert result.outcome == "reassigned" and d.reason == "assigned"
    assert d.rep_id not in (None, first) and d.attempt == 2
    assert d.decision_id == decision_id("lead-1", 2) != entry.decision["decision_id"]
    assert (d.trigger, d.previous_holders, d.decided_at) == ("sla_expired", [first], fired_at)
    assert any("did not touch the lead within 4h" in n for n in d.explanation.notes)
    assert result.released[0] == first and result.released[1].open == 0
    assert after.holders == (first,) and after.rep_id == d.rep_id and after.status == OPEN
    assert after.sla_due == sla.stamp(fired_at + timedelta(hours=4)), "the new holder gets its own time"
    assert result.assigned.load is not None and result.assigned.load.open == 1


def test_after_max_attempts_the_lead_returns_to_the_open_pool() -> None:
    frame = make_view([make_rep(rep_id=r) for r in "abcde"])
    policy = make_policy(follow_up={"within": "1h", "max_attempts": 2})
    entry = first_entry(frame, policy)
    entry, _ = fire(frame, policy, entry, NOW + timedelta(hours=1))
    entry, result = fire(frame, policy, entry, NOW + timedelta(hours=2))
    d = result.assigned.decision
    assert result.outcome == "returned_to_pool"
    assert (d.rep_id, d.reason, d.attempt, d.trigger) == (None, "sent_to_claim_pool", 3, "sla_expired")
    assert len(d.previous_holders or []) == 2 and d.explanation.chosen is None
    assert "2 attempt(s) without a touch" in d.explanation.summary
    assert entry.status == CLAIMABLE and entry.sla_due is None and entry.rep_id is None
    assert sum(int(x) for x in frame.open) == 0, "every silent holder was released"
    assert not due(entry, sla.stamp(NOW + timedelta(hours=3)))


def test_with_nobody_else_eligible_the_lead_returns_to_the_pool_early() -> None:
    frame = make_view([make_rep(rep_id="a"), make_rep(rep_id="b", availability="away")])
    policy = make_policy(**SLA)
    entry = first_entry(frame, policy)
    entry, result = fire(frame, policy, entry, NOW + timedelta(hours=5))
    assert result.outcome == "returned_to_pool" and result.assigned.decision.attempt == 2
    assert "no eligible rep besides its previous holders" in result.assigned.decision.explanation.summary


def test_expiry_is_deterministic() -> None:
    def run() -> list[str]:
        frame = make_view([make_rep(rep_id=r) for r in "abcdef"])
        policy = make_policy(follow_up={"within": "1h", "max_attempts": 5})
        entry = first_entry(frame, policy)
        out = []
        for k in range(1, 6):
            entry, result = fire(frame, policy, entry, NOW + timedelta(hours=k))
            out.append(result.assigned.decision.model_dump_json())
        return out

    assert run() == run()


# --- property: a reassignment never goes to a previous holder ----------------------------------------

rep_pool = st.lists(
    st.tuples(
        st.integers(0, 3),  # open
        st.sampled_from([1, 2, 5, None]),  # capacity
        st.sampled_from(["available", "available", "away"]),
    ),
    min_size=1,
    max_size=7,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reps=rep_pool, attempts=st.integers(1, 6), scorer=st.sampled_from(["load", "rotation"]))
def test_a_reassignment_never_goes_to_a_previous_holder(
    reps: list[tuple[int, int | None, str]], attempts: int, scorer: str
) -> None:
    frame = make_view(
        [make_rep(rep_id=f"r{i}", capacity=cap, availability=av) for i, (_, cap, av) in enumerate(reps)],
        {f"r{i}": o for i, (o, _, _) in enumerate(reps)},
    )
    policy = make_policy({"scorers": {scorer: 1.0}}, follow_up={"within": "1h", "max_attempts": attempts})
    entry = first_entry(frame, policy)
    held = [entry.rep_id] if entry.rep_id else []
    k = 1
    while entry.status == OPEN:
        k += 1
        entry, result = fire(frame, policy, entry, NOW + timedelta(hours=k))
        d = result.assigned.decision
        assert d.attempt == k and d.previous_holders == held
        assert d.rep_id is None or d.rep_id not in held
        assert d.rep_id is not None or d.reason == "sent_to_claim_pool"
        if d.rep_id:
            held.append(d.rep_id)
    assert k <= attempts + 1 and len(set(held)) == len(held)
    assert entry.status == CLAIMABLE or (k == 1 and entry.rep_id is None), "a timer ends in the open pool"
    for i, (opened, _, _) in enumerate(reps):  # every reassignment released its silent holder again
        assert int(frame.open[i]) == opened


def test_a_touch_on_a_lead_in_the_open_pool_keeps_its_claim_window() -> None:
    grab = {"strategies": {"default": {"selector": {"type": "claim_pool"}}}, "claims": {"window": "1h"}}
    entry = first_entry(make_view([make_rep(rep_id="a")]), make_policy(**grab))
    assert entry.status == CLAIMABLE and entry.sla_due is not None
    result = touch(activity("status_change"), entry, None, now=NOW)
    assert (result.outcome, result.stopped, result.entry.sla_due) == ("touched", None, entry.sla_due)
    closed = touch(activity("cancelled"), entry, None, now=NOW)
    assert closed.outcome == "closed" and closed.stopped == entry.sla_due, "a close drops it"
