"""The core's records of one pool: rep profiles, their load counters, and the pool's own state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from typing import Any

from schemas.events import RepUpdated


@dataclass(frozen=True, slots=True)
class Rep:
    """A rep's profile in one pool (validated at ingress, so rebuilt here without re-validation)."""

    rep_id: str
    tier: str = "standard"
    tags: Mapping[str, int] = field(default_factory=dict)
    capacity: int | None = 10  # max open leads in the pool; None = unlimited
    weight: float = 1.0
    position: int | None = None  # explicit place in rotation order (lower first); None = join order
    availability: str = "available"
    hired_at: date | None = None
    active: bool = True
    timezone: str | None = None
    working_hours: Mapping[str, list[str]] | None = None
    out_of_office: tuple[tuple[datetime, datetime], ...] = ()
    daily_cap: int | None = None
    weekly_cap: int | None = None
    # Log time the rep last came back (to available and active) in this pool: its capacity ramps up from
    # here (policy availability.ramp_up). Set by the route stage, not by the roster event.
    returned_at: datetime | None = None

    @classmethod
    def from_event(cls, event: RepUpdated, pool: str | None = None) -> Rep:
        """The rep as one pool sees it: with that pool's capacity when the roster splits it."""
        return cls(
            rep_id=event.rep_id,
            tier=event.tier,
            tags=dict(event.tags),
            capacity=event.pool_capacity.get(pool, event.capacity) if pool else event.capacity,
            weight=event.weight,
            position=event.position,
            availability=event.availability,
            hired_at=event.hired_at,
            active=event.active,
            timezone=event.timezone,
            working_hours={str(day): list(shifts) for day, shifts in event.working_hours.items()}
            if event.working_hours is not None
            else None,
            out_of_office=tuple((a.start, a.end) for a in event.out_of_office),
            daily_cap=event.daily_cap,
            weekly_cap=event.weekly_cap,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rep:
        hired = data.get("hired_at")
        return cls(
            rep_id=data["rep_id"],
            tier=data.get("tier", "standard"),
            tags=dict(data.get("tags") or {}),
            capacity=None if (capacity := data.get("capacity", 10)) is None else int(capacity),
            weight=float(data.get("weight", 1.0)),
            position=data.get("position"),
            availability=data.get("availability", "available"),
            hired_at=date.fromisoformat(hired) if isinstance(hired, str) else hired,
            active=bool(data.get("active", True)),
            timezone=data.get("timezone"),
            working_hours=data.get("working_hours"),
            out_of_office=tuple(
                (datetime.fromisoformat(s), datetime.fromisoformat(e)) for s, e in data.get("out_of_office") or ()
            ),
            daily_cap=data.get("daily_cap"),
            weekly_cap=data.get("weekly_cap"),
            returned_at=datetime.fromisoformat(back) if isinstance(back := data.get("returned_at"), str) else None,
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tags"] = dict(self.tags)
        out["hired_at"] = self.hired_at.isoformat() if self.hired_at else None
        out["working_hours"] = dict(self.working_hours) if self.working_hours is not None else None
        out["out_of_office"] = [[s.isoformat(), e.isoformat()] for s, e in self.out_of_office]
        back = out.pop("returned_at")
        if back is not None:
            out["returned_at"] = back.isoformat()
        return out


@dataclass(frozen=True, slots=True)
class Load:
    """What a rep holds and has received in a pool, plus its rotation position.

    Day and week counters carry the day/ISO week they count, so a new day starts from zero without
    any timer. `vpass` is the rep's virtual time in weighted rotation (stride scheduling).
    """

    open: int = 0
    assigned: int = 0
    value: float = 0.0
    premium: int = 0
    day: str | None = None
    day_count: int = 0
    day_value: float = 0.0
    week: str | None = None
    week_count: int = 0
    vpass: float = 0.0
    claimed: int = 0  # open leads it holds because it claimed them from the open pool (holding limit)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Load:
        if not data:
            return cls()
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        # Scalars only, so a shallow copy is exact; asdict() deep-copies and was ~5% of a backfill.
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def counts_on(self, today: str, week: str) -> tuple[int, float, int]:
        """(leads today, value today, leads this week) as of `today`/`week`."""
        day_count, day_value = (self.day_count, self.day_value) if self.day == today else (0, 0.0)
        return day_count, day_value, self.week_count if self.week == week else 0

    def received(self, value: float, premium: bool, today: str, week: str, vpass: float) -> Load:
        day_count, day_value, week_count = self.counts_on(today, week)
        return replace(
            self,
            open=self.open + 1,
            assigned=self.assigned + 1,
            value=self.value + value,
            premium=self.premium + (1 if premium else 0),
            day=today,
            day_count=day_count + 1,
            day_value=day_value + value,
            week=week,
            week_count=week_count + 1,
            vpass=vpass,
        )


@dataclass(frozen=True, slots=True)
class PoolState:
    """Per-pool values: rotation cursor and virtual time, totals that fair shares are measured against."""

    # In the order they joined the pool (state stored before kept them sorted: that order goes on).
    members: tuple[str, ...] = ()
    cursor: str | None = None  # last rep chosen: an id, so roster changes never reset the rotation
    vtime: float = 0.0
    assigned: int = 0
    value: float = 0.0
    premium: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PoolState:
        if not data:
            return cls()
        names = cls.__dataclass_fields__
        values = {k: v for k, v in data.items() if k in names}
        values["members"] = tuple(values.get("members") or ())
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}  # scalars: see Load.to_dict
        out["members"] = list(self.members)
        return out
