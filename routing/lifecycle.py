"""A lead's life after its first decision: activity touches or closes it, a silent holder loses it.

Pure like the rest of routing/: the time (`now`) comes in as an argument, choices hash ids. The route
stage calls `touch` for every activity in a pool's log and `expire` when a follow-up timer fires inside
the partition owner's transaction (docs/lifecycle.md has the states and every reason code).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from routing import availability, sla
from routing.decide import Outcome, evaluate
from routing.frame import PoolFrame
from routing.ledger import CLAIMABLE, OPEN, Assigned, LedgerEntry, record, release, with_lead
from routing.model import Load
from routing.policy import Policy
from schemas.events import CLOSING_KINDS, LeadActivity, LeadCreated

TRIGGER_SLA = "sla_expired"


@dataclass(frozen=True, slots=True)
class Touched:
    """What an activity did to a lead's ledger entry."""

    entry: LedgerEntry  # the new entry (the old one when `outcome` is "ignored")
    outcome: str  # touched | closed | not_holder | ignored
    released: tuple[str, Load] | None  # the holder whose load a close released, and its new load
    stopped: str | None  # due time of the follow-up timer the activity stopped (its row goes)


def touch(activity: LeadActivity, entry: LedgerEntry, load: Load | None, *, now: datetime) -> Touched:
    """Apply one activity. Any kind from the holder (or naming no rep) touches the lead and stops its
    follow-up timer; an activity of another rep is recorded but is not the holder's follow-up.
    disqualified, duplicate and cancelled close the lead whoever reports it, releasing the holder's
    load once. A closed lead ignores activity."""
    if entry.closed:
        return Touched(entry, "ignored", None, None)
    seen = {"kind": activity.kind, "rep_id": activity.rep_id, "occurred_at": activity.occurred_at.isoformat()}
    by_holder = activity.rep_id is None or activity.rep_id == entry.rep_id
    if activity.kind in CLOSING_KINDS:
        released = None
        if entry.holds_load and entry.rep_id is not None:
            released = (entry.rep_id, release(load, entry))
        who = activity.rep_id or "the CRM"
        freed = f"; released one open lead of {entry.rep_id}" if released else ""
        closure = {
            "reason": activity.kind,
            "by": "activity",
            "rep_id": activity.rep_id,
            "holder": entry.rep_id,
            "attempt": entry.attempt,
            "at": now.isoformat(),
            "summary": f"closed as {activity.kind} by {who} (occurred {activity.occurred_at.isoformat()}){freed}",
        }
        new = replace(
            entry,
            status=activity.kind,
            closed_at=activity.occurred_at.isoformat(),
            released_at=now.isoformat(),
            sla_due=None,
            touched_at=now.isoformat(),
            last_activity=seen,
            closure=closure,
        )
        return Touched(new, "closed", released, entry.sla_due)
    if entry.status != OPEN:  # no holder, no follow-up: a claim window keeps running
        return Touched(replace(entry, touched_at=now.isoformat(), last_activity=seen), "touched", None, None)
    if not by_holder:
        return Touched(replace(entry, last_activity=seen), "not_holder", None, None)
    new = replace(entry, sla_due=None, touched_at=now.isoformat(), last_activity=seen)
    return Touched(new, "touched", None, entry.sla_due)


@dataclass(frozen=True, slots=True)
class Expired:
    """A holder lost the lead (a follow-up timer fired, a hand-back): the lead's next attempt."""

    assigned: Assigned  # the new decision, entry, the new holder's load and the pool's state
    released: tuple[str, Load]  # the silent holder and its new load
    outcome: str  # reassigned | returned_to_pool


def due(entry: LedgerEntry, timer_due: str) -> bool:
    """Whether a timer row still stands for this entry: the lead is open and the row is its holder's
    current timer (a touch, a close or an earlier firing removed or replaced it)."""
    return entry.status == OPEN and entry.rep_id is not None and entry.sla_due == timer_due


