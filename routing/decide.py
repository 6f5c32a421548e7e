"""decide(): one lead, one pool frame, one policy -> one explained decision. Deterministic.

Pipeline: value tier -> strategy (rule entry, else experiment variant, else default) -> eligibility
filters (with the fallback chain) -> weighted scorers -> selector -> explanation (+ shadow strategies).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from routing import availability, fairness, pairmodel
from routing.exploration import explore
from routing.frame import PoolFrame
from routing.ids import decision_id, unit_hash
from routing.learning import features
from routing.policy import Growth, Policy, Relaxation, Strategy, TagNeed, ValueTier
from schemas.events import AssignmentDecision, Explanation, LeadCreated, ScoredRep, ShadowDecision

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]
# The first failing check names a rep's exclusion, in this order ("why not rep B").
EXCLUSIONS = (
    "excluded",
    "inactive",
    "unavailable",
    "out_of_office",
    "off_shift",
    "at_capacity",
    "daily_cap",
    "weekly_cap",
    "value_cap",
    "tier_not_allowed",
    "missing_tag",
    "premium_share_cap",
    "growth_channel",  # eligible, but held back because the lead is reserved for growth reps
)


@dataclass(frozen=True)
class Route:
    """How a lead is handled before any rep is looked at."""

    value: float
    tier: ValueTier | None
    strategy_name: str
    strategy: Strategy
    rule: str | None
    variant: str | None
    growth: bool
    features: list[str]


@dataclass
class Outcome:
    """A decision plus what the writer needs to update state (rotation position, counters)."""

    decision: AssignmentDecision
    index: int | None
    vpass: float = 0.0
    vtime: float = 0.0
    premium: bool = False
    value: float = 0.0
    route: Route | None = None


@dataclass
class _Relax:
    dropped: set[str] = field(default_factory=set)
    drop_all: bool = False
    all_tiers: bool = False
    ignore_hours: bool = False
    states: set[str] = field(default_factory=set)  # availability tiers accepted besides "available"

    def apply(self, step: Relaxation) -> str:
        said = []
        if step.drop_must_have == "all":
            self.drop_all = True
            said.append("dropped all must-have tags")
        elif step.drop_must_have:
            self.dropped.update(step.drop_must_have)
            said.append("dropped must-have " + ", ".join(step.drop_must_have))
        if step.allow_all_tiers:
            self.all_tiers = True
            said.append("allowed all rep tiers")
        if step.ignore_working_hours:
            self.ignore_hours = True
            said.append("ignored working hours")
        return "; ".join(said) or "no-op"


def accepted(state: str) -> str:
    """The explanation's `relaxed` step of an availability tier (verify reads it: such a decision may go
    to a rep in that state)."""
    return f"accepted {state} reps"


def lead_value(lead: LeadCreated, policy: Policy) -> float:
    if policy.value_field == "score":
        score = lead.attributes.get("score")
        return float(score) if isinstance(score, int | float) and not isinstance(score, bool) else 0.0
    return lead.estimated_value or 0.0


def value_tier(policy: Policy, value: float) -> ValueTier | None:
    tier = None
    for candidate in sorted(policy.value_tiers, key=lambda t: t.min_value):
        if value >= candidate.min_value:
            tier = candidate
    return tier


def route(lead: LeadCreated, policy: Policy) -> Route:
    value = lead_value(lead, policy)
    tier = value_tier(policy, value)
    name, rule, variant = "default", None, None
    for entry in policy.rules:
        if entry.when.matches(lead):
            name, rule = entry.strategy, entry.name
            break
    else:
        if policy.experiment:
            u = unit_hash("variant", policy.experiment.id, lead.lead_id)
            cumulative = 0.0
            for v in policy.experiment.variants:
                cumulative += v.share
                if u < cumulative:
                    name, variant = v.strategy, v.id
                    break
            else:
                last = policy.experiment.variants[-1]
                name, variant = last.strategy, last.id
    growth = False
    if policy.growth and unit_hash("growth", lead.lead_id) < policy.growth.share:
        lowest = min((t.min_value for t in policy.value_tiers), default=0.0)
        growth = policy.growth.include_premium or tier is None or tier.min_value <= lowest
    learn = policy.learning
    tier_name = tier.name if tier else None
    feats = features(lead, tier_name, learn.features, learn.size_bands) if learn else features(lead, tier_name)
    return Route(value, tier, name, policy.strategies[name], rule, variant, growth, feats)


def _template(need: TagNeed, lead: LeadCreated) -> str | None:
    """ "lang:{language}" -> "lang:de"; None when the lead lacks the field (the need does not apply)."""
    if "{" not in need.tag:
        return need.tag
    values: dict[str, Any] = {k: getattr(lead, k) for k in ("language", "country", "industry", "product", "source")}
    values.update({f"attributes.{k}": v for k, v in lead.attributes.items()})
    out = need.tag
    for key, value in values.items():
        token = "{" + key + "}"
        if token in out:
            if value is None:
                return None
            out = out.replace(token, str(value).lower())
    return None if "{" in out else out


def _excluded(frame: PoolFrame, exclude: frozenset[str], no: B) -> B:
    if not exclude:
        return no
    mask = no.copy()
    for rep_id in exclude:
        if rep_id in frame.index:
            mask[frame.index[rep_id]] = True
    return mask


def _schedule(frame: PoolFrame, policy: Policy, relax: _Relax, now: datetime, no: B) -> tuple[B, B]:
    """(out of office, off shift): only reps with a schedule are looked at, one by one."""
    if not frame.scheduled:
        return no, no
    ooo, off = no.copy(), no.copy()
    hours = policy.respect_working_hours and not relax.ignore_hours
    for i in frame.scheduled:
        rep = frame.reps[i]
        ooo[i] = availability.out_of_office(rep, now)
        off[i] = hours and not availability.on_shift(rep, now)
    return ooo, off


def _tier_not_allowed(frame: PoolFrame, r: Route, policy: Policy, relax: _Relax, now: datetime, no: B) -> B:
    if r.tier is None or r.tier.allowed_rep_tiers is None or relax.all_tiers:
        return no
    bad = ~frame.tier_mask(r.tier.allowed_rep_tiers)
    if r.growth and policy.growth is not None:  # the growth channel opens premium leads to growth reps
        bad &= ~frame.growth_members(now, policy.growth.tiers, policy.growth.new_rep_days)
    return bad


def _missing_tags(frame: PoolFrame, lead: LeadCreated, r: Route, relax: _Relax, no: B) -> B:
    missing = no
    if relax.drop_all:
        return missing
    for need in r.strategy.must_have:
        tag = _template(need, lead)
        if tag is not None and tag not in relax.dropped and need.tag not in relax.dropped:
            missing = missing | (frame.tag_levels(tag) < need.level)
    return missing


def _eligibility(
    frame: PoolFrame,
    lead: LeadCreated,
    r: Route,
    policy: Policy,
    now: datetime,
    exclude: frozenset[str],
    relax: _Relax,
) -> tuple[B, dict[str, int]]:
    no = np.zeros(frame.n, dtype=np.bool_)
    ooo, off = _schedule(frame, policy, relax, now, no)
    caps = policy.caps
    daily = np.minimum(frame.daily_cap, np.inf if caps.daily is None else caps.daily)
    weekly = np.minimum(frame.weekly_cap, np.inf if caps.weekly is None else caps.weekly)
    value_cap = (
        (frame.day_value + r.value > caps.daily_value) & (frame.day_count > 0) if caps.daily_value is not None else no
    )
    premium_cap = no
    cap = policy.premium_cap
    if cap and r.tier is not None and r.tier.name == cap.tier and frame.state.premium >= cap.min_leads:
        premium_cap = frame.premium / max(1, frame.state.premium) >= cap.max_share
    excluded = _excluded(frame, exclude, no)
    tier_bad = _tier_not_allowed(frame, r, policy, relax, now, no)
    missing = _missing_tags(frame, lead, r, relax, no)
    available = frame.available | frame.in_states(relax.states) if relax.states else frame.available
    avail = policy.availability
    capacity = (
        frame.ramped_capacity(now, avail.ramp_seconds, avail.ramp_start)
        if avail.ramp_seconds is not None
        else frame.capacity
    )
    checks = (
        excluded,
        ~frame.active,
        ~available,
        ooo,
        off,
        frame.open >= capacity,
        frame.day_count >= daily,
        frame.week_count >= weekly,
        value_cap,
        tier_bad,
        missing,
        premium_cap,
    )
    remaining = np.ones(frame.n, dtype=np.bool_)
    counts: dict[str, int] = {}
    for reason, failed in zip(EXCLUSIONS[:-1], checks, strict=True):
        if failed is no:  # a check that cannot fail for this lead: skip the array work
            continue
        k = int(np.count_nonzero(remaining & failed))
        if k:
            counts[reason] = k
            remaining &= ~failed
    return remaining, counts


def _minmax(x: F64) -> F64:
    low, high = float(x.min()), float(x.max())
    if high - low <= 1e-12:
        return np.ones_like(x)
    return (x - low) / (high - low)


def _skills(frame: PoolFrame, idx: npt.NDArray[np.int64], lead: LeadCreated, r: Route) -> F64:
    """Mean over nice-to-have tags of min(level, wanted) / wanted; 1 when the lead wants nothing."""
    needs = [(t, n.level) for n in r.strategy.nice_to_have if (t := _template(n, lead)) is not None]
    fit = np.zeros(len(idx)) if needs else np.ones(len(idx))
    for tag, level in needs:
        fit += np.minimum(frame.tag_levels(tag)[idx], level) / level
    return fit / max(1, len(needs))


def _scores(
    frame: PoolFrame, idx: npt.NDArray[np.int64], lead: LeadCreated, r: Route, policy: Policy
) -> tuple[dict[str, F64], dict[str, F64], F64]:
    """Per scorer: normalized component in [0, 1] over the eligible reps; raw facts; rotation passes."""
    cap, opened = frame.capacity[idx], frame.open[idx]
    stride = 1.0 / frame.weight[idx]
    eff = np.maximum(frame.vpass[idx], frame.state.vtime - policy.rotation.catch_up * stride)
    prior_won, prior_lost = policy.performance.prior_won, policy.performance.prior_lost
    won, lost = frame.won[idx], frame.lost[idx]
    win_rate = (won + prior_won) / (won + lost + prior_won + prior_lost)
    facts: dict[str, F64] = {"open": opened, "capacity": cap, "win_rate": win_rate}
    comps: dict[str, F64] = {}
    names = [name for name, weight in r.strategy.scorers.items() if weight > 0] + list(r.strategy.tie_break)
    for name in names:
        if name == "load":
            comps[name] = _load(cap, opened)
        elif name == "rotation":
            comps[name] = _minmax(-eff)  # the rep furthest behind in its weighted share scores 1
        elif name == "tier_fit":
            preferred = r.tier.preferred_rep_tiers if r.tier else []
            comps[name] = np.where(frame.tier_mask(preferred)[idx], 1.0, 0.5) if preferred else np.ones(len(idx))
        elif name == "skills":
            comps[name] = _skills(frame, idx, lead, r)
        elif name == "performance":
            comps[name] = _minmax(win_rate)
        elif name == "revenue":
            comps[name] = _minmax(frame.revenue[idx])
            facts["revenue"] = frame.revenue[idx]
        elif name == "predicted":
            p = _predict(frame, idx, r.features, prior_won, prior_lost)
            comps[name] = _minmax(p)
            facts["predicted_win"] = p
        elif name == "fairness":
            shares = fairness.fair_shares(frame.capacity, frame.weight)
            gap = fairness.deficit(frame.value, shares)[idx]
            comps[name] = _minmax(gap)
            facts["fair_share"] = shares[idx]
    return comps, facts, eff


def _load(cap: F64, opened: F64) -> F64:
    """Remaining capacity, (capacity - open) / capacity; for a rep without a limit 1 / (1 + open), so
    that fewer open leads still score higher (inf / inf would be NaN)."""
    limited = np.isfinite(cap)
    safe = np.where(limited, cap, 1.0)
    out: F64 = np.where(limited, (safe - opened) / safe, 1.0 / (1.0 + opened))
    return out


def _predict(frame: PoolFrame, idx: npt.NDArray[np.int64], feats: list[str], a: float, b: float) -> F64:
    """Vectorized learning.predict over the eligible reps (same formula, see routing/learning.py)."""
    won, lost = frame.base_won[idx], frame.base_lost[idx]
    base = np.log((won + a) / (lost + b))
    rate = (won + a) / (won + lost + a + b)
    score = base.copy()
    strength = 4.0
    for f in feats:
        f_won, f_lost = frame.feature_counts(f)
        fw, fl = f_won[idx], f_lost[idx]
        seen = (fw + fl) > 0
        adj = np.log((fw + rate * strength) / (fl + (1 - rate) * strength)) - base
        score += np.where(seen, adj, 0.0)
    p: F64 = 1.0 / (1.0 + np.exp(-np.clip(score, -30, 30)))
    return p


@dataclass
class _Evaluation:
    idx: npt.NDArray[np.int64]
    total: F64
    comps: dict[str, F64]
    facts: dict[str, F64]
    eff: F64
    excluded: dict[str, int]
    relaxed: list[str]
    notes: list[str]
    order: npt.NDArray[np.int64]  # positions into idx, best first
    post: pairmodel.Posterior | None = None  # with an objective: the pair model's posterior
    scale: F64 | None = None  # value of a win, in the objective's units
    cost: F64 | None = None  # load cost, in the same units


def _evaluate(
    frame: PoolFrame, lead: LeadCreated, r: Route, policy: Policy, now: datetime, exclude: frozenset[str]
) -> _Evaluation:
    relax = _Relax()
    relaxed: list[str] = []
    mask, excluded = _eligibility(frame, lead, r, policy, now, exclude, relax)
    for step in r.strategy.relax:
        if mask.any():
            break
        relaxed.append(relax.apply(step))
        mask, excluded = _eligibility(frame, lead, r, policy, now, exclude, relax)
    for tier in policy.availability.tiers:  # nobody available qualifies: the next availability tier
        if mask.any():
            break
        relax.states.add(tier)
        relaxed.append(accepted(tier))
        mask, excluded = _eligibility(frame, lead, r, policy, now, exclude, relax)
    notes: list[str] = []
    if r.growth and policy.growth is not None and mask.any():
        growth = mask & frame.growth_members(now, policy.growth.tiers, policy.growth.new_rep_days)
        if growth.any():
            held = int(np.count_nonzero(mask)) - int(np.count_nonzero(growth))
            notes.append(f"growth channel: {int(growth.sum())} growth rep(s) eligible, {held} held back")
            if held:
                excluded = {**excluded, "growth_channel": held}
            mask = growth
        else:
            notes.append("growth channel: no growth rep eligible, open to all")
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        empty = np.zeros(0)
        return _Evaluation(idx, empty, {}, {}, empty, excluded, relaxed, notes, np.zeros(0, dtype=np.int64))
    comps, facts, eff = _scores(frame, idx, lead, r, policy)
    post = scale = cost = None
    if r.strategy.objective is not None and policy.learning is not None:
        total, post, scale, cost = _expected(frame, idx, r, policy, now)
        facts.update(p_win=post.p, p_sd=post.sd, deals=post.deals, expected_value=scale * post.p, load_cost=cost)
    else:
        weights = {k: w for k, w in r.strategy.scorers.items() if w > 0}
        total_weight = sum(weights.values()) or 1.0
        total = sum((comps[k] * w for k, w in weights.items()), np.zeros(len(idx))) / total_weight
    rank = frame.rotation_rank()[idx]
    # Best score first; among equal scores the tie-break scorers in turn, then rotation order (lexsort
    # sorts by its last key first).
    ties = [-np.round(comps[name], 9) for name in reversed(r.strategy.tie_break)]
    order = np.lexsort((rank, *ties, -np.round(total, 9)))
    return _Evaluation(idx, total, comps, facts, eff, excluded, relaxed, notes, order, post, scale, cost)


def _expected(
    frame: PoolFrame, idx: npt.NDArray[np.int64], r: Route, policy: Policy, now: datetime
) -> tuple[F64, pairmodel.Posterior, F64, F64]:
    """Expected value of giving the lead to each eligible rep, minus the cost of the load it adds, both
    in the objective's units (no rescaling across reps: a noisy difference stays a small one)."""
    objective, learn = r.strategy.objective, policy.learning
    assert objective is not None and learn is not None  # checked by the caller
    post = pairmodel.posterior(frame, idx, r.features, learn, now)
    cap = frame.capacity[idx]
    if objective.unit == "probability" or r.value <= 0:  # a lead without a value: decide on P(won)
        scale = np.ones(len(idx))
    elif objective.unit == "revenue":
        scale = np.full(len(idx), r.value)
    else:
        finite = frame.capacity[np.isfinite(frame.capacity)]
        largest = float(finite.max()) if len(finite) and finite.max() > 0 else 1.0
        scale = r.value / np.where(np.isfinite(cap), np.maximum(cap, 1.0), largest)
    ev = scale * post.p
    cost = objective.load_cost * float(ev.mean()) * (1.0 - _load(cap, frame.open[idx]))
    return ev - cost, post, scale, cost


