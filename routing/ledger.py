"""State transitions of a pool's lead ledger: assign once, release on close, expire after retention."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from routing import learning, performance, sla
from routing.decide import Outcome, evaluate
from routing.frame import PoolFrame, day_keys
from routing.model import Load, PoolState
from routing.policy import Policy, duration_seconds
from schemas.events import AssignmentDecision, DealClosed, LeadCreated

OPEN, UNASSIGNED, CLAIMABLE, WAITING = "open", "unassigned", "claimable", "waiting"
MOVED = "moved"  # an update moved the lead to another pool (`moved_to`): closed here, its records follow it


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One lead in one pool. Holds the decision itself so a redelivered lead re-emits it unchanged,
    and the lead's features (never its contact data) so the outcome can teach the model."""

    decision: Mapping[str, Any]
    status: str  # open | unassigned | claimable | waiting | won | lost | moved | (closing activity kinds)
    rep_id: str | None
    value: float = 0.0
    closed_at: str | None = None  # the deal's own closed_at (event time)
    features: tuple[str, ...] = field(default_factory=tuple)
    released_at: str | None = None  # when the worker applied the close (wall clock): retention counts from here
    # The half-life (days) of the policy that decided the lead: its outcome teaches the model with it,
    # so the learned rows follow from the log alone (None: the legacy, never-forgetting counts).
    half_life: float | None = None
    # The lifecycle (routing/lifecycle.py); absent from entries that never had any of it.
    sla_due: str | None = None  # due time of the holder's follow-up timer (its row: sla|<due>|<pool>|<lead>)
    holders: tuple[str, ...] = ()  # reps that held the lead before the current attempt, oldest first
    touched_at: str | None = None  # log time of the last activity (what stopped the timer)
    last_activity: Mapping[str, Any] | None = None  # kind, rep_id, occurred_at of the last activity
    closure: Mapping[str, Any] | None = None  # a close without a deal: reason, by, rep_id, at, summary
    claimed: bool = False  # the holder claimed it from the open pool (counts against its holding limit)
    lead: Mapping[str, Any] | None = None  # the lead (no contact data) while claimable or waiting: decided on later
    waited_seconds: float | None = None  # how long the lead waited for capacity before this attempt
    moved_to: str | None = None  # status moved: the pool the lead went to (activity, deals, claims follow it)
    updated_at: str | None = None  # log time of the last update applied to the lead here
    # A duplicate (routing/dedupe.py): lead_id and key kind of the lead it joined; it holds no load.
    duplicate_of: Mapping[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LedgerEntry:
        return cls(
            data["decision"],
            data["status"],
            data.get("rep_id"),
            data.get("value", 0.0),
            data.get("closed_at"),
            tuple(data.get("features") or ()),
            data.get("released_at"),
            data.get("half_life"),
            data.get("sla_due"),
            tuple(data.get("holders") or ()),
            data.get("touched_at"),
            data.get("last_activity"),
            data.get("closure"),
            bool(data.get("claimed", False)),
            data.get("lead"),
            data.get("waited_seconds"),
            data.get("moved_to"),
            data.get("updated_at"),
            data.get("duplicate_of"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": dict(self.decision),
            "status": self.status,
            "rep_id": self.rep_id,
            "value": self.value,
            "closed_at": self.closed_at,
            "features": list(self.features),
            "released_at": self.released_at,
            **({"half_life": self.half_life} if self.half_life is not None else {}),
            **({"sla_due": self.sla_due} if self.sla_due is not None else {}),
            **({"holders": list(self.holders)} if self.holders else {}),
            **({"touched_at": self.touched_at} if self.touched_at is not None else {}),
            **({"last_activity": dict(self.last_activity)} if self.last_activity is not None else {}),
            **({"closure": dict(self.closure)} if self.closure is not None else {}),
            **({"claimed": True} if self.claimed else {}),
            **({"lead": dict(self.lead)} if self.lead is not None else {}),
            **({"waited_seconds": self.waited_seconds} if self.waited_seconds is not None else {}),
            **({"moved_to": self.moved_to} if self.moved_to is not None else {}),
            **({"updated_at": self.updated_at} if self.updated_at is not None else {}),
            **({"duplicate_of": dict(self.duplicate_of)} if self.duplicate_of is not None else {}),
        }

    @property
    def attempt(self) -> int:
        return int(self.decision.get("attempt", 1))

    @property
    def holds_load(self) -> bool:
        """Whether the holder's load counts this lead (a duplicate joined another lead: it does not)."""
        return self.status == OPEN and self.rep_id is not None and self.duplicate_of is None

    @property
    def closed(self) -> bool:
        return self.status not in (OPEN, UNASSIGNED, CLAIMABLE, WAITING)


@dataclass(frozen=True, slots=True)
class Assigned:
    decision: AssignmentDecision
    entry: LedgerEntry
    load: Load | None  # the chosen rep's new load; None when nothing changes
    state: PoolState | None  # the pool's new state; None when nothing changes
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Closed:
    entry: LedgerEntry | None  # None: the deal matched no ledger entry
    released: tuple[str, Load] | None  # rep whose open count went down, and the new load
    credited: str | None  # rep whose performance the deal counts for
    buckets: dict[str, list[float]] | None  # that rep's new performance buckets
    model: dict[str, Any] | None  # that rep's new learned model (only when the lead's features are known)
    duplicate: bool


def assign(
    lead: LeadCreated,
    frame: PoolFrame,
    policy: Policy,
    entry: LedgerEntry | None,
    *,
    now: datetime,
) -> Assigned:
    """Decide a lead once. A lead already in the ledger gets its stored decision back, state untouched."""
    if entry is not None:
        return Assigned(AssignmentDecision.model_validate(entry.decision), entry, None, None, duplicate=True)
    result = record(evaluate(lead, frame, policy, now=now), frame, policy, now=now)
    return with_lead(result, lead, policy, now=now)


def with_lead(result: Assigned, lead: LeadCreated, policy: Policy, *, now: datetime) -> Assigned:
    """A claimable entry keeps the lead (without contact data): a claim is decided on it; with the
    policy's claim window, its timer (`sla_due`) says when the pool's policy assigns the lead instead."""
    if result.entry.status != CLAIMABLE:
        return result
    window = policy.claims.window
    due = sla.stamp(now + timedelta(seconds=duration_seconds(window))) if window else None
    return replace(result, entry=replace(result.entry, lead=lead.model_dump(mode="json"), sla_due=due))


def later_attempt(
    lead: LeadCreated,
    frame: PoolFrame,
    policy: Policy,
    holders: tuple[str, ...],
    *,
    attempt: int,
    trigger: str,
    note: str,
    now: datetime,
    extra: Mapping[str, Any] | None = None,
) -> Assigned:
    """Attempt `attempt` of a lead decided by the pool's policy, its previous `holders` excluded: the
    decision names the trigger, the holders, (in a note) why, and any `extra` fields; its entry keeps the
    holders. Whether a decision without a rep is acceptable is the caller's call (some keep the lead where
    it was instead)."""
    outcome = evaluate(lead, frame, policy, now=now, attempt=attempt, exclude=frozenset(holders))
    d = outcome.decision
    d = d.model_copy(
        update={
            "trigger": trigger,
            "previous_holders": list(holders) or None,
            "explanation": d.explanation.model_copy(update={"notes": [*d.explanation.notes, note]}),
            **(extra or {}),
        }
    )
    assigned = with_lead(record(replace(outcome, decision=d), frame, policy, now=now), lead, policy, now=now)
    return replace(assigned, entry=replace(assigned.entry, holders=holders))


def record(outcome: Outcome, frame: PoolFrame, policy: Policy, *, now: datetime) -> Assigned:
    """What a decision changes: the chosen rep's load, the pool's state, the lead's new ledger entry
    (with the holder's follow-up due time when the policy has a follow-up SLA)."""
    decision = outcome.decision
    feats = tuple(outcome.route.features) if outcome.route else ()
    learn = policy.learning
    if learn is not None and learn.load_bands and outcome.index is not None:
        # How loaded the rep was when it took the lead: the model learns what overload costs.
        i = outcome.index
        feats = (*feats, learning.load_band(float(frame.open[i]), float(frame.capacity[i])))
    if learn is not None and learn.tag_prior > 0 and learn.learn_tags and outcome.index is not None:
        # Whether the rep had declared a tag for this lead: the pool learns what a declared tag is worth.
        feats = (*feats, f"tag={learning.tag_level(frame.reps[outcome.index].tags, feats)}")
    new_load = new_state = None
    if outcome.index is not None and decision.rep_id is not None:
        today, week, _ = day_keys(now)
        old = frame.loads[outcome.index]
        new_load = old.received(outcome.value, outcome.premium, today, week, outcome.vpass)
        s = frame.state
        new_state = replace(
            s,
            cursor=decision.rep_id,
            vtime=max(s.vtime, outcome.vtime),
            assigned=s.assigned + 1,
            value=s.value + outcome.value,
            premium=s.premium + (1 if outcome.premium else 0),
        )
    status = OPEN if decision.rep_id else (CLAIMABLE if decision.reason == "sent_to_claim_pool" else UNASSIGNED)
    new_entry = LedgerEntry(
        decision=decision.model_dump(mode="json"),
        status=status,
        rep_id=decision.rep_id,
        value=outcome.value,
        features=feats,
        half_life=learn.half_life_days if learn is not None else None,
        sla_due=sla.stamp(sla.due_at(now, policy.follow_up, frame.reps[outcome.index]))
        if policy.follow_up is not None and outcome.index is not None and decision.rep_id is not None
        else None,
    )
    return Assigned(decision, new_entry, new_load, new_state, duplicate=False)


def close(
    deal: DealClosed,
    entry: LedgerEntry | None,
    load: Load | None,
    buckets: Mapping[str, list[float]] | None,
    model: Mapping[str, Any] | None = None,
    *,
    now: datetime | None = None,
) -> Closed:
    """Apply a closed deal: release the holder's load once, count the outcome for the credited rep,
    and teach that rep's model when the lead's features are known."""
    if entry is not None and entry.closed:
        return Closed(entry, None, None, None, None, duplicate=True)
    credited = deal.rep_id or (entry.rep_id if entry else None)
    new_buckets = performance.record(buckets or {}, deal.outcome, deal.amount, deal.closed_at) if credited else None
    new_model = (
        learning.update(model, entry.features, deal.outcome == "won", at=deal.closed_at, half_life=entry.half_life)
        if credited and entry is not None
        else None
    )
    if entry is None:
        return Closed(None, None, credited, new_buckets, None, duplicate=False)
    released = None
    if entry.holds_load and entry.rep_id is not None:
        released = (entry.rep_id, release(load, entry))
    released_at = (now or deal.closed_at).isoformat()
    new_entry = replace(entry, status=deal.outcome, closed_at=deal.closed_at.isoformat(), released_at=released_at)
    return Closed(new_entry, released, credited, new_buckets, new_model, duplicate=False)


def release(load: Load | None, entry: LedgerEntry) -> Load:
    """The holder's load once it no longer holds the entry's lead (a claimed lead frees its holding limit too;
    a duplicate, which never counted, frees nothing)."""
    old = load or Load()
    if entry.duplicate_of is not None:
        return old
    return replace(old, open=max(0, old.open - 1), claimed=max(0, old.claimed - 1) if entry.claimed else old.claimed)


def expired(entry: LedgerEntry, *, now: datetime, retention: timedelta) -> bool:
    """Closed entries leave the ledger `retention` after the worker closed them (not after the deal's
    own closed_at: a backfill of old deals must not empty the dedupe horizon at once). Open ones stay."""
    since = entry.released_at or entry.closed_at
    if not entry.closed or since is None:
        return False
    return datetime.fromisoformat(since) + retention < now


def cursor_after_leaving(rotation: Sequence[str], cursor: str | None, leaving: str) -> str | None:
    """The cursor once `leaving` has left the pool: if it was the last rep chosen, the rep before it in
    rotation order, so that the rep after it is still next (a departed cursor would restart the order)."""
    if cursor != leaving or leaving not in rotation:
        return cursor
    others = [r for r in rotation if r != leaving]
    if not others:
        return None
    k = list(rotation).index(leaving)
    return rotation[k - 1] if k > 0 else others[-1]


def with_member(members: list[str], rep_id: str, present: bool) -> list[str]:
    """The pool's member list, in join order, after a roster change: a member keeps its place, a new
    one (or one coming back) goes to the end, one leaving is taken out."""
    if present:
        return list(members) if rep_id in members else [*members, rep_id]
    return [m for m in members if m != rep_id]
