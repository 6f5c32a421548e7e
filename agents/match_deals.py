"""match_deals: keep the lead index (lead -> pool, owner) and route every lead and deal through it.

Leads and deals are keyed by lead_id like the index, so a lead, its deals and its index entry are in
one ordered log. A lead's first arrival fixes its pool in the index; a re-send that resolves to another
pool goes to the first one, where it is a duplicate (one lead, one effective decision, one load), until
explicit re-routing exists. A deal that overtakes its lead is parked (a few per lead) until the lead
arrives; past `unknown_lead_wait_seconds` it goes to its named pool if it names pool and rep (a lead decided
outside leadrelay still teaches performance), else to the DLQ as unknown_lead.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import faust

from schemas.internal import (
    LEAD_EVENT,
    DealArrived,
    DealUnrouted,
    IndexExpired,
    LeadArrived,
    LeadIndexed,
    PendingExpired,
)
from streams import logs
from streams.boundary import guarded_agent
from streams.codecs import dump, parse_internal
from streams.context import Context
from streams.dlq import send_dead_letter
from streams.errors import UnknownLead
from streams.fence import barrier

log = logging.getLogger("leadrelay.match_deals")
MAX_PARKED = 10


async def forward(ctx: Context, deal: DealUnrouted, pool: str) -> None:
    routed = DealArrived(pool=pool, deal=deal.deal, origin=deal.origin)
    await ctx.topics.pool_events.send(key=pool.encode(), value=dump(routed))


async def give_up(ctx: Context, deal: DealUnrouted, lead_id: str, error: UnknownLead) -> None:
    if deal.deal.pool and deal.deal.rep_id:
        await forward(ctx, deal, deal.deal.pool)
        return
    origin = deal.origin
    await send_dead_letter(
        ctx,
        key=lead_id.encode(),
        value=dump(deal.deal),
        origin=(origin.topic, origin.partition, origin.offset) if origin else (ctx.settings.topic_deals_closed, -1, -1),
        error=error,
        agent="match_deals",
    )


async def on_lead(ctx: Context, ev: LeadArrived, now: datetime) -> None:
    t, lead_id = ctx.tables, ev.lead.lead_id
    index = t.lead_index.get(lead_id)
    if index is None:  # first sight: the pool is fixed now, before the decision comes back
        t.lead_index[lead_id] = {"pool": ev.pool, "rep_id": None, "decision_id": None, "indexed_at": now.isoformat()}
    elif index["pool"] != ev.pool:
        log.info("re-sent lead resolves to pool %s; its first pool %s stands", ev.pool, index["pool"])
        ev = ev.model_copy(update={"pool": index["pool"]})
    await ctx.topics.pool_events.send(key=ev.pool.encode(), value=dump(ev))
    waiting = t.parked_deals.get(lead_id)
    if waiting:  # deals that overtook their lead follow it into the pool log, right behind it
        for parked in waiting:
            await forward(ctx, DealUnrouted.model_validate(parked), ev.pool)
        await barrier(ctx)
        del t.parked_deals[lead_id]


async def on_indexed(ctx: Context, ev: LeadIndexed, now: datetime) -> None:
    t = ctx.tables
    t.lead_index[ev.lead_id] = {
        "pool": ev.pool,
        "rep_id": ev.rep_id,
        "decision_id": ev.decision_id,
        "indexed_at": now.isoformat(),
    }
    waiting = t.parked_deals.get(ev.lead_id)
    if waiting:
        for parked in waiting:
            await forward(ctx, DealUnrouted.model_validate(parked), ev.pool)
        await barrier(ctx)  # no stale write after a stall in the sends above (streams/fence.py)
        del t.parked_deals[ev.lead_id]


async def on_deal(ctx: Context, ev: DealUnrouted, now: datetime) -> None:
    t, lead_id = ctx.tables, ev.deal.lead_id
    index = t.lead_index.get(lead_id)
    if index is not None:
        await forward(ctx, ev, index["pool"])
        return
    parked = list(t.parked_deals.get(lead_id) or [])
    if len(parked) >= MAX_PARKED:
        await give_up(ctx, ev, lead_id, UnknownLead(f"more than {MAX_PARKED} deals wait for this lead"))
        return
    # The wait is measured on the wall clock from parking, so a worker catching up on lag waits too.
    parked.append(ev.model_copy(update={"first_seen_at": now}).model_dump(mode="json"))
    t.parked_deals[lead_id] = parked


async def on_pending_expired(ctx: Context, ev: PendingExpired, now: datetime) -> None:
    t = ctx.tables
    wait = timedelta(seconds=ctx.settings.unknown_lead_wait_seconds)
    parked = [DealUnrouted.model_validate(p) for p in t.parked_deals.get(ev.lead_id) or []]
    keep = [p for p in parked if p.first_seen_at + wait >= now]
    for deal in (p for p in parked if p.first_seen_at + wait < now):
        await give_up(ctx, deal, ev.lead_id, UnknownLead("no decision for this lead within the wait", field="lead_id"))
    if len(keep) != len(parked):
        await barrier(ctx)
        if keep:
            t.parked_deals[ev.lead_id] = [p.model_dump(mode="json") for p in keep]
        else:
            del t.parked_deals[ev.lead_id]


def on_index_expired(ctx: Context, ev: IndexExpired, now: datetime) -> None:
    horizon = now - timedelta(days=ctx.settings.index_retention_days)
    for lead_id in ev.lead_ids:
        entry = ctx.tables.lead_index.get(lead_id)
        indexed_at = entry.get("indexed_at") if entry else None
        if indexed_at and datetime.fromisoformat(indexed_at) < horizon:
            del ctx.tables.lead_index[lead_id]


async def handle_value(ctx: Context, raw: bytes | None) -> None:
    ev = parse_internal(LEAD_EVENT, raw)
    now = datetime.now(UTC)
    if isinstance(ev, LeadArrived):
        with logs.bind(lead_id=ev.lead.lead_id):
            await on_lead(ctx, ev, now)
    elif isinstance(ev, LeadIndexed):
        await on_indexed(ctx, ev, now)
    elif isinstance(ev, DealUnrouted):
        await on_deal(ctx, ev, now)
    elif isinstance(ev, PendingExpired):
        await on_pending_expired(ctx, ev, now)
    else:
        on_index_expired(ctx, ev, now)


def register(app: faust.App, ctx: Context) -> Any:
    async def handle(ctx: Context, event: Any) -> None:
        await handle_value(ctx, event.value)

    return guarded_agent(app, ctx, ctx.topics.lead_events, "match_deals", handle, writes=(ctx.tables.match,))