def _scored(frame: PoolFrame, ev: _Evaluation, pos: int) -> ScoredRep:
    return ScoredRep(
        rep_id=frame.ids[int(ev.idx[pos])],
        score=round(float(ev.total[pos]), 6),
        components={k: round(float(v[pos]), 6) for k, v in ev.comps.items()},
        # facts go to JSON: an unlimited rep's capacity (inf) is left out rather than written as Infinity
        facts={k: round(float(v[pos]), 6) for k, v in ev.facts.items() if np.isfinite(v[pos])},
    )


def _select(
    frame: PoolFrame,
    ev: _Evaluation,
    strategy: Strategy,
    policy: Policy,
    r: Route,
    lead_id: str,
    attempt: int,
    now: datetime,
) -> tuple[int | None, list[str]]:
    """Position (into ev.idx) of the chosen rep, None for the claim pool or nobody; and notes saying
    when exploration or a fairness bound changed the choice."""
    if len(ev.idx) == 0 or strategy.selector.type == "claim_pool":
        return None, []
    if strategy.selector.type == "weighted_draw" and strategy.objective is None:
        ordered = ev.order[np.argsort(ev.idx[ev.order], kind="stable")]  # draw over ids in a fixed order
        p = np.maximum(ev.total[ordered], 1e-9) ** (1.0 / strategy.selector.temperature)
        cumulative = np.cumsum(p / p.sum())
        u = unit_hash("draw", lead_id, str(attempt))
        pos = int(ordered[min(int(np.searchsorted(cumulative, u, side="right")), len(ordered) - 1)])
    else:
        pos = int(ev.order[0])
    order, notes = _explored(frame, ev, strategy, lead_id, attempt, pos)
    if policy.bounds is None:
        return order[0], notes
    growth = policy.growth or Growth()
    members = frame.growth_members(now, growth.tiers, growth.new_rep_days)
    reps = [int(ev.idx[k]) for k in order]
    choice = fairness.within_bounds(reps, r.value, policy.bounds, frame, members, frame.ids)
    if choice.note:
        notes.append(choice.note)
    return order[reps.index(choice.rep)], notes


