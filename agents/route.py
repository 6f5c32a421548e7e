"""route: the core agent. One pool event in, the pure core decides, tables and decisions out."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import faust

from routing.ledger import LedgerEntry, assign, close, expired, with_member
from routing.model import Load, PoolView, Rep
from routing.policy import DEFAULT_POLICY
from schemas.internal import POOL_EVENT, DealArrived, LeadArrived, LeadIndexed, LedgerExpired, RepChanged
from streams.boundary import handle_guarded
from streams.codecs import dump, parse_internal
from streams.context import Context
from streams.errors import UnknownLead
from streams.tables import key

log = logging.getLogger("leadrelay.route")


def pool_view(ctx: Context, pool: str) -> PoolView:
    t = ctx.tables
    state = t.pools.get(pool) or {}
    members = state.get("members", [])
    reps = {r: Rep.from_dict(t.reps[key(pool, r)]) for r in members if t.reps.get(key(pool, r))}
    loads = {r: Load.from_dict(t.loads.get(key(pool, r))) for r in reps}
    return PoolView(pool=pool, reps=reps, loads=loads, cursor=state.get("cursor"))


async def on_lead(ctx: Context, ev: LeadArrived, now: datetime) -> None:
    t, m, lead = ctx.tables, ctx.metrics, ev.lead
    ledger_key = key(ev.pool, lead.lead_id)
    stored = t.ledger.get(ledger_key)
    entry = LedgerEntry.from_dict(stored) if stored else None
    view = pool_view(ctx, ev.pool) if entry is None else PoolView(ev.pool, {})
    result = assign(lead, view, DEFAULT_POLICY, entry, now=now)
    decision = result.decision
    if result.duplicate:
        m.record_duplicate(ev.pool)
    else:
        # Ledger first: if the worker dies between writes, a replayed lead is a duplicate, not a re-decision.
        t.ledger[ledger_key] = result.entry.to_dict()
        if result.load is not None and decision.rep_id is not None:
            t.loads[key(ev.pool, decision.rep_id)] = result.load.to_dict()
            t.pools[ev.pool] = {**(t.pools.get(ev.pool) or {}), "cursor": decision.rep_id}
        m.record_decision(decision, (now - ev.received_at).total_seconds())
        m.set_pool_state(
            ev.pool,
            open_leads=sum(load.open for load in view.loads.values()) + (1 if decision.rep_id else 0),
            capacity=sum(r.capacity for r in view.reps.values() if r.active),
        )
    lead_key = lead.lead_id.encode()
    await ctx.topics.assignments.send(key=lead_key, value=dump(decision))
    indexed = LeadIndexed(lead_id=lead.lead_id, pool=ev.pool, rep_id=decision.rep_id, decision_id=decision.decision_id)
    await ctx.topics.lead_events.send(key=lead_key, value=dump(indexed))


def on_rep(ctx: Context, ev: RepChanged) -> None:
    t = ctx.tables
    rep_key = key(ev.pool, ev.rep_id)
    state = t.pools.get(ev.pool) or {"members": [], "cursor": None}
    present = ev.profile is not None
    if ev.profile is not None:
        t.reps[rep_key] = Rep.from_event(ev.profile).to_dict()
    elif t.reps.get(rep_key) is not None:
        del t.reps[rep_key]  # its load row stays: the leads it holds are still open until they close
    members = with_member(list(state.get("members", [])), ev.rep_id, present)
    if members != state.get("members"):
        t.pools[ev.pool] = {**state, "members": members}


def on_deal(ctx: Context, ev: DealArrived) -> None:
    t, deal = ctx.tables, ev.deal
    ledger_key = key(ev.pool, deal.lead_id)
    stored = t.ledger.get(ledger_key)
    entry = LedgerEntry.from_dict(stored) if stored else None
    if entry is None and deal.rep_id is None:
        raise UnknownLead(f"no decision for this lead in pool {ev.pool} and no rep_id", field="lead_id")
    holder = entry.rep_id if entry else None
    credited = deal.rep_id or holder
    load = Load.from_dict(t.loads.get(key(ev.pool, holder))) if holder else None
    buckets = t.performance.get(key(ev.pool, credited)) if credited else None
    result = close(deal, entry, load, buckets)
    if result.duplicate:
        return
    if result.entry is not None:
        t.ledger[ledger_key] = result.entry.to_dict()
    if result.released is not None:
        rep_id, new_load = result.released
        t.loads[key(ev.pool, rep_id)] = new_load.to_dict()
        ctx.metrics.record_release(ev.pool)
    if result.credited and result.buckets is not None:
        t.performance[key(ev.pool, result.credited)] = result.buckets
    variant = entry.decision.get("variant") if entry else None
    ctx.metrics.record_deal(ev.pool, deal.outcome, variant, matched=entry is not None)


def on_expire(ctx: Context, ev: LedgerExpired, now: datetime) -> None:
    retention = timedelta(days=ctx.settings.ledger_retention_days)
    for lead_id in ev.lead_ids:
        ledger_key = key(ev.pool, lead_id)
        stored = ctx.tables.ledger.get(ledger_key)
        if stored and expired(LedgerEntry.from_dict(stored), now=now, retention=retention):
            del ctx.tables.ledger[ledger_key]


async def handle(ctx: Context, event: Any) -> None:
    ev = parse_internal(POOL_EVENT, event.value)
    now = datetime.now(UTC)  # the wall clock enters here, at the edge, and is passed into the core
    if isinstance(ev, LeadArrived):
        await on_lead(ctx, ev, now)
    elif isinstance(ev, RepChanged):
        on_rep(ctx, ev)
    elif isinstance(ev, DealArrived):
        on_deal(ctx, ev)
    else:
        on_expire(ctx, ev, now)


def register(app: faust.App, ctx: Context) -> Any:
    @app.agent(ctx.topics.pool_events, name="route")
    async def route(stream: Any) -> Any:
        async for event in stream.events():
            yield await handle_guarded(ctx, "route", event, handle)

    return route