def expire(
    lead: LeadCreated,
    frame: PoolFrame,
    policy: Policy,
    entry: LedgerEntry,
    silent_load: Load | None,
    *,
    now: datetime,
) -> Expired:
    """The holder of `entry` did not touch the lead in time; `now` is when the timer fired (recorded as
    the decision's `decided_at`). Attempt n+1 goes to a rep that never held the lead; after the policy's
    `max_attempts`, or when no such rep is eligible, the lead returns to the open pool (claimable)."""
    assert entry.rep_id is not None and policy.follow_up is not None
    follow_up = policy.follow_up
    note = (
        f"follow-up SLA: {entry.rep_id} did not touch the lead within {follow_up.within}"
        f" (due {entry.sla_due}, fired {sla.stamp(now)})"
    )
    exhausted = entry.attempt + 1 > follow_up.max_attempts
    forced = f"{follow_up.max_attempts} attempt(s) without a touch" if exhausted else None
    return take_from(lead, frame, policy, entry, silent_load, now=now, trigger=TRIGGER_SLA, note=note, forced=forced)


def hand_back(
    lead: LeadCreated,
    frame: PoolFrame,
    policy: Policy,
    entry: LedgerEntry,
    load: Load | None,
    *,
    now: datetime,
    trigger: str,
    state: str | None,
) -> Expired:
    """The holder left the pool (`rep_left`) or turned to a state the policy hands back in
    (`rep_unavailable`, `state` names it): attempt n+1 goes to a rep that never held the lead, else (or
    with `on_leave: open_pool`) the lead returns to the open pool. `now` is the roster change's log time."""
    assert entry.rep_id is not None
    if trigger == availability.LEFT:
        note = f"{entry.rep_id} left the pool"
        leave = policy.availability.on_leave
        forced = "the policy sends a departed rep's leads there" if leave == "open_pool" else None
    else:
        note = f"{entry.rep_id} turned {state}: untouched leads are handed back"
        forced = None
    return take_from(lead, frame, policy, entry, load, now=now, trigger=trigger, note=note, forced=forced)


def take_from(
    lead: LeadCreated,
    frame: PoolFrame,
    policy: Policy,
    entry: LedgerEntry,
    holder_load: Load | None,
    *,
    now: datetime,
    trigger: str,
    note: str,
    forced: str | None,
) -> Expired:
    """The lead's holder loses it: attempt n+1, its previous holders excluded, goes to the best eligible
    rep; to the open pool instead when nobody else is eligible or `forced` says why. The holder's load is
    released once."""
    assert entry.rep_id is not None
    holders = (*entry.holders, entry.rep_id)
    attempt = entry.attempt + 1
    outcome = evaluate(lead, frame, policy, now=now, attempt=attempt, exclude=frozenset(holders))
    d = outcome.decision
    if forced is not None or d.rep_id is None:
        why = (
            f"returned to the open pool: {forced}"
            if forced is not None
            else "returned to the open pool: no eligible rep besides its previous holders"
        )
        explanation = d.explanation.model_copy(
            update={
                "summary": f"{why}; {len(holders)} previous holder(s); {d.explanation.eligible} eligible may claim it",
                "chosen": None,
                "notes": [*d.explanation.notes, note],
            }
        )
        d = d.model_copy(update={"rep_id": None, "reason": "sent_to_claim_pool", "explanation": explanation})
        outcome = Outcome(d, None, value=outcome.value, route=outcome.route)
    noted = d.explanation.model_copy(update={"notes": [*d.explanation.notes, note]}) if d.rep_id else d.explanation
    d = d.model_copy(update={"trigger": trigger, "previous_holders": list(holders), "explanation": noted})
    assigned = with_lead(record(replace(outcome, decision=d), frame, policy, now=now), lead, policy, now=now)
    entry_after = replace(assigned.entry, holders=holders)
    assert entry_after.status in (OPEN, CLAIMABLE)
    released = (entry.rep_id, release(holder_load, entry))
    return Expired(
        replace(assigned, entry=entry_after),
        released,
        "reassigned" if d.rep_id is not None else "returned_to_pool",
    )