def _explored(
    frame: PoolFrame, ev: _Evaluation, strategy: Strategy, lead_id: str, attempt: int, first: int
) -> tuple[list[int], list[str]]:
    """The eligible reps in order of preference: the first choice, or the rep exploration tries."""
    order = [first, *(int(k) for k in ev.order if int(k) != first)]
    x = strategy.exploration
    if x is None or ev.post is None or ev.scale is None or ev.cost is None:
        return order, []
    tried = explore(x, ev.total, ev.order, ev.post, ev.scale, ev.cost, lead_id, attempt)
    if tried is None:
        return order, []
    order.remove(tried.pos)
    best, alt = frame.ids[int(ev.idx[tried.best])], frame.ids[int(ev.idx[tried.pos])]
    note = (
        f"explored ({tried.why}): {alt} (expected {ev.total[tried.pos]:.4g}, P(win) {ev.post.p[tried.pos]:.2f}"
        f" +/- {ev.post.sd[tried.pos]:.2f}) instead of {best} (expected {ev.total[tried.best]:.4g})"
    )
    return [tried.pos, *order], [note]


def evaluate(
    lead: LeadCreated,
    frame: PoolFrame,
    policy: Policy,
    *,
    now: datetime,
    attempt: int = 1,
    exclude: frozenset[str] = frozenset(),
) -> Outcome:
    frame.refresh(now, policy.performance.window_days)
    r = route(lead, policy)
    ev = _evaluate(frame, lead, r, policy, now, exclude)
    pos, selected = _select(frame, ev, r.strategy, policy, r, lead.lead_id, attempt, now)
    chosen = _scored(frame, ev, pos) if pos is not None else None
    ranked = [int(p) for p in ev.order[: policy.runners_up + 1] if pos is None or int(p) != pos]
    runners = [_scored(frame, ev, p) for p in ranked[: policy.runners_up]]
    claim = r.strategy.selector.type == "claim_pool"
    if claim and len(ev.idx):
        reason = "sent_to_claim_pool"
    elif chosen is not None:
        reason = "assigned"
    else:
        reason = "empty_pool" if frame.n == 0 else "no_eligible_rep"
    shadow = [_shadow(frame, lead, r, name, policy, now, exclude, attempt) for name in _shadows(policy, r)]
    explanation = Explanation(
        strategy=r.strategy_name,
        summary=_summary(reason, chosen, len(ev.idx), ev.excluded, r),
        weights={k: w for k, w in r.strategy.scorers.items() if w > 0},
        value_tier=r.tier.name if r.tier else None,
        rule=r.rule,
        growth_channel=r.growth,
        relaxed=ev.relaxed,
        chosen=chosen,
        runners_up=runners,
        eligible=len(ev.idx),
        excluded=dict(sorted(ev.excluded.items())),
        notes=ev.notes + selected,
    )
    decision = AssignmentDecision(
        decision_id=decision_id(lead.lead_id, attempt),
        lead_id=lead.lead_id,
        pool=frame.pool,
        rep_id=chosen.rep_id if chosen else None,
        reason=reason,
        attempt=attempt,
        policy_id=policy.id,
        policy_version=policy.version,
        variant=r.variant,
        experiment=policy.experiment.id if policy.experiment and r.variant else None,
        explanation=explanation,
        shadow=shadow,
        lead_created_at=lead.created_at,
        decided_at=now,
    )
    if pos is None:
        return Outcome(decision, None, route=r, value=r.value)
    i = int(ev.idx[pos])
    eff = float(ev.eff[pos])
    premium = bool(policy.premium_cap and r.tier and r.tier.name == policy.premium_cap.tier)
    return Outcome(decision, i, eff + 1.0 / float(frame.weight[i]), eff, premium, r.value, r)


