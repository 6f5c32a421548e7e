"""match_deals: the leads stage. Keeps the lead index (lead -> pool, owner) and sends every lead, deal
and activity on to its pool's log.

Leads and deals are keyed by lead_id like the index, so a lead, its deals and its index entry are in one
ordered log. A lead's first arrival fixes its pool in the index; a re-send on leads.new that resolves to
another pool goes to the first one, where it is a duplicate (one lead, one effective decision, one load:
a producer's retry must never re-route). A new version on leads.updated goes to the indexed pool's log
with the pool the rules give it now (`to_pool`); route keeps, re-decides or moves it, and moves the index
itself (LeadIndexed) once the new pool's log has the lead. An update for a lead the index does not know
is the lead's first sight (an upsert: a later leads.new for it is a duplicate).

A deal that overtakes its lead is parked (a few per lead) until the lead arrives; past
`unknown_lead_wait_seconds` it goes to its named pool if it names pool and rep (a lead decided outside
leadrelay still teaches performance), else to the DLQ as unknown_lead. Activity (leads.activity) takes
the same path: parked until its lead arrives, dead-lettered as unknown_lead after the same wait.

A lead or deal consumed on a partition other than its lead's home partition (a producer that did not
key by lead_id) is validated and passed on to the home partition of the internal lead-events topic,
which this stage also reads: the index stays correct whatever key the producer used.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from agents import ingest_activity, ingest_claims, ingest_deals, ingest_leads
from schemas.internal import (
    LEAD_EVENT,
    ActivityArrived,
    ActivityUnrouted,
    ClaimArrived,
    ClaimUnrouted,
    DealArrived,
    DealUnrouted,
    LeadArrived,
    LeadIndexed,
    LeadUpdated,
)
from streams.codecs import dump, parse_internal
from streams.errors import UnknownLead
from streams.kafka.topics import home_partition, lead_events_topic
from streams.runtime.boundary import send_dead_letter
from streams.runtime.context import Context, View
from streams.runtime.loop import Event
from streams.settings import Settings
from streams.web import logs

log = logging.getLogger("leadrelay.match_deals")
MAX_PARKED = 10
P = TypeVar("P", DealUnrouted, ActivityUnrouted)  # what waits for its lead's decision
SWEEP_ROWS = 2000  # index rows looked at per housekeeping step and task


def handler(settings: Settings) -> Callable[[Context, Event], Awaitable[None]]:
    lead_topic = lead_events_topic(settings)

    async def handle(ctx: Context, event: Event) -> None:
        msg = event.message
        if msg.topic == lead_topic:  # already validated, on its lead's partition
            await on_lead_event(ctx, parse_internal(LEAD_EVENT, msg.value))
            return
        ev: LeadArrived | LeadUpdated | DealUnrouted | ActivityUnrouted | ClaimUnrouted
        if msg.topic == settings.topic_leads_new:
            ev = ingest_leads.arrived(settings, event)
            lead_id = ev.lead.lead_id
        elif msg.topic == settings.topic_leads_updated:
            ev = ingest_leads.updated(settings, event)
            lead_id = ev.lead.lead_id
        elif msg.topic == settings.topic_lead_activity:
            ev = ingest_activity.unrouted(settings, event)
            lead_id = ev.activity.lead_id
        elif msg.topic == settings.topic_claims:
            ev = ingest_claims.unrouted(settings, event)
            lead_id = ev.claim.lead_id
        else:
            ev = ingest_deals.unrouted(settings, event)
            lead_id = ev.deal.lead_id
        home = home_partition(lead_id, settings.partitions)
        if home != msg.partition:  # to the lead's own partition, validated, with its origin and time
            await ctx.topics.lead_events.send(
                key=lead_id.encode(), value=dump(ev), timestamp_ms=int(msg.timestamp * 1000), partition=home
            )
            return
        await on_lead_event(ctx, ev)

    return handle


async def on_lead_event(ctx: Context, ev: object) -> None:
    """The lead stage keeps time on the wall clock: it decides nothing, and its times measure waits and
    retention in this worker's own terms."""
    now = datetime.now(UTC)
    if isinstance(ev, LeadArrived):
        with logs.bind(lead_id=ev.lead.lead_id):
            # index retention counts from first sight here: a backfill of old leads must not expire at once
            await on_lead(ctx, ev, now)
    elif isinstance(ev, LeadUpdated):
        with logs.bind(lead_id=ev.lead.lead_id):
            await on_update(ctx, ev, now)
    elif isinstance(ev, DealUnrouted):
        with logs.bind(lead_id=ev.deal.lead_id):
            await on_deal(ctx, ev, now)
    elif isinstance(ev, ActivityUnrouted):
        with logs.bind(lead_id=ev.activity.lead_id):
            await on_activity(ctx, ev, now)
    elif isinstance(ev, ClaimUnrouted):
        with logs.bind(lead_id=ev.claim.lead_id):
            await on_claim(ctx, ev, now)
    elif isinstance(ev, LeadIndexed):  # written by 0.1 workers (schemas/internal.py)
        on_indexed(ctx, ev, now)
    else:
        log.debug("%s request of a 0.1 worker: housekeeping here does it", getattr(ev, "kind", "?"))


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
    if index is None:  # first sight: the pool is fixed now
        t.lead_index[lead_id] = {"pool": ev.pool, "rep_id": None, "decision_id": None, "indexed_at": now.isoformat()}
    elif index["pool"] != ev.pool:
        log.info("re-sent lead resolves to pool %s; its first pool %s stands", ev.pool, index["pool"])
        ev = ev.model_copy(update={"pool": index["pool"]})
    waiting = t.parked_deals.get(lead_id)
    if waiting:
        del t.parked_deals[lead_id]
    acts = t.parked_activity.get(lead_id)
    if acts:
        del t.parked_activity[lead_id]
    await ctx.topics.pool_events.send(key=ev.pool.encode(), value=dump(ev))
    for act in acts or ():  # activity and deals that overtook their lead follow it into the pool log
        await forward_activity(ctx, ActivityUnrouted.model_validate(act), ev.pool)
    for parked in waiting or ():
        await forward(ctx, DealUnrouted.model_validate(parked), ev.pool)


