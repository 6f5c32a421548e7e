"""decide(): one lead, one pool view, one policy -> one explained decision. Deterministic."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from routing.ids import decision_id
from routing.model import PoolView, Rep
from routing.policy import Policy
from schemas.events import AssignmentDecision, Explanation, LeadCreated, ScoredRep


def exclusion(rep: Rep, open_leads: int, excluded_ids: frozenset[str]) -> str | None:
    """Why a rep cannot take this lead, or None when it can."""
    if rep.rep_id in excluded_ids:
        return "excluded"
    if not rep.active:
        return "inactive"
    if rep.availability != "available":
        return "unavailable"
    if open_leads >= rep.capacity:
        return "at_capacity"
    return None


def rotation_order(rep_ids: Iterable[str], cursor: str | None) -> list[str]:
    """Rep ids in rotation order: those after the cursor first, then wrapping around.

    The cursor is the last chosen id, not an index, so adding or removing reps never resets it.
    """
    ordered = sorted(rep_ids)
    if cursor is None:
        return ordered
    after = [r for r in ordered if r > cursor]
    return after + [r for r in ordered if r <= cursor]


def decide(
    lead: LeadCreated,
    view: PoolView,
    policy: Policy,
    *,
    now: datetime,
    attempt: int = 1,
    exclude: frozenset[str] = frozenset(),
) -> AssignmentDecision:
    """Pick the least loaded eligible rep relative to capacity; ties go to the next in rotation."""
    excluded: Counter[str] = Counter()
    scored: list[ScoredRep] = []
    for rep_id in rotation_order(view.reps, view.cursor):
        rep = view.reps[rep_id]
        load = view.load_of(rep_id)
        why_not = exclusion(rep, load.open, exclude)
        if why_not:
            excluded[why_not] += 1
            continue
        remaining = (rep.capacity - load.open) / rep.capacity
        scored.append(
            ScoredRep(
                rep_id=rep_id,
                score=round(remaining, 9),
                components={"remaining_capacity": round(remaining, 9), "open": load.open, "capacity": rep.capacity},
            )
        )
    # Stable sort on score keeps rotation order among equals: that is the tie-break.
    ranked = sorted(scored, key=lambda s: -s.score)
    chosen = ranked[0] if ranked else None
    explanation = Explanation(
        strategy=policy.strategy,
        summary=_summary(chosen, len(ranked), excluded, empty=not view.reps),
        chosen=chosen,
        runners_up=ranked[1 : 1 + policy.runners_up],
        eligible=len(ranked),
        excluded=dict(sorted(excluded.items())),
    )
    reason = "assigned" if chosen else ("empty_pool" if not view.reps else "no_eligible_rep")
    return AssignmentDecision(
        decision_id=decision_id(lead.lead_id, attempt),
        lead_id=lead.lead_id,
        pool=view.pool,
        rep_id=chosen.rep_id if chosen else None,
        reason=reason,
        attempt=attempt,
        policy_id=policy.id,
        policy_version=policy.version,
        explanation=explanation,
        lead_created_at=lead.created_at,
        decided_at=now,
    )


def _summary(chosen: ScoredRep | None, eligible: int, excluded: Counter[str], *, empty: bool) -> str:
    skipped = ", ".join(f"{why} {n}" for why, n in sorted(excluded.items()))
    tail = f"{eligible} eligible" + (f", excluded: {skipped}" if skipped else "")
    if empty:
        return "no rep in this pool"
    if chosen is None:
        return f"no eligible rep ({tail})"
    c = chosen.components
    return f"least loaded: {int(c['open'])}/{int(c['capacity'])} open before this lead; {tail}"
