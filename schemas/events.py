"""Public topic contracts: what upstream systems publish and what downstream CRMs read."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

SCHEMA_VERSION: Literal[1] = 1

# Ids travel as Kafka keys and table-key parts: printable, bounded, no separators we use ("|").
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$")]
PoolId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")]
# pattern \S: a no-op after stripping, it tells JSON Schema readers that blank is not a label.
Label = Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True, pattern=r"\S")]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._:-]*$")]
Text = Annotated[str, StringConstraints(max_length=256)]
AttrValue = Annotated[str, StringConstraints(max_length=256)] | int | float | bool


def _utc(value: Any) -> Any:
    """Naive timestamps are taken as UTC so event time never depends on the worker's zone."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _tags_as_levels(value: Any) -> Any:
    """Tags may be sent as a plain list of names (level 1 each) or as {tag: level}."""
    if isinstance(value, list) and all(isinstance(tag, str) for tag in value):
        return dict.fromkeys(value, 1)
    return value  # anything else is left for validation to refuse


EventTime = Annotated[datetime, AfterValidator(_utc)]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class Contact(_Event):
    """Personal data of the lead: accepted on input, never stored, logged or emitted."""

    name: Text | None = Field(None, repr=False)
    email: Text | None = Field(None, repr=False)
    phone: Text | None = Field(None, repr=False)


class LeadCreated(_Event):
    """`leads.new`: a lead that needs an owner."""

    schema_version: Literal[1] = SCHEMA_VERSION
    lead_id: Id
    created_at: EventTime
    pool: PoolId | None = Field(None, description="Explicit routing pool; else territory rules decide")
    source: Label | None = None
    region: Label | None = None
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] | None = None
    industry: Label | None = None
    company_size: Annotated[int, Field(ge=0, le=10_000_000)] | None = None
    product: Label | None = None
    language: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")] | None = None
    estimated_value: Annotated[float, Field(ge=0, le=1e12)] | None = None
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = None
    attributes: Annotated[dict[Label, AttrValue], Field(max_length=50)] = Field(default_factory=dict)
    # exclude=True: dumps (internal events, tables, logs) never carry contact data.
    contact: Contact | None = Field(None, exclude=True, repr=False)

    @field_validator("estimated_value")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class DealClosed(_Event):
    """`deals.closed`: the outcome of a lead, from the CRM."""

    schema_version: Literal[1] = SCHEMA_VERSION
    lead_id: Id
    outcome: Literal["won", "lost"]
    amount: Annotated[float, Field(ge=0, le=1e12)] = 0.0
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = None
    closed_at: EventTime
    rep_id: Id | None = None
    pool: PoolId | None = None


ActivityKind = Literal[
    "first_contact", "follow_up", "status_change", "disqualified", "converted", "duplicate", "cancelled"
]
# Kinds that end a lead's life without a deal: its rep's load is released (routing/lifecycle.py).
CLOSING_KINDS: frozenset[str] = frozenset({"disqualified", "duplicate", "cancelled"})


class LeadActivity(_Event):
    """`leads.activity` (key = lead_id): what a rep did with a lead, from the CRM. Touches the lead
    (stops its follow-up timer); disqualified, duplicate and cancelled close it without a deal."""

    schema_version: Literal[1] = SCHEMA_VERSION
    lead_id: Id
    pool: PoolId | None = Field(None, description="The lead's pool, if known; the lead index decides")
    kind: ActivityKind
    rep_id: Id | None = Field(None, description="Who did it; None: the lead's current holder")
    occurred_at: EventTime
    status: Label | None = Field(None, description="The CRM's own status name (status_change); no personal data")
    note: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        None, description="A short reason code or remark; never personal data (it is not stored)", exclude=True
    )


class LeadClaim(_Event):
    """`leads.claims` (key = lead_id): a rep asks for a lead of the open pool. The first valid claim in the
    pool's log wins; every claim is answered once on `leads.claim-results`."""

    schema_version: Literal[1] = SCHEMA_VERSION
    claim_id: Id = Field(description="Chosen by the claimant; the answer carries it back")
    lead_id: Id
    rep_id: Id
    pool: PoolId | None = Field(None, description="Informational: the lead index decides the pool")
    requested_at: EventTime


ClaimReason = Literal[
    "claimed", "unknown_lead", "not_claimable", "not_in_pool", "not_eligible", "holding_limit", "cooldown"
]


class ClaimResult(_Event):
    """`leads.claim-results` (key = lead_id): the one answer to a claim."""

    schema_version: Literal[1] = SCHEMA_VERSION
    claim_id: Id
    lead_id: Id
    rep_id: Id
    pool: PoolId | None = Field(description="The lead's pool; null when the lead is unknown")
    accepted: bool
    reason: ClaimReason = Field(description="claimed, or why not")
    detail: str = Field("", description="One human-readable line")
    decision_id: str | None = Field(description="The decision that gave the lead to the claimant, if accepted")
    attempt: int | None = Field(description="That decision's attempt")
    answered_at: EventTime = Field(description="Log time of the answer")


