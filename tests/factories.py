"""Plain factories for the domain objects tests build over and over (fixtures in conftest re-export them)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from routing.frame import PoolFrame
from routing.model import Load, PoolState, Rep
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
