"""Human-readable decision stories, for `leadrelay explain` and `leadrelay dry-run`."""

from __future__ import annotations

from schemas.events import AssignmentDecision, ScoredRep


def _rep_line(prefix: str, rep: ScoredRep, weights: dict[str, float]) -> list[str]:
    parts = "  ".join(f"{k}={v:.3f}" + (f"x{weights[k]:g}" if k in weights else "") for k, v in rep.components.items())
    facts = "  ".join(f"{k}={v:g}" for k, v in rep.facts.items())
    return [f"{prefix}{rep.rep_id:<16} score {rep.score:.4f}   {parts}", f"{'':<{len(prefix)}}{'':<16} facts: {facts}"]


def render(decision: AssignmentDecision) -> str:
    """Who, why, and who else was considered: one decision as a short report."""
    e = decision.explanation
    head = f"lead {decision.lead_id} in pool {decision.pool}, attempt {decision.attempt}: {decision.reason}"
    owner = f" -> {decision.rep_id}" if decision.rep_id else ""
    lines = [
        head + owner,
        f"  decided at {decision.decided_at.isoformat()} (lead created {decision.lead_created_at.isoformat()})",
        f"  decision id {decision.decision_id}",
        f"  policy {decision.policy_id} v{decision.policy_version}, strategy {e.strategy}"
        + (f", rule {e.rule}" if e.rule else "")
        + (f", experiment {decision.experiment} variant {decision.variant}" if decision.variant else "")
        + (f", value tier {e.value_tier}" if e.value_tier else "")
        + (", growth channel" if e.growth_channel else ""),
        f"  why: {e.summary}",
    ]
    if e.weights:
        lines.append("  weights: " + ", ".join(f"{k} {v:g}" for k, v in e.weights.items()))
    if e.chosen:
        lines += _rep_line(f"{'  chosen':<15}", e.chosen, e.weights)
    for i, rep in enumerate(e.runners_up, 1):
        lines += _rep_line(f"{f'  runner-up {i}':<15}", rep, e.weights)
    lines.append(f"  eligible: {e.eligible}")
    if e.excluded:
        lines.append("  not eligible: " + ", ".join(f"{n} {why}" for why, n in e.excluded.items()))
    lines += [f"  relaxed: {step}" for step in e.relaxed]
    lines += [f"  note: {note}" for note in e.notes]
    lines += [f"  shadow {s.strategy}: would pick {s.rep_id or 'nobody'}" for s in decision.shadow]
    return "\n".join(lines)
