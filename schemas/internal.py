"""Internal topic contracts: normalized events re-keyed by pool or by lead (worker-to-worker only)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

from schemas.events import DealClosed, EventTime, Id, LeadActivity, LeadClaim, LeadCreated, PoolId, RepUpdated


class _Internal(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Origin(_Internal):
    """Where an event entered the system, for logs and the DLQ (topic[partition]@offset)."""

    topic: str
    partition: int
    offset: int


DedupeKey = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]  # 128 bits of an HMAC, hex


class LeadArrived(_Internal):
    kind: Literal["lead"] = "lead"
    pool: PoolId
    lead: LeadCreated  # contact is excluded from dumps, so it never reaches this topic
    received_at: EventTime
    origin: Origin | None = None
    # Keyed hashes of the contact's normalised e-mail, phone and company domain (routing/dedupe.py), made
    # where contact is seen; empty without a dedupe secret and in records of older workers. Left out of
    # the record when empty, so a worker without dedupe writes what an older worker can still read.
    dedupe_keys: dict[Literal["email", "phone", "domain"], DedupeKey] = Field(
        default_factory=dict, exclude_if=lambda keys: not keys
    )
    # A lead moved here from another pool by an update (docs/lifecycle.md): it is decided as this attempt,
    # its previous holders excluded. Left out of the record when unset, so a first arrival is written as
    # before these fields existed and a worker of the version before (extra="forbid") still reads it.
    attempt: Annotated[int, Field(ge=2)] | None = Field(None, exclude_if=lambda v: v is None)
    previous_holders: Annotated[list[Id], Field(max_length=64)] = Field(
        default_factory=list, exclude_if=lambda v: not v
    )
    trigger: Literal["moved"] | None = Field(None, exclude_if=lambda v: v is None)
    moved_from: PoolId | None = Field(None, exclude_if=lambda v: v is None)


class LeadUpdated(_Internal):
    """A new version of a lead the index knows (`leads.updated`). In the pool log of the pool that holds it
    (`pool`), which keeps it or moves it to `to_pool` (the pool the territory rules give the new version).
    On the lead-events topic, before the index is read, `pool` is the resolved pool too."""

    kind: Literal["update"] = "update"
    pool: PoolId
    to_pool: PoolId
    lead: LeadCreated  # contact excluded from dumps, as in LeadArrived
    received_at: EventTime
    origin: Origin | None = None
    # As in LeadArrived: an update of a lead never seen is its first sight, and dedupes like a new lead.
    dedupe_keys: dict[Literal["email", "phone", "domain"], DedupeKey] = Field(
        default_factory=dict, exclude_if=lambda keys: not keys
    )


class RepChanged(_Internal):
    kind: Literal["rep"] = "rep"
    pool: PoolId
    rep_id: Id
    profile: RepUpdated | None  # None: the rep left this pool (or the roster deleted it)


class DealArrived(_Internal):
    kind: Literal["deal"] = "deal"
    pool: PoolId
    deal: DealClosed
    origin: Origin | None = None


class ActivityArrived(_Internal):
    """A lead's activity, in the pool log of the pool that holds the lead (found through the lead index)."""

    kind: Literal["activity"] = "activity"
    pool: PoolId
    activity: LeadActivity
    origin: Origin | None = None


class ClaimArrived(_Internal):
    """A rep's claim, in the pool log of the pool that holds the lead."""

    kind: Literal["claim"] = "claim"
    pool: PoolId
    claim: LeadClaim
    origin: Origin | None = None


class PolicyChanged(_Internal):
    """A validated policy for one pool (already checked at ingress; route checks its version)."""

    kind: Literal["policy"] = "policy"
    pool: PoolId
    policy: dict[str, Any] | None  # None: the pool's policy was deleted, the default applies again
    origin: Origin | None = None


class LedgerExpired(_Internal):
    """Housekeeping: ledger entries past retention, removed inside the pool's own log order."""

    kind: Literal["expire"] = "expire"
    pool: PoolId
    lead_ids: Annotated[list[Id], Field(max_length=1000)]


PoolEvent = Annotated[
    LeadArrived
    | LeadUpdated
    | RepChanged
    | DealArrived
    | ActivityArrived
    | ClaimArrived
    | PolicyChanged
    | LedgerExpired,
    Field(discriminator="kind"),
]
POOL_EVENT = TypeAdapter(PoolEvent)


class LeadIndexed(_Internal):
    """A lead's pool (and owner), so deals that name only a lead_id can find their pool: written by 0.1
    workers after a decision, and by `route` when an update moved the lead to another pool."""

    kind: Literal["indexed"] = "indexed"
    lead_id: Id
    pool: PoolId
    rep_id: Id | None
    decision_id: str


class DealUnrouted(_Internal):
    """A deal without a pool, waiting to be matched to its lead through the index."""

    kind: Literal["deal"] = "deal"
    deal: DealClosed
    origin: Origin | None = None
    first_seen_at: EventTime


class ActivityUnrouted(_Internal):
    """A lead's activity on its way to the lead index, which knows the lead's pool."""

    kind: Literal["activity"] = "activity"
    activity: LeadActivity
    origin: Origin | None = None
    first_seen_at: EventTime


class ClaimUnrouted(_Internal):
    """A claim on its way to the lead index, which knows the lead's pool."""

    kind: Literal["claim"] = "claim"
    claim: LeadClaim
    origin: Origin | None = None


class PendingExpired(_Internal):
    """Housekeeping: parked deals waited too long for their lead (re-checked by the owner)."""

    kind: Literal["pending_expired"] = "pending_expired"
    lead_id: Id


class IndexExpired(_Internal):
    """Housekeeping: an index entry older than its retention (re-checked by the owner)."""

    kind: Literal["index_expired"] = "index_expired"
    lead_ids: Annotated[list[Id], Field(max_length=1000)]


LeadEvent = Annotated[
    LeadArrived
    | LeadUpdated
    | LeadIndexed
    | DealUnrouted
    | ActivityUnrouted
    | ClaimUnrouted
    | PendingExpired
    | IndexExpired,
    Field(discriminator="kind"),
]
LEAD_EVENT = TypeAdapter(LeadEvent)
