"""match_deals: keep the lead index (lead -> pool, owner) and route pool-less deals through it."""

from __future__ import annotations

from typing import Any

import faust

from schemas.internal import LEAD_EVENT, DealArrived, DealUnrouted, LeadIndexed
from streams.boundary import handle_guarded
from streams.codecs import dump, parse_internal
from streams.context import Context
from streams.dlq import send_dead_letter
from streams.errors import UnknownLead


async def forward(ctx: Context, parked: DealUnrouted, pool: str) -> None:
    routed = DealArrived(pool=pool, deal=parked.deal, origin=parked.origin)
    await ctx.topics.pool_events.send(key=pool.encode(), value=dump(routed))


async def handle(ctx: Context, event: Any) -> None:
    ev = parse_internal(LEAD_EVENT, event.value)
    t = ctx.tables
    if isinstance(ev, LeadIndexed):
        t.lead_index[ev.lead_id] = {"pool": ev.pool, "rep_id": ev.rep_id, "decision_id": ev.decision_id}
        waiting = t.parked_deals.get(ev.lead_id)
        if waiting is not None:
            await forward(ctx, DealUnrouted.model_validate(waiting), ev.pool)
            del t.parked_deals[ev.lead_id]
    elif isinstance(ev, DealUnrouted):
        index = t.lead_index.get(ev.deal.lead_id)
        if index is not None:
            await forward(ctx, ev, index["pool"])
        else:
            # The deal may have overtaken its lead's decision: park it until indexed or expired.
            t.parked_deals[ev.deal.lead_id] = ev.model_dump(mode="json")
    else:
        waiting = t.parked_deals.get(ev.lead_id)
        if waiting is None:
            return
        parked = DealUnrouted.model_validate(waiting)
        origin = parked.origin
        where = (origin.topic, origin.partition, origin.offset) if origin else (event.message.topic, -1, -1)
        await send_dead_letter(
            ctx,
            key=ev.lead_id.encode(),
            value=dump(parked.deal),
            origin=where,
            error=UnknownLead("no decision for this lead within unknown_lead_wait_seconds", field="lead_id"),
            agent="match_deals",
        )
        del t.parked_deals[ev.lead_id]


def register(app: faust.App, ctx: Context) -> Any:
    @app.agent(ctx.topics.lead_events, name="match_deals")
    async def match_deals(stream: Any) -> Any:
        async for event in stream.events():
            yield await handle_guarded(ctx, "match_deals", event, handle)

    return match_deals
