"""ingest_deals: validate closed deals and send every one through the lead index (keyed by lead_id)."""

from __future__ import annotations

from typing import Any

import faust

from agents.ingest_leads import origin_of
from schemas.events import DealClosed
from schemas.internal import DealUnrouted
from streams.boundary import guarded_agent, kafka_time
from streams.codecs import dump, parse
from streams.context import Context


async def handle(ctx: Context, event: Any) -> None:
    deal = parse(DealClosed, event.value, max_bytes=ctx.settings.max_payload_bytes)
    # Even a deal naming its pool goes through the index: it may have overtaken its lead's decision.
    unrouted = DealUnrouted(deal=deal, origin=origin_of(event), first_seen_at=kafka_time(event))
    await ctx.topics.lead_events.send(key=deal.lead_id.encode(), value=dump(unrouted))


def register(app: faust.App, ctx: Context) -> Any:
    return guarded_agent(app, ctx, ctx.topics.deals_closed, "ingest_deals", handle)
