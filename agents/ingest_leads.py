"""ingest_leads: validate raw leads, resolve their pool, forward them keyed by lead to the lead log.

The lead log (match_deals) knows which pool a lead was first sent to and keeps it there, so a lead
re-sent with attributes that now resolve to another pool is a duplicate of its first decision rather
than a second decision in the other pool under the same decision id (whatever key the producer used).
"""

from __future__ import annotations

from typing import Any

import faust

from routing.territory import resolve_pool
from schemas.events import LeadCreated
from schemas.internal import LeadArrived, Origin
from streams.boundary import guarded_agent, kafka_time
from streams.codecs import dump, parse
from streams.context import Context


def origin_of(event: Any) -> Origin:
    msg = event.message
    return Origin(topic=msg.topic, partition=msg.partition, offset=msg.offset)


async def handle(ctx: Context, event: Any) -> None:
    lead = parse(LeadCreated, event.value, max_bytes=ctx.settings.max_payload_bytes)
    pool, _ = resolve_pool(lead, ctx.settings.territory_rules, ctx.settings.default_pool)
    arrived = LeadArrived(pool=pool, lead=lead, received_at=kafka_time(event), origin=origin_of(event))
    await ctx.topics.lead_events.send(key=lead.lead_id.encode(), value=dump(arrived))


def register(app: faust.App, ctx: Context) -> Any:
    return guarded_agent(app, ctx, ctx.topics.leads_new, "ingest_leads", handle)