async def on_update(ctx: Context, ev: LeadUpdated, now: datetime) -> None:
    """A new version of a lead goes to the pool the index names, which decides what it means (the index
    moves only when that pool has sent the lead on). Unknown here, it is the lead's first sight."""
    index = ctx.tables.lead_index.get(ev.lead.lead_id)
    if index is None:
        first = LeadArrived(
            pool=ev.to_pool, lead=ev.lead, received_at=ev.received_at, origin=ev.origin, dedupe_keys=ev.dedupe_keys
        )
        await on_lead(ctx, first, now)
        return
    held = ev.model_copy(update={"pool": index["pool"]})
    await ctx.topics.pool_events.send(key=held.pool.encode(), value=dump(held))


def on_indexed(ctx: Context, ev: LeadIndexed, now: datetime) -> None:
    """The lead's pool moved (route, after an update moved the lead), or a 0.1 worker's index update (it
    indexed after the decision): applied, so records for the lead find its pool. Deals a 0.1 worker
    parked are forwarded by the next lead or given up by housekeeping."""
    ctx.tables.lead_index[ev.lead_id] = {
        "pool": ev.pool,
        "rep_id": ev.rep_id,
        "decision_id": ev.decision_id,
        "indexed_at": now.isoformat(),
    }


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
    parked.append(ev.model_copy(update={"first_seen_at": now}).model_dump(mode="json"))
    t.parked_deals[lead_id] = parked


async def forward_activity(ctx: Context, act: ActivityUnrouted, pool: str) -> None:
    routed = ActivityArrived(pool=pool, activity=act.activity, origin=act.origin)
    await ctx.topics.pool_events.send(key=pool.encode(), value=dump(routed))