Level = Annotated[int, Field(ge=1, le=5)]
TagLevels = Annotated[dict[Tag, Level], Field(max_length=64)]
TagList = Annotated[list[Tag], Field(max_length=64)]  # accepted on input: each tag at level 1
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Shift = Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-4]):[0-5][0-9]$")]


class Absence(_Event):
    """An out-of-office window (start inclusive, end exclusive)."""

    start: EventTime
    end: EventTime


class RepUpdated(_Event):
    """`reps.roster` (compacted, key = rep_id): the full current profile of one rep."""

    schema_version: Literal[1] = SCHEMA_VERSION
    rep_id: Id
    pools: Annotated[list[PoolId], Field(max_length=32)]
    tier: Tag = "standard"
    tags: Annotated[TagLevels, BeforeValidator(_tags_as_levels, json_schema_input_type=TagLevels | TagList)] = Field(
        default_factory=dict
    )
    capacity: Annotated[int, Field(ge=0, le=100_000)] | None = Field(
        10, description="Max open leads, in each pool; null = unlimited"
    )
    pool_capacity: dict[PoolId, Annotated[int, Field(ge=0, le=100_000)] | None] = Field(
        default_factory=dict,
        description="Per-pool capacity overriding `capacity` (split a rep across pools); null = unlimited",
    )
    weight: Annotated[float, Field(gt=0, le=1000)] = 1.0
    position: Annotated[int, Field(ge=0, le=1_000_000)] | None = Field(
        None, description="Place in the rotation order of its pools, lower first; None = after those, in join order"
    )
    availability: Literal["available", "away", "offline"] = "available"
    hired_at: date | None = None
    active: bool = True
    timezone: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        None, description="IANA zone of working_hours, e.g. Europe/Berlin"
    )
    working_hours: dict[Weekday, Annotated[list[Shift], Field(max_length=4)]] | None = Field(
        None, description="Shifts per weekday, e.g. {mon: ['09:00-17:00']}; None = always on shift"
    )
    out_of_office: Annotated[list[Absence], Field(max_length=16)] = Field(default_factory=list)
    daily_cap: Annotated[int, Field(ge=0)] | None = Field(None, description="Max new leads per day (overrides policy)")
    weekly_cap: Annotated[int, Field(ge=0)] | None = Field(
        None, description="Max new leads per week (overrides policy)"
    )
    updated_at: EventTime | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}") from None
        return value


class ScoredRep(_Event):
    """A rep as the policy saw it: total score and the parts it is made of."""

    rep_id: Id
    score: float
    components: dict[str, float] = Field(default_factory=dict, description="Scorer -> value in [0, 1]")
    facts: dict[str, float] = Field(default_factory=dict, description="Raw inputs: open, capacity, win rate...")


class Explanation(_Event):
    """Why this rep, and who else was considered."""

    strategy: str
    summary: str
    weights: dict[str, float] = Field(default_factory=dict, description="Scorer weights of the strategy")
    value_tier: str | None = None
    rule: str | None = Field(None, description="The rule entry that chose the strategy, if any")
    growth_channel: bool = False
    relaxed: list[str] = Field(default_factory=list, description="Fallback steps applied, in order")
    chosen: ScoredRep | None = None
    runners_up: list[ScoredRep] = Field(default_factory=list)
    eligible: int = 0
    excluded: dict[str, int] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


class ShadowDecision(_Event):
    """What a shadow strategy would have done, recorded next to the real decision, never acted on."""

    strategy: str
    rep_id: Id | None
    score: float | None = None


Reason = Literal["assigned", "no_eligible_rep", "empty_pool", "sent_to_claim_pool"]


class AssignmentDecision(_Event):
    """`leads.assignments` (key = lead_id): one decision per lead and attempt."""

    schema_version: Literal[1] = SCHEMA_VERSION
    decision_id: str
    lead_id: Id
    pool: PoolId
    rep_id: Id | None
    reason: Reason
    attempt: Annotated[int, Field(ge=1)] = 1
    policy_id: str
    policy_version: int
    variant: str | None = Field(None, description="Experiment variant id, when the lead was in a trial")
    experiment: str | None = None
    explanation: Explanation
    shadow: list[ShadowDecision] = Field(default_factory=list)
    lead_created_at: EventTime
    decided_at: EventTime = Field(description="Log time of the decision; for a timer's decision, when the timer fired")
    trigger: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z_]*$", max_length=32)] | None = Field(
        None,
        description="What made this attempt: null for a lead's first decision; sla_expired: its follow-up"
        " timer fired (a reassignment, or a return to the open pool); moved: an update moved the lead to this"
        " pool; updated: an update decided it again in its pool (docs/lifecycle.md lists them all). Consumers"
        " must accept values they do not know.",
    )
    previous_holders: Annotated[list[Id], Field(max_length=64)] | None = Field(
        None, description="Reps that held the lead before this attempt (excluded from it), oldest first"
    )
    waited_seconds: Annotated[float, Field(ge=0)] | None = Field(
        None, description="capacity_freed and max_wait: how long the lead waited for capacity before this attempt"
    )
