"""State transitions of a pool's lead ledger: assign once, release on close, expire after retention."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from routing import performance
from routing.decide import decide
from routing.model import Load, PoolView
from routing.policy import Policy
from schemas.events import AssignmentDecision, DealClosed, LeadCreated

OPEN, UNASSIGNED = "open", "unassigned"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One lead in one pool. Holds the decision itself so a redelivered lead re-emits it unchanged."""

    decision: Mapping[str, Any]
    status: str  # open | unassigned | won | lost
    rep_id: str | None
    value: float = 0.0
    closed_at: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LedgerEntry:
        return cls(data["decision"], data["status"], data.get("rep_id"), data.get("value", 0.0), data.get("closed_at"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": dict(self.decision),
            "status": self.status,
            "rep_id": self.rep_id,
            "value": self.value,
            "closed_at": self.closed_at,
        }

    @property
    def closed(self) -> bool:
        return self.status not in (OPEN, UNASSIGNED)


@dataclass(frozen=True, slots=True)
class Assigned:
    decision: AssignmentDecision
    entry: LedgerEntry
    load: Load | None  # the chosen rep's new load; None when nothing changes
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Closed:
    entry: LedgerEntry | None  # None: the deal matched no ledger entry
    released: tuple[str, Load] | None  # rep whose open count went down, and the new load
    credited: str | None  # rep whose performance the deal counts for
    buckets: dict[str, list[float]] | None  # that rep's new performance buckets
    duplicate: bool


def assign(
    lead: LeadCreated,
    view: PoolView,
    policy: Policy,
    entry: LedgerEntry | None,
    *,
    now: datetime,
) -> Assigned:
    """Decide a lead once. A lead already in the ledger gets its stored decision back, load untouched."""
    if entry is not None:
        return Assigned(AssignmentDecision.model_validate(entry.decision), entry, None, duplicate=True)
    decision = decide(lead, view, policy, now=now)
    value = lead.estimated_value or 0.0
    new_load = None
    if decision.rep_id is not None:
        old = view.load_of(decision.rep_id)
        new_load = Load(old.open + 1, old.assigned + 1, old.value + value)
    new_entry = LedgerEntry(
        decision=decision.model_dump(mode="json"),
        status=OPEN if decision.rep_id else UNASSIGNED,
        rep_id=decision.rep_id,
        value=value,
    )
    return Assigned(decision, new_entry, new_load, duplicate=False)


def close(
    deal: DealClosed,
    entry: LedgerEntry | None,
    load: Load | None,
    buckets: Mapping[str, list[float]] | None,
) -> Closed:
    """Apply a closed deal: release the holder's load once, and count the outcome for the credited rep."""
    if entry is not None and entry.closed:
        return Closed(entry, None, None, None, duplicate=True)
    credited = deal.rep_id or (entry.rep_id if entry else None)
    new_buckets = performance.record(buckets or {}, deal.outcome, deal.amount, deal.closed_at) if credited else None
    if entry is None:
        return Closed(None, None, credited, new_buckets, duplicate=False)
    released = None
    if entry.status == OPEN and entry.rep_id is not None:
        old = load or Load()
        released = (entry.rep_id, replace(old, open=max(0, old.open - 1)))
    new_entry = replace(entry, status=deal.outcome, closed_at=deal.closed_at.isoformat())
    return Closed(new_entry, released, credited, new_buckets, duplicate=False)


def expired(entry: LedgerEntry, *, now: datetime, retention: timedelta) -> bool:
    """Closed entries leave the ledger after the retention; open ones stay (they hold load)."""
    if not entry.closed or entry.closed_at is None:
        return False
    return datetime.fromisoformat(entry.closed_at) + retention < now


def with_member(members: list[str], rep_id: str, present: bool) -> list[str]:
    """The pool's sorted member list after a roster change."""
    others = [m for m in members if m != rep_id]
    return sorted([*others, rep_id]) if present else others