async def give_up_activity(ctx: Context, act: ActivityUnrouted, error: UnknownLead) -> None:
    """Activity whose lead never arrived: dead-lettered with the origin of its leads.activity record."""
    origin = act.origin
    await send_dead_letter(
        ctx,
        key=act.activity.lead_id.encode(),
        value=dump(act.activity),
        origin=(origin.topic, origin.partition, origin.offset)
        if origin
        else (ctx.settings.topic_lead_activity, -1, -1),
        error=error,
        agent="match_deals",
    )


async def on_activity(ctx: Context, ev: ActivityUnrouted, now: datetime) -> None:
    """An indexed lead's activity goes to its pool's log; any other waits for its lead (parked)."""
    t, lead_id = ctx.tables, ev.activity.lead_id
    index = t.lead_index.get(lead_id)
    if index is not None:
        await forward_activity(ctx, ev, index["pool"])
        return
    parked = list(t.parked_activity.get(lead_id) or [])
    if len(parked) >= MAX_PARKED:
        await give_up_activity(ctx, ev, UnknownLead(f"more than {MAX_PARKED} activity records wait for this lead"))
        return
    parked.append(ev.model_copy(update={"first_seen_at": now}).model_dump(mode="json"))
    t.parked_activity[lead_id] = parked


def past_wait(ctx: Context, view: View, model: type[P], lead_id: str, now: datetime) -> list[P]:
    """The records parked under this lead whose wait ran out, in order; they leave the table, the rest stay."""
    wait = timedelta(seconds=ctx.settings.unknown_lead_wait_seconds)
    parked = [model.model_validate(p) for p in view.get(lead_id) or []]
    keep = [p for p in parked if p.first_seen_at + wait >= now]
    if len(keep) == len(parked):
        return []
    if keep:
        view[lead_id] = [p.model_dump(mode="json") for p in keep]
    else:
        del view[lead_id]
    return [p for p in parked if p.first_seen_at + wait < now]


async def give_up_waiting_activity(ctx: Context, lead_id: str, now: datetime) -> None:
    """Activity parked for this lead past its wait is dead-lettered as unknown_lead."""
    for act in past_wait(ctx, ctx.tables.parked_activity, ActivityUnrouted, lead_id, now):
        await give_up_activity(ctx, act, UnknownLead("no decision for this lead within the wait", field="lead_id"))


async def on_claim(ctx: Context, ev: ClaimUnrouted, now: datetime) -> None:
    """A claim goes to its lead's pool; a claim for a lead never decided is answered at once (people
    claim what `leadrelay pool` lists: there is nothing to wait for)."""
    index = ctx.tables.lead_index.get(ev.claim.lead_id)
    if index is not None:
        routed = ClaimArrived(pool=index["pool"], claim=ev.claim, origin=ev.origin)
        await ctx.topics.pool_events.send(key=index["pool"].encode(), value=dump(routed))
        return
    await ingest_claims.answer(ctx, ev.claim, None, "unknown_lead", "no decision for this lead", now)


async def give_up_waiting(ctx: Context, lead_id: str, now: datetime) -> None:
    """The deals parked for this lead past their wait leave: to their named pool, or dead-lettered."""
    for deal in past_wait(ctx, ctx.tables.parked_deals, DealUnrouted, lead_id, now):
        await give_up(ctx, deal, lead_id, UnknownLead("no decision for this lead within the wait", field="lead_id"))


async def housekeeping(ctx: Context, now: datetime) -> None:
    """Parked deals past their wait, index entries past retention: in the task's own transaction."""
    for lead_id in [k for k, _ in ctx.tables.parked_deals.items()]:  # few: deals wait minutes at most
        await give_up_waiting(ctx, lead_id, now)
    for lead_id in [k for k, _ in ctx.tables.parked_activity.items()]:  # the same for activity
        await give_up_waiting_activity(ctx, lead_id, now)
    horizon = (now - timedelta(days=ctx.settings.index_retention_days)).isoformat()
    for lead_id, entry in ctx.tables.lead_index.sweep(SWEEP_ROWS):
        if entry and entry.get("indexed_at") and entry["indexed_at"] < horizon:
            del ctx.tables.lead_index[lead_id]
