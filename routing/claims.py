"""Claims on the open pool: the first valid claim in a pool's log takes the lead (pure: `now` is the log
time of the claim, choices hash ids)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from routing.decide import Outcome, _evaluate, _scored, route
from routing.frame import PoolFrame
from routing.ids import decision_id
from routing.ledger import CLAIMABLE, Assigned, LedgerEntry, later_attempt, record
from routing.model import Load
from routing.policy import Policy, Selector, duration_seconds
from schemas.events import AssignmentDecision, ClaimReason, Explanation, LeadCreated

TRIGGER_CLAIM = "claim"
TRIGGER_WINDOW = "claim_window"


@dataclass(frozen=True, slots=True)
class Answer:
    reason: ClaimReason
    detail: str
    assigned: Assigned | None = None  # the claimant's decision, ledger entry, load and pool state

    @property
    def accepted(self) -> bool:
        return self.assigned is not None


def claim(
    lead: LeadCreated,
    frame: PoolFrame,
    policy: Policy,
    entry: LedgerEntry,
    rep_id: str,
    load: Load | None,
    *,
    now: datetime,
) -> Answer:
    """A rep's claim on a lead of the open pool: checked at this point of the pool's log (the lead is still
    claimable, the rep is in the pool, off cooldown, under its holding limit, and eligible for the lead as
    the policy's strategy sees it, capacity included, without fallbacks), it becomes attempt n+1."""
    if entry.status != CLAIMABLE:
        return Answer("not_claimable", f"the lead is {entry.status}" + (f" ({entry.rep_id})" if entry.rep_id else ""))
    if rep_id not in frame.index:
        return Answer("not_in_pool", f"{rep_id} is not a member of pool {frame.pool}")
    rules = policy.claims
    back_at = datetime.fromisoformat(str(entry.decision["decided_at"]))
    if rules.cooldown and rep_id in entry.holders:
        until = back_at + timedelta(seconds=duration_seconds(rules.cooldown))
        if now < until:
            return Answer("cooldown", f"{rep_id} held the lead before; it may claim it again from {until.isoformat()}")
    held = (load or Load()).claimed
    if rules.holding_limit is not None and held >= rules.holding_limit:
        return Answer("holding_limit", f"{rep_id} holds {held} claimed lead(s), the limit is {rules.holding_limit}")
    r = route(lead, policy)
    # Only the claimant competes; no fallback relaxes what it needs, and the claim pool selector does not apply.
    r = replace(r, strategy=r.strategy.model_copy(update={"relax": [], "selector": Selector()}))
    ev = _evaluate(frame, lead, r, policy, now, frozenset(frame.ids) - {rep_id})
    if len(ev.idx) == 0:
        why = ", ".join(k for k in ev.excluded if k != "excluded") or "not eligible"
        return Answer("not_eligible", f"{rep_id} is not eligible for the lead: {why}")
    chosen = _scored(frame, ev, 0)
    opened, capacity = int(chosen.facts.get("open", 0)), chosen.facts.get("capacity")
    held_now = f"{opened} open (no limit)" if capacity is None else f"{opened}/{int(capacity)} open"
    explanation = Explanation(
        strategy=r.strategy_name,
        summary=f"claimed by {rep_id} from the open pool, {held_now}; strategy {r.strategy_name}",
        weights={k: w for k, w in r.strategy.scorers.items() if w > 0},
        value_tier=r.tier.name if r.tier else None,
        rule=r.rule,
        chosen=chosen,
        eligible=1,
        notes=[f"open pool since {back_at.isoformat()}"],
    )
    attempt = entry.attempt + 1
    decision = AssignmentDecision(
        decision_id=decision_id(lead.lead_id, attempt),
        lead_id=lead.lead_id,
        pool=frame.pool,
        rep_id=rep_id,
        reason="assigned",
        attempt=attempt,
        policy_id=policy.id,
        policy_version=policy.version,
        variant=r.variant,
        experiment=policy.experiment.id if policy.experiment and r.variant else None,
        explanation=explanation,
        lead_created_at=lead.created_at,
        decided_at=now,
        trigger=TRIGGER_CLAIM,
        previous_holders=list(entry.holders) or None,
    )
    i, eff = int(ev.idx[0]), float(ev.eff[0])
    premium = bool(policy.premium_cap and r.tier and r.tier.name == policy.premium_cap.tier)
    assigned = record(
        Outcome(decision, i, eff + 1.0 / float(frame.weight[i]), eff, premium, r.value, r), frame, policy, now=now
    )
    assert assigned.load is not None
    return Answer(
        "claimed",
        explanation.summary,
        replace(
            assigned,
            entry=replace(assigned.entry, holders=entry.holders, claimed=True),
            load=replace(assigned.load, claimed=assigned.load.claimed + 1),
        ),
    )


def window_closed(
    lead: LeadCreated, frame: PoolFrame, policy: Policy, entry: LedgerEntry, *, now: datetime
) -> Assigned | None:
    """Nobody claimed the lead within the policy's claim window: the pool's policy assigns it as attempt
    n+1 (its strategies' scorers, argmax, previous holders excluded). None: nobody is eligible, the lead
    stays in the open pool."""
    argmax = {name: s.model_copy(update={"selector": Selector()}) for name, s in policy.strategies.items()}
    assigner = policy.model_copy(update={"strategies": argmax})
    note = f"claim window: nobody claimed the lead within {policy.claims.window} (due {entry.sla_due})"
    assigned = later_attempt(
        lead, frame, assigner, entry.holders, attempt=entry.attempt + 1, trigger=TRIGGER_WINDOW, note=note, now=now
    )
    return assigned if assigned.decision.rep_id is not None else None
