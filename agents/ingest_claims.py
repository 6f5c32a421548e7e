"""ingest_claims: validate a rep's claim (it goes through the lead index, match_deals), and answer one."""

from __future__ import annotations

from datetime import datetime

from agents.ingest_leads import origin_of
from schemas.events import AssignmentDecision, ClaimReason, ClaimResult, LeadClaim
from schemas.internal import ClaimUnrouted
from streams.codecs import dump, parse
from streams.runtime.context import Context
from streams.runtime.loop import Event
from streams.settings import Settings


def unrouted(settings: Settings, event: Event) -> ClaimUnrouted:
    claim = parse(LeadClaim, event.value, max_bytes=settings.max_payload_bytes)
    return ClaimUnrouted(claim=claim, origin=origin_of(event))


async def answer(
    ctx: Context,
    claim: LeadClaim,
    pool: str | None,
    reason: ClaimReason,
    detail: str,
    now: datetime,
    decision: AssignmentDecision | None = None,
) -> None:
    """The one answer to a claim, on the claim-results topic, in the same transaction as its effects."""
    result = ClaimResult(
        claim_id=claim.claim_id,
        lead_id=claim.lead_id,
        rep_id=claim.rep_id,
        pool=pool,
        accepted=decision is not None,
        reason=reason,
        detail=detail,
        decision_id=decision.decision_id if decision else None,
        attempt=decision.attempt if decision else None,
        answered_at=now,
    )
    await ctx.topics.claim_results.send(key=claim.lead_id.encode(), value=dump(result))
    ctx.metrics.record_claim(reason)
