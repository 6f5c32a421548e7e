"""Plain factories for the domain objects tests build over and over (fixtures in conftest re-export them)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from routing.frame import PoolFrame
from routing.ledger import Assigned, assign
from routing.model import Load, PoolState, Rep
from routing.policy import Policy
from schemas.events import DealClosed, LeadCreated

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def make_lead(**overrides: Any) -> LeadCreated:
    """A valid LeadCreated; overrides go through validation, so invalid ones raise."""
    data: dict[str, Any] = {"lead_id": "lead-1", "created_at": NOW - timedelta(minutes=5)}
    data.update(overrides)
    return LeadCreated.model_validate(data)


def make_rep(**overrides: Any) -> Rep:
    """An active, available rep with capacity 10 (the core's dataclass, not the wire event)."""
    data: dict[str, Any] = {"rep_id": "rep-a"}
    data.update(overrides)
    return Rep(**data)


def make_deal(**overrides: Any) -> DealClosed:
    data: dict[str, Any] = {"lead_id": "lead-1", "outcome": "won", "amount": 100.0, "closed_at": NOW}
    data.update(overrides)
    return DealClosed.model_validate(data)


def make_view(
    reps: Iterable[Rep],
    loads: Mapping[str, Load | int] | None = None,
    *,
    cursor: str | None = None,
    pool: str = "default",
) -> PoolFrame:
    """A PoolFrame; loads may be given as plain open counts."""
    normalized = {k: v if isinstance(v, Load) else Load(open=v, assigned=v) for k, v in (loads or {}).items()}
    by_id = {r.rep_id: r for r in reps}
    return PoolFrame(pool, by_id, normalized, state=PoolState(members=tuple(sorted(by_id)), cursor=cursor))


def make_policy(strategy: Mapping[str, Any] | None = None, **policy: Any) -> Policy:
    """A validated Policy; `strategy` (if given) becomes its "default" strategy."""
    data: dict[str, Any] = dict(policy)
    if strategy is not None:
        data["strategies"] = {**data.get("strategies", {}), "default": dict(strategy)}
    return Policy.model_validate(data)


def apply(frame: PoolFrame, result: Assigned) -> None:
    """Feed an assign() result back into the frame, as the route agent does after writing the tables."""
    if result.load is not None and result.decision.rep_id is not None:
        frame.set_load(result.decision.rep_id, result.load)
    if result.state is not None:
        frame.set_state(result.state)


def run_leads(
    frame: PoolFrame, policy: Policy, count: int, *, now: datetime = NOW, prefix: str = "L", **lead: Any
) -> list[Assigned]:
    """Assign `count` leads one after another, feeding each result back into the frame."""
    out = []
    for i in range(count):
        result = assign(make_lead(lead_id=f"{prefix}-{i}", **lead), frame, policy, None, now=now)
        apply(frame, result)
        out.append(result)
    return out
