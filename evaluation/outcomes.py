"""`leadrelay report`: decisions joined with their deals, each lead once: conversion by strategy, variant,
rep and tier, A/B comparisons with a fixed-horizon stopping rule, fairness and load over time.

Each lead counts once: decision records are deduplicated on `decision_id` (a re-emitted decision is
the same record again), and of several attempts the latest is the lead's effective decision. A deal
counts once per lead (the first in log order, as the worker ignores a second deal for a closed lead);
a deal for a lead without a decision is counted apart, not added to any group.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from evaluation import stats
from routing import fairness
from routing.model import Rep
from schemas.events import AssignmentDecision, DealClosed, LeadCreated, RepUpdated

GROUPS = ("pool", "strategy", "variant", "rep", "rep_tier", "value_tier")
NONE = "(none)"


@dataclass(frozen=True)
class LeadRow:
    lead_id: str
    pool: str
    rep: str  # "pool/rep", or "(unassigned)"
    reason: str
    strategy: str
    variant: str  # "experiment/variant" or "(none)"
    experiment: str | None
    arm: str | None
    rep_tier: str
    value_tier: str
    value: float
    decided_at: datetime
    outcome: str | None  # won | lost | None: no deal yet
    amount: float


@dataclass
class Joined:
    rows: list[LeadRow] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    capacity: dict[str, float] = field(default_factory=dict)  # "pool/rep" -> capacity (1 when unknown)
    value_basis: str = "estimated_value"


def join(
    decisions: Iterable[AssignmentDecision],
    deals: Iterable[DealClosed],
    *,
    leads: Iterable[LeadCreated] = (),
    roster: Iterable[RepUpdated] = (),
) -> Joined:
    out = Joined()
    effective = _effective(decisions, out.counts)
    outcome = _outcomes(deals, effective, out.counts)
    values: dict[str, float] = {}
    for lead in leads:
        values.setdefault(lead.lead_id, lead.estimated_value or 0.0)
    if not values:
        out.value_basis = "lead count"  # without leads, fairness is measured in leads, not value
    profiles = {r.rep_id: r for r in roster}
    for d in sorted(effective.values(), key=lambda d: (d.decided_at, d.lead_id)):
        rep = f"{d.pool}/{d.rep_id}" if d.rep_id else "(unassigned)"
        profile = profiles.get(d.rep_id or "")
        chosen = d.explanation.chosen
        if d.rep_id:
            if profile is not None:
                out.capacity[rep] = float(Rep.from_event(profile, d.pool).capacity or 1)
            elif chosen is not None and "capacity" in chosen.facts:
                out.capacity[rep] = chosen.facts["capacity"] or 1.0
            else:
                out.capacity.setdefault(rep, 1.0)
        closed = outcome.get(d.lead_id)
        out.rows.append(
            LeadRow(
                lead_id=d.lead_id,
                pool=d.pool,
                rep=rep,
                reason=d.reason,
                strategy=d.explanation.strategy,
                variant=f"{d.experiment}/{d.variant}" if d.variant else NONE,
                experiment=d.experiment if d.variant else None,
                arm=d.variant,
                rep_tier=profile.tier if profile else ("(unassigned)" if not d.rep_id else "(unknown)"),
                value_tier=d.explanation.value_tier or NONE,
                value=values.get(d.lead_id, 0.0) if values else 1.0,
                decided_at=d.decided_at,
                outcome=closed.outcome if closed else None,
                amount=closed.amount if closed and closed.outcome == "won" else 0.0,
            )
        )
    return out


def _effective(decisions: Iterable[AssignmentDecision], counts: Counter[str]) -> dict[str, AssignmentDecision]:
    """Each lead's effective decision: records deduplicated on decision_id, then the latest attempt."""
    seen: set[str] = set()
    effective: dict[str, AssignmentDecision] = {}
    for d in decisions:
        counts["decision records"] += 1
        if d.decision_id in seen:
            counts["duplicate decision records"] += 1
            continue
        seen.add(d.decision_id)
        have = effective.get(d.lead_id)
        if have is not None:
            counts["earlier attempts"] += 1
        if have is None or d.attempt > have.attempt:
            effective[d.lead_id] = d
    return effective


def _outcomes(
    deals: Iterable[DealClosed], effective: Mapping[str, AssignmentDecision], counts: Counter[str]
) -> dict[str, DealClosed]:
    """The first deal of each decided lead, in log order."""
    outcome: dict[str, DealClosed] = {}
    for deal in deals:
        counts["deal records"] += 1
        if deal.lead_id not in effective:
            counts["deals without a decision"] += 1
        elif deal.lead_id in outcome:
            counts["duplicate deals"] += 1
        else:
            outcome[deal.lead_id] = deal
    return outcome


def _cell(rows: list[LeadRow], alpha: float) -> dict[str, Any]:
    won = sum(r.outcome == "won" for r in rows)
    lost = sum(r.outcome == "lost" for r in rows)
    low, high = stats.wilson(won, won + lost, alpha)
    return {
        "leads": len(rows),
        "assigned": sum(r.rep != "(unassigned)" for r in rows),
        "won": won,
        "lost": lost,
        "open": len(rows) - won - lost,
        "conversion": won / (won + lost) if won + lost else None,
        "low": low,
        "high": high,
        "revenue": sum(r.amount for r in rows),
    }


