"""Waiting for capacity: a lead nobody could take because the reps that would qualify are full waits in
its pool, and is decided again when capacity frees (docs/lifecycle.md).

Pure like the rest of routing/: `now` is the log time of the record that freed capacity (or of the timer
that ended the wait), choices hash ids. A waiting lead is a row `wait|<pool>|<order>|<lead>` of the route
table; `<order>` sorts the highest value (or score, per the policy's `value_field`) first, then the
oldest lead, then the lead id, so a scan of the pool's rows reads them in the order they are taken.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from routing import sla
from routing.frame import PoolFrame
from routing.ids import decision_id
from routing.ledger import CLAIMABLE, OPEN, WAITING, Assigned, LedgerEntry, later_attempt, with_lead
from routing.policy import Policy, duration_seconds
from schemas.events import AssignmentDecision, LeadCreated

TRIGGER_FREED = "capacity_freed"
TRIGGER_MAX_WAIT = "max_wait"
SEP = "|"
VALUE_CENTS = 10**17  # values (and scores) up to 1e15 in cents sort exactly; above that they tie (as 1e15)


def order_key(value: float, created_at: datetime) -> str:
    """Sorts higher value first, then the older lead: the inverted value in fixed-width cents, then the
    lead's creation time in the fixed-width UTC stamp."""
    cents = min(max(round(value * 100), 0), VALUE_CENTS - 1)
    return f"{VALUE_CENTS - 1 - cents:017d}{SEP}{sla.stamp(created_at)}"


def wait_key(pool: str, value: float, created_at: datetime, lead_id: str) -> str:
    """The row's key within the `wait` kind: the pool first, so one pool's waiting leads scan together."""
    return SEP.join((pool, order_key(value, created_at), lead_id))


def lead_of_key(key: str) -> str:
    return key.rsplit(SEP, 1)[1]


def waits(decision: AssignmentDecision, policy: Policy) -> bool:
    """Whether a decision nobody got waits for capacity: the pool's policy has `waiting`, the reason is
    no_eligible_rep and some rep was excluded only for being full (at_capacity is the first failing check)."""
    if policy.waiting is None or decision.reason != "no_eligible_rep":
        return False
    return decision.explanation.excluded.get("at_capacity", 0) > 0


def start(result: Assigned, lead: LeadCreated, policy: Policy, *, now: datetime) -> Assigned:
    """A first decision that waits: its entry is `waiting`, keeps the lead (no contact data) to decide it
    again, and with the policy's `max_wait` has a timer (`sla_due`) for when it goes to the open pool."""
    assert policy.waiting is not None
    max_wait = policy.waiting.max_wait
    due = sla.stamp(now + timedelta(seconds=duration_seconds(max_wait))) if max_wait else None
    entry = replace(result.entry, status=WAITING, lead=lead.model_dump(mode="json"), sla_due=due)
    return replace(result, entry=entry)


def since(entry: LedgerEntry) -> datetime:
    """When the lead started waiting: the decision that made it wait."""
    return datetime.fromisoformat(str(entry.decision["decided_at"]))


def freed(lead: LeadCreated, frame: PoolFrame, policy: Policy, entry: LedgerEntry, *, now: datetime) -> Assigned | None:
    """Capacity freed in the lead's pool: decide it again as attempt n+1 (trigger capacity_freed), its
    wait recorded in the explanation. None: still nobody can take it, it keeps waiting."""
    waited = max(0.0, (now - since(entry)).total_seconds())
    note = f"waited {waited:.0f}s for capacity (since {since(entry).isoformat()})"
    assigned = later_attempt(
        lead,
        frame,
        policy,
        entry.holders,
        attempt=entry.attempt + 1,
        trigger=TRIGGER_FREED,
        note=note,
        now=now,
        extra={"waited_seconds": waited},
    )
    if assigned.decision.rep_id is None:
        return None
    assert assigned.entry.status == OPEN
    return replace(assigned, entry=replace(assigned.entry, waited_seconds=waited))


def timed_out(lead: LeadCreated, frame: PoolFrame, policy: Policy, entry: LedgerEntry, *, now: datetime) -> Assigned:
    """The lead waited the policy's `max_wait`: it goes to the open pool (claimable) as attempt n+1. The
    limit it started waiting under holds even if the pool's policy changed since."""
    waited = max(0.0, (now - since(entry)).total_seconds())
    old = AssignmentDecision.model_validate(entry.decision)
    limit = policy.waiting.max_wait if policy.waiting is not None else None
    limit = limit or f"the one it started waiting under (due {entry.sla_due})"
    summary = f"sent to the open pool: waited {waited:.0f}s for capacity, the policy's max_wait is {limit}"
    attempt = entry.attempt + 1
    d = old.model_copy(
        update={
            "decision_id": decision_id(lead.lead_id, attempt),
            "attempt": attempt,
            "reason": "sent_to_claim_pool",
            "rep_id": None,
            "decided_at": now,
            "trigger": TRIGGER_MAX_WAIT,
            "previous_holders": list(entry.holders) or None,
            "waited_seconds": waited,
            "policy_id": policy.id,
            "policy_version": policy.version,
            "explanation": old.explanation.model_copy(
                update={"summary": summary, "chosen": None, "notes": [*old.explanation.notes, summary]}
            ),
        }
    )
    entry_after = LedgerEntry(
        decision=d.model_dump(mode="json"),
        status=CLAIMABLE,
        rep_id=None,
        value=entry.value,
        features=entry.features,
        half_life=entry.half_life,
        holders=entry.holders,
        waited_seconds=waited,
    )
    return with_lead(Assigned(d, entry_after, None, None, duplicate=False), lead, policy, now=now)