def _shadows(policy: Policy, r: Route) -> list[str]:
    return [s for s in policy.experiment.shadow if s != r.strategy_name] if policy.experiment else []


def _shadow(
    frame: PoolFrame,
    lead: LeadCreated,
    r: Route,
    name: str,
    policy: Policy,
    now: datetime,
    exclude: frozenset[str],
    attempt: int,
) -> ShadowDecision:
    alt = Route(r.value, r.tier, name, policy.strategies[name], r.rule, r.variant, r.growth, r.features)
    ev = _evaluate(frame, lead, alt, policy, now, exclude)
    pos, _ = _select(frame, ev, alt.strategy, policy, alt, lead.lead_id, attempt, now)
    if pos is None:
        return ShadowDecision(strategy=name, rep_id=None)
    return ShadowDecision(strategy=name, rep_id=frame.ids[int(ev.idx[pos])], score=round(float(ev.total[pos]), 6))


def decide(
    lead: LeadCreated,
    frame: PoolFrame,
    policy: Policy,
    *,
    now: datetime,
    attempt: int = 1,
    exclude: frozenset[str] = frozenset(),
) -> AssignmentDecision:
    """The decision alone (no state changes): for dry runs, replays and tests."""
    return evaluate(lead, frame, policy, now=now, attempt=attempt, exclude=exclude).decision


