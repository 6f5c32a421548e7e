"""Records for the archive tests: decisions and deals as the worker and a CRM write them, and consumed records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from routing.ids import decision_id
from schemas.events import AssignmentDecision, DealClosed, Explanation, ScoredRep

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Consumed:
    """The part of an aiokafka ConsumerRecord the archive reads."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None


def make_decision(lead_id: str = "L1", *, attempt: int = 1, minutes: float = 0, **overrides: Any) -> AssignmentDecision:
    rep = overrides.pop("rep_id", "anna")
    data: dict[str, Any] = {
        "decision_id": decision_id(lead_id, attempt),
        "lead_id": lead_id,
        "pool": "dach",
        "rep_id": rep,
        "reason": "assigned" if rep else "no_eligible_rep",
        "attempt": attempt,
        "policy_id": "default",
        "policy_version": 3,
        "variant": "b",
        "experiment": "trial-1",
        "explanation": Explanation(
            strategy="balanced", summary="s", chosen=ScoredRep(rep_id=rep, score=0.75) if rep else None
        ),
        "lead_created_at": T0 + timedelta(minutes=minutes) - timedelta(seconds=2),
        "decided_at": T0 + timedelta(minutes=minutes),
    }
    data.update(overrides)
    return AssignmentDecision.model_validate(data)


def make_deal(lead_id: str = "L1", *, minutes: float = 60, **overrides: Any) -> DealClosed:
    data: dict[str, Any] = {
        "lead_id": lead_id,
        "outcome": "won",
        "amount": 1200.5,
        "closed_at": T0 + timedelta(minutes=minutes),
    }
    data.update(overrides)
    return DealClosed.model_validate(data)


def consumed(topic: str, events: list[Any], *, partition: int = 0, first_offset: int = 0) -> list[Consumed]:
    return [
        Consumed(topic, partition, first_offset + i, e.model_dump_json().encode(), e.lead_id.encode())
        for i, e in enumerate(events)
    ]