def period_of(at: datetime, period: str) -> str:
    if period == "day":
        return at.date().isoformat()
    iso = at.isocalendar()
    return f"{iso.year}-W{iso.week:02d}"


def _over_time(joined: Joined, period: str) -> list[dict[str, Any]]:
    """Per period and pool: leads, outcomes, leads per rep and the Gini of value per capacity over the
    pool's reps (every rep that received a lead in the whole report, so an idle rep counts as 0)."""
    reps_of: dict[str, set[str]] = defaultdict(set)
    for r in joined.rows:
        if r.rep != "(unassigned)":
            reps_of[r.pool].add(r.rep)
    buckets: dict[tuple[str, str], list[LeadRow]] = defaultdict(list)
    for r in joined.rows:
        buckets[(period_of(r.decided_at, period), r.pool)].append(r)
    out = []
    for (when, pool), rows in sorted(buckets.items()):
        per_rep: Counter[str] = Counter(r.rep for r in rows if r.rep != "(unassigned)")
        value: dict[str, float] = defaultdict(float)
        for r in rows:
            value[r.rep] += r.value
        reps = sorted(reps_of[pool])
        shares = [value.get(rep, 0.0) / joined.capacity.get(rep, 1.0) for rep in reps]
        total = sum(per_rep.values())
        out.append(
            {
                "period": when,
                "pool": pool,
                **{k: v for k, v in _cell(rows, 0.05).items() if k in ("leads", "assigned", "won", "lost")},
                "value_gini": fairness.gini(shares),
                "max_share": max(per_rep.values()) / total if total else 0.0,
                "per_rep": {rep: per_rep.get(rep, 0) for rep in reps},
            }
        )
    return out


def _experiments(
    joined: Joined, *, effect: float, alpha: float, power: float, baseline: float | None, control: str | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    by_experiment: dict[str, list[LeadRow]] = defaultdict(list)
    for r in joined.rows:
        if r.experiment is not None:
            by_experiment[r.experiment].append(r)
    for experiment, rows in sorted(by_experiment.items()):
        arms_rows: dict[str, list[LeadRow]] = defaultdict(list)
        for r in rows:
            arms_rows[r.arm or NONE].append(r)
        arms = [
            stats.Arm(name, sum(r.outcome == "won" for r in rs), sum(r.outcome is not None for r in rs))
            for name, rs in sorted(arms_rows.items())
        ]
        entry: dict[str, Any] = {"arms": {name: _cell(rs, alpha) for name, rs in sorted(arms_rows.items())}}
        if len(arms) >= 2:
            v = stats.stopping_rule(arms, effect=effect, alpha=alpha, power=power, baseline=baseline, control=control)
            entry["verdict"] = {
                "decision": v.decision,
                "reason": v.reason,
                "need_per_arm": v.need,
                "baseline": v.baseline,
                "baseline_source": v.baseline_source,
                "effect": v.effect,
                "comparisons": [
                    {
                        "control": c.control,
                        "variant": c.variant,
                        "diff": c.diff,
                        "low": c.low,
                        "high": c.high,
                        "alpha": c.alpha,
                        "significant": c.significant,
                    }
                    for c in v.comparisons
                ],
            }
        out[experiment] = entry
    return out


def summarize(
    joined: Joined,
    *,
    period: str = "week",
    effect: float = 0.05,
    alpha: float = 0.05,
    power: float = 0.8,
    baseline: float | None = None,
    control: str | None = None,
) -> dict[str, Any]:
    by: dict[str, dict[str, Any]] = {}
    for group in GROUPS:
        rows: dict[str, list[LeadRow]] = defaultdict(list)
        for r in joined.rows:
            rows[str(getattr(r, group))].append(r)
        by[group] = {name: _cell(rs, alpha) for name, rs in sorted(rows.items())}
    return {
        "totals": _cell(joined.rows, alpha),
        "counts": dict(sorted(joined.counts.items())),
        "value_basis": joined.value_basis,
        "by": by,
        "experiments": _experiments(
            joined, effect=effect, alpha=alpha, power=power, baseline=baseline, control=control
        ),
        "period": period,
        "over_time": _over_time(joined, period),
        "stopping_rule": {"kind": "fixed horizon", "effect": effect, "alpha": alpha, "power": power},
    }


def totals_add_up(summary: Mapping[str, Any]) -> list[str]:
    """Every grouping's rows sum to the totals (each lead in exactly one row of each grouping); the
    problems found, [] when all add up. Also the over-time rows."""
    problems = []
    totals = summary["totals"]
    for group, cells in summary["by"].items():
        for key in ("leads", "won", "lost", "open"):
            got = sum(c[key] for c in cells.values())
            if got != totals[key]:
                problems.append(f"by {group}: {key} {got} != {totals[key]}")
    for key in ("leads", "won", "lost"):
        got = sum(row[key] for row in summary["over_time"])
        if got != totals[key]:
            problems.append(f"over time: {key} {got} != {totals[key]}")
    return problems
