"""The core's view of a pool: reps, their load and performance, the rotation cursor."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from schemas.events import RepUpdated


@dataclass(frozen=True, slots=True)
class Rep:
    """A rep's profile in one pool (validated at ingress, so built here without re-validation)."""

    rep_id: str
    tier: str = "standard"
    tags: Mapping[str, int] = field(default_factory=dict)
    capacity: int = 10
    weight: float = 1.0
    availability: str = "available"
    hired_at: date | None = None
    active: bool = True

    @classmethod
    def from_event(cls, event: RepUpdated) -> Rep:
        return cls(
            rep_id=event.rep_id,
            tier=event.tier,
            tags=dict(event.tags),
            capacity=event.capacity,
            weight=event.weight,
            availability=event.availability,
            hired_at=event.hired_at,
            active=event.active,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rep:
        hired = data.get("hired_at")
        return cls(
            rep_id=data["rep_id"],
            tier=data.get("tier", "standard"),
            tags=dict(data.get("tags") or {}),
            capacity=int(data.get("capacity", 10)),
            weight=float(data.get("weight", 1.0)),
            availability=data.get("availability", "available"),
            hired_at=date.fromisoformat(hired) if isinstance(hired, str) else hired,
            active=bool(data.get("active", True)),
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tags"] = dict(self.tags)
        out["hired_at"] = self.hired_at.isoformat() if self.hired_at else None
        return out


@dataclass(frozen=True, slots=True)
class Load:
    """What a rep holds in a pool: open leads now, leads and value received in total."""

    open: int = 0
    assigned: int = 0
    value: float = 0.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Load:
        if not data:
            return cls()
        return cls(int(data.get("open", 0)), int(data.get("assigned", 0)), float(data.get("value", 0.0)))

    def to_dict(self) -> dict[str, Any]:
        return {"open": self.open, "assigned": self.assigned, "value": self.value}


@dataclass(frozen=True, slots=True)
class PoolView:
    """Everything a decision may read about one pool, at one point of the pool's log."""

    pool: str
    reps: Mapping[str, Rep]
    loads: Mapping[str, Load] = field(default_factory=dict)
    cursor: str | None = None  # the last rep chosen by rotation: an id, so roster changes cause no reset

    def load_of(self, rep_id: str) -> Load:
        return self.loads.get(rep_id) or Load()
