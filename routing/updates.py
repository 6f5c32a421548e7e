"""Lead updates: a new version of a lead keeps its owner, is decided again, or moves to another pool.

Pure like the rest of routing/: `now` is the log time of the update in the pool's log, choices hash ids.
The route stage calls `apply` for every update in the log of the pool that holds the lead, and `moved_in`
when a moved lead arrives in its new pool (docs/lifecycle.md has the states and reason codes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np

from routing.decide import _missing_tags, _Relax, _tier_not_allowed, lead_value, route
from routing.frame import PoolFrame
from routing.ledger import (
    CLAIMABLE,
    MOVED,
    OPEN,
    UNASSIGNED,
    WAITING,
    Assigned,
    LedgerEntry,
    later_attempt,
    release,
)
from routing.model import Load
from routing.policy import Policy
from schemas.events import LeadCreated

TRIGGER_MOVED = "moved"
TRIGGER_UPDATED = "updated"
# What an update did (the metric's bounded label): kept its holder; moved to another pool; decided again
# here; re-queued (waiting, still nobody has room); stored (claimable: the new version is what is claimed);
# forwarded (the lead had moved on already); ignored (closed, or no ledger entry).
OUTCOMES = ("kept", "moved", "redecided", "requeued", "stored", "forwarded", "ignored")


@dataclass(frozen=True, slots=True)
class Moved:
    """The lead's next attempt in its new pool."""

    to_pool: str
    attempt: int
    holders: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Update:
    outcome: str  # one of OUTCOMES
    entry: LedgerEntry | None  # the lead's new entry here when no decision is made (kept, stored, requeued, moved)
    assigned: Assigned | None = None  # redecided: the new attempt's decision, entry, load and state
    released: tuple[str, Load] | None = None  # the holder that let go of the lead, and its new load
    stopped: str | None = None  # due time of the timer row that goes (the old holder's, or the wait's)
    moved: Moved | None = None


def holder_misfit(lead: LeadCreated, frame: PoolFrame, policy: Policy, rep_id: str, *, now: datetime) -> str | None:
    """Why the holder no longer fits the lead's new version, None if it does: the strategy's structural
    checks only (the value tier's allowed rep tiers, must-have tags), at any step of the strategy's own
    fallbacks (a holder a fallback gave the lead to still fits). Availability, schedule and capacity are
    not asked: the holder already holds the lead, and a rep's availability is the roster's business."""
    i = frame.index.get(rep_id)
    if i is None:  # the holder left the pool: its leads are open until they close (as for deals)
        return None
    r = route(lead, policy)
    no = np.zeros(frame.n, dtype=np.bool_)
    relax = _Relax()
    first = None
    for step in (None, *r.strategy.relax):
        if step is not None:
            relax.apply(step)
        if _tier_not_allowed(frame, r, policy, relax, now, no)[i]:
            first = first or "tier_not_allowed"
        elif _missing_tags(frame, lead, r, relax, no)[i]:
            first = first or "missing_tag"
        else:
            return None
    return first


def apply(
    lead: LeadCreated,
    to_pool: str,
    frame: PoolFrame,
    policy: Policy,
    entry: LedgerEntry,
    load: Load | None,
    *,
    now: datetime,
) -> Update:
    """A new version of the lead in the log of the pool that holds it (`frame.pool`). Another pool: the
    entry closes as `moved` (the holder's load released once) and the next attempt is decided there. The
    same pool: an open lead keeps its holder if it still fits (the policy's `updates`), else it is decided
    again as attempt n+1 with its holders excluded; an unassigned one is decided again; a waiting one is
    decided again or keeps waiting under its new order; a claimable one keeps the new version for claims."""
    if entry.status == MOVED:
        return Update("forwarded", None)
    if entry.closed:
        return Update("ignored", None)
    held = entry.status == OPEN and entry.rep_id is not None
    holders = (*entry.holders, entry.rep_id) if held and entry.rep_id is not None else entry.holders
    # A duplicate (dedupe) is held but never counted in its holder's load: nothing to release.
    released = (entry.rep_id, release(load, entry)) if entry.holds_load and entry.rep_id is not None else None
    at = now.isoformat()
    if to_pool != frame.pool:
        closure = {
            "reason": MOVED,
            "by": "update",
            "holder": entry.rep_id if held else None,
            "attempt": entry.attempt,
            "at": at,
            "summary": f"moved to pool {to_pool} by an update"
            + (f"; released one open lead of {entry.rep_id}" if released else ""),
        }
        gone = replace(
            entry,
            status=MOVED,
            moved_to=to_pool,
            sla_due=None,
            lead=None,
            released_at=at,
            updated_at=at,
            closure=closure,
        )
        return Update("moved", gone, None, released, entry.sla_due, Moved(to_pool, entry.attempt + 1, holders))
    if entry.status == CLAIMABLE:
        return Update("stored", replace(entry, lead=lead.model_dump(mode="json"), updated_at=at))
    if held and entry.rep_id is not None:
        misfit = holder_misfit(lead, frame, policy, entry.rep_id, now=now) if policy.updates.holder_must_fit else None
        if misfit is None:
            return Update("kept", replace(entry, updated_at=at))
        note = f"updated: the new version no longer fits {entry.rep_id} ({misfit})"
    else:
        assert entry.status in (UNASSIGNED, WAITING), entry.status
        note = f"updated: the new version is decided again (it was {entry.status})"
    assigned = later_attempt(
        lead, frame, policy, holders, attempt=entry.attempt + 1, trigger=TRIGGER_UPDATED, note=note, now=now
    )
    if entry.status == WAITING and assigned.decision.rep_id is None:  # still nobody has room: a new place in line
        value = lead_value(lead, policy)
        return Update("requeued", replace(entry, lead=lead.model_dump(mode="json"), value=value, updated_at=at))
    return Update("redecided", None, assigned, released, entry.sla_due)


def moved_in(
    lead: LeadCreated,
    frame: PoolFrame,
    policy: Policy,
    attempt: int,
    holders: tuple[str, ...],
    moved_from: str | None,
    *,
    now: datetime,
) -> Assigned:
    """A lead an update moved here: decided like a first sight, but as the given attempt with its previous
    holders excluded, and the decision says where it came from."""
    note = f"moved here from pool {moved_from or '?'} by an update"
    return later_attempt(lead, frame, policy, holders, attempt=attempt, trigger=TRIGGER_MOVED, note=note, now=now)
