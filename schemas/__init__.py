"""Event contracts of leadrelay: pydantic v2 models, orjson on the wire."""

from schemas.events import (
    SCHEMA_VERSION,
    AssignmentDecision,
    ClaimResult,
    Contact,
    DealClosed,
    Explanation,
    LeadActivity,
    LeadClaim,
    LeadCreated,
    RepUpdated,
    ScoredRep,
    ShadowDecision,
)

__all__ = [
    "SCHEMA_VERSION",
    "AssignmentDecision",
    "ClaimResult",
    "Contact",
    "DealClosed",
    "Explanation",
    "LeadActivity",
    "LeadClaim",
    "LeadCreated",
    "RepUpdated",
    "ScoredRep",
    "ShadowDecision",
]