def _summary(reason: str, chosen: ScoredRep | None, eligible: int, excluded: dict[str, int], r: Route) -> str:
    weights: dict[str, float] = {str(k): v for k, v in r.strategy.scorers.items()}
    skipped = ", ".join(f"{why} {n}" for why, n in sorted(excluded.items()))
    tail = f"{eligible} eligible" + (f", excluded: {skipped}" if skipped else "")
    how = f"strategy {r.strategy_name}" + (f" (rule {r.rule})" if r.rule else "")
    how += f", variant {r.variant}" if r.variant else ""
    how += f", tier {r.tier.name}" if r.tier else ""
    how += ", growth channel" if r.growth else ""
    if reason == "empty_pool":
        return "no rep in this pool"
    if reason == "sent_to_claim_pool":
        return f"sent to the claim pool by {how}; {tail} may claim it"
    if chosen is None:
        return f"no eligible rep ({tail}); {how}"
    top = sorted(chosen.components.items(), key=lambda kv: -kv[1] * weights.get(kv[0], 0.0))[:3]
    parts = ", ".join(f"{k} {v:.2f}" for k, v in top)
    if "p_win" in chosen.facts:
        f = chosen.facts
        parts = (
            f"P(win) {f['p_win']:.2f} +/- {f['p_sd']:.2f} from {f['deals']:.1f} deals,"
            f" expected {f['expected_value']:.4g} - load {f['load_cost']:.4g}"
        )
    opened, capacity = int(chosen.facts.get("open", 0)), chosen.facts.get("capacity")
    held = f"{opened} open (no limit)" if capacity is None else f"{opened}/{int(capacity)} open"
    return f"score {chosen.score:.3f} ({parts}), {held}; {how}; {tail}"
