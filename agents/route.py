"""route: the route stage. One pool event in, the pure core decides, table rows and decisions out."""

from __future__ import annotations

import functools
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from agents.ingest_claims import answer
from routing import availability, claims, dedupe, fairness, lifecycle, sla, updates, waiting
from routing.frame import PoolFrame
from routing.ids import decision_id
from routing.ledger import (
    CLAIMABLE,
    MOVED,
    OPEN,
    WAITING,
    Assigned,
    LedgerEntry,
    assign,
    close,
    cursor_after_leaving,
    expired,
    with_member,
)
from routing.model import Load, Rep
from routing.policy import Policy
from schemas.events import AssignmentDecision, LeadCreated
from schemas.internal import (
    POOL_EVENT,
    ActivityArrived,
    ClaimArrived,
    DealArrived,
    LeadArrived,
    LeadIndexed,
    LeadUpdated,
    PolicyChanged,
    PoolEvent,
    RepChanged,
)
from streams.codecs import dump, parse_internal
from streams.errors import InvalidPolicy, StalePolicy, UnknownLead
from streams.kafka.topics import home_partition
from streams.runtime.boundary import kafka_time
from streams.runtime.context import Context
from streams.runtime.loop import Event
from streams.runtime.poolcache import PoolCache
from streams.runtime.tables import SEP, key
from streams.web import logs

log = logging.getLogger("leadrelay.route")
SWEEP_ROWS = 2000  # ledger rows looked at per housekeeping step and task (~15 ms of the loop)
FOLLOW_UP, WINDOW, MAX_WAIT = "follow_up", "claim_window", "max_wait"  # the kinds of timer row
DRAIN_ROWS = 200  # waiting leads looked at per record that freed capacity at most
WAIT_GAUGE_ROWS = 10_000  # waiting leads counted for the gauge at most
FIRE_ROWS = 1000  # follow-up timers fired per housekeeping step and task at most (the rest: next step)
HAND_BACK_ROWS = 100_000  # open leads of one rep looked at per roster change (a rep's capacity at most)


async def on_lead(
    ctx: Context, cache: PoolCache, ev: LeadArrived, now: datetime, stored: dict[str, Any] | None
) -> None:
    """A lead's first sight in this pool, or its next attempt after an update moved it here. A lead the
    ledger has (`stored`: a re-send, or the same move again) re-emits its decision unchanged, state
    untouched."""
    lead = ev.lead
    # An update that moves the lead back to a pool it left is its next attempt here, not a duplicate.
    back = stored is not None and stored["status"] == MOVED and (ev.attempt or 0) > int(stored["decision"]["attempt"])
    if stored is not None and not back:
        decision = AssignmentDecision.model_validate(stored["decision"])
        ctx.metrics.record_duplicate(ev.pool)
    elif ev.attempt is None:
        decision = decide_and_record(ctx, cache, ev, now)
    else:
        await moved_here(ctx, cache, ev, LedgerEntry.from_dict(stored) if stored else None, now)
        return
    await ctx.topics.assignments.send(key=lead.lead_id.encode(), value=dump(decision))


async def moved_here(
    ctx: Context, cache: PoolCache, ev: LeadArrived, before: LedgerEntry | None, now: datetime
) -> None:
    """A lead an update moved here: its next attempt, previous holders excluded (no dedupe: it is not new)."""
    assert ev.attempt is not None
    frame, policy = cache.frame(ev.pool), cache.policy(ev.pool)
    holders = tuple(ev.previous_holders)
    result = updates.moved_in(ev.lead, frame, policy, ev.attempt, holders, ev.moved_from, now=now)
    latency = (datetime.now(UTC) - ev.received_at).total_seconds()  # latency: wall clock
    await settle(ctx, cache, ev.pool, ev.lead, result, before, now, latency)


async def settle(
    ctx: Context,
    cache: PoolCache,
    pool: str,
    lead: LeadCreated,
    result: Assigned,
    before: LedgerEntry | None,
    now: datetime,
    latency: float | None = None,
) -> None:
    """A decision that may leave the lead waiting (a move, an update decided again): with the policy's
    `waiting` and everyone full it joins the pool's queue; then it takes effect."""
    policy = cache.policy(pool)
    if waiting.waits(result.decision, policy):
        result = waiting.start(result, lead, policy, now=now)
        ctx.tables.wait[wait_key(pool, result.entry)] = {"since": sla.stamp(now)}
    await take_effect(ctx, cache, pool, lead, result, before, latency)


def decide_and_record(ctx: Context, cache: PoolCache, ev: LeadArrived, now: datetime) -> AssignmentDecision:
    """First sight of a lead: decide, write ledger then state, keep the frame and metrics current."""
    t, m = ctx.tables, ctx.metrics
    frame, policy = cache.frame(ev.pool), cache.policy(ev.pool)
    match = duplicate_of(ctx, ev, frame, policy, now)
    result = (
        dedupe.merge(ev.lead, frame, policy, match, now=now) if match else assign(ev.lead, frame, policy, None, now=now)
    )
    decision = result.decision
    if waiting.waits(decision, policy):
        result = waiting.start(result, ev.lead, policy, now=now)
        t.wait[wait_key(ev.pool, result.entry)] = {"since": sla.stamp(now)}
    t.ledger[key(ev.pool, ev.lead.lead_id)] = result.entry.to_dict()
    track(ctx, ev.pool, ev.lead, None, result.entry)
    start_timer(ctx, ev.pool, ev.lead, result.entry)
    if result.load is not None and decision.rep_id is not None:
        t.loads[key(ev.pool, decision.rep_id)] = result.load.to_dict()
        frame.set_load(decision.rep_id, result.load)
        m.set_rep_load(ev.pool, decision.rep_id, result.load.open, frame.limit(decision.rep_id))
    if result.state is not None:
        t.pools[ev.pool] = result.state.to_dict()
        frame.set_state(result.state)
    if match is not None:
        m.record_contact_duplicate(ev.pool, match.kind)
        log.info("duplicate of lead %s (same %s): to its holder", match.lead_id, match.kind)
    else:
        keep_keys(ctx, ev, policy, decision, now)
    m.record_decision(decision, (datetime.now(UTC) - ev.received_at).total_seconds())  # latency: wall clock
    cache.touched.add(ev.pool)  # its pool gauges: once per batch, in pool_gauges
    log.debug("decided %s", decision.reason, extra={"rep_id": decision.rep_id, "decision_id": decision.decision_id})
    return decision


def duplicate_of(ctx: Context, ev: LeadArrived, frame: PoolFrame, policy: Policy, now: datetime) -> dedupe.Match | None:
    """The open lead of this pool that the new lead repeats, by the policy's dedupe keys in their order."""
    if policy.dedupe is None:
        return None
    if ctx.settings.dedupe_secret is None:
        unkeyed(ev.pool)
        return None
    t, candidates = ctx.tables, []
    for kind in policy.dedupe.keys:
        hashed = ev.dedupe_keys.get(kind)
        stored = t.dedupe.get(dedupe.row_key(ev.pool, kind, hashed)) if hashed else None
        if stored is not None:
            entry = t.ledger.get(key(ev.pool, str(stored["lead_id"])))
            candidates.append((kind, stored, LedgerEntry.from_dict(entry) if entry else None))
    return dedupe.find(candidates, frame, policy.dedupe, now)


@functools.cache
def unkeyed(pool: str) -> None:
    """Once per pool and process: a policy asks for dedupe, but without a secret no lead has keys."""
    log.warning("pool %s has a dedupe policy but dedupe_secret is unset: no duplicates are found", pool)


def keep_keys(ctx: Context, ev: LeadArrived, policy: Policy, decision: AssignmentDecision, now: datetime) -> None:
    """A lead decided on its own takes over the rows of its keys: later duplicates join it while it is open
    with a holder (also one it gets later: a claim, capacity freed). A duplicate never takes a row."""
    if policy.dedupe is None:
        return
    for kind in policy.dedupe.keys:
        hashed = ev.dedupe_keys.get(kind)
        if hashed:
            ctx.tables.dedupe[dedupe.row_key(ev.pool, kind, hashed)] = dedupe.row(ev.lead.lead_id, decision.rep_id, now)


def pool_gauges(ctx: Context, cache: PoolCache) -> None:
    """After a batch: open leads, capacity, fairness and policy of each pool the batch decided in. Per
    decision they were 4-5% of a backfill's CPU, and nobody scrapes between two records of a batch."""
    m = ctx.metrics
    for pool in sorted(cache.touched):
        frame = cache.cached(pool)
        if frame is None:  # dropped by a roster change later in the batch: the next decision rebuilds it
            continue
        policy = cache.policy(pool)
        m.set_pool_state(pool, open_leads=int(frame.open.sum()), capacity=frame.total_capacity())
        m.set_fairness(pool, fairness.gini(frame.value[frame.active]))
        variants = [v.id for v in policy.experiment.variants] if policy.experiment else []
        m.set_policy(pool, policy.id, policy.version, variants)
        if policy.waiting is not None or ctx.tables.wait.prefixed(pool + waiting.SEP, 1):
            m.set_waiting(pool, len(ctx.tables.wait.prefixed(pool + waiting.SEP, WAIT_GAUGE_ROWS)))
    cache.touched.clear()


def holder(entry: LedgerEntry | None) -> str | None:
    return entry.rep_id if entry is not None and entry.status == OPEN else None


def track(ctx: Context, pool: str, lead: LeadCreated | str, before: LedgerEntry | None, after: LedgerEntry) -> None:
    """The `held` row of the lead's holder follows the ledger: a new holder gets one (with the lead, without
    contact data, so a hand-back can decide it again), a holder that let go loses it. Written with every
    ledger change of holder, in the same transaction."""
    old, new = holder(before), holder(after)
    if old == new:
        return
    lead_id = lead if isinstance(lead, str) else lead.lead_id
    if old is not None:
        del ctx.tables.held[key(pool, old, lead_id)]
    if new is not None:
        assert not isinstance(lead, str), "a new holder needs the lead"
        ctx.tables.held[key(pool, new, lead_id)] = held_row(lead)


def held_row(lead: LeadCreated) -> dict[str, Any]:
    """A `held` row: the lead without contact data and without its unset fields (one row per decision:
    its size is changelog bytes on the hot path)."""
    return {"lead": lead.model_dump(mode="json", exclude_none=True, exclude_defaults=True)}


def start_timer(ctx: Context, pool: str, lead: LeadCreated, entry: LedgerEntry) -> None:
    """The lead's timer, when its policy has one: the holder's follow-up SLA, or the claim window of a
    claimable lead. A row that sorts by due time, holding the lead (without contact data) for its next
    attempt."""
    if entry.sla_due is not None:
        kind = WINDOW if entry.status == CLAIMABLE else MAX_WAIT if entry.status == WAITING else FOLLOW_UP
        row = {"kind": kind, "lead": lead.model_dump(mode="json"), "rep_id": entry.rep_id, "attempt": entry.attempt}
        ctx.tables.sla[sla.timer_key(entry.sla_due, pool, lead.lead_id)] = row


def wait_key(pool: str, entry: LedgerEntry) -> str:
    """The `wait` row of a waiting entry (the entry keeps the lead, so its order key follows from it)."""
    assert entry.lead is not None
    created = datetime.fromisoformat(str(entry.lead["created_at"]))
    return waiting.wait_key(pool, entry.value, created, str(entry.lead["lead_id"]))


def leave_queue(ctx: Context, pool: str, entry: LedgerEntry | None) -> None:
    """A waiting lead that closed (a deal, a closing activity) leaves the queue."""
    if entry is not None and entry.status == WAITING and entry.lead is not None:
        del ctx.tables.wait[wait_key(pool, entry)]


async def drain(ctx: Context, cache: PoolCache, pool: str, now: datetime) -> int:
    """Capacity may have freed in the pool: its waiting leads, in their order, are decided again (attempt
    n+1, trigger capacity_freed) while any rep has room; one that still fits nobody keeps its place. `now`
    is the log time of the record that freed capacity. Returns how many were assigned."""
    t = ctx.tables
    rows = t.wait.prefixed(pool + waiting.SEP, DRAIN_ROWS)
    if not rows:
        return 0
    frame, policy = cache.frame(pool), cache.policy(pool)
    assigned = 0
    for row_key, _ in rows:
        if not bool((frame.active & (frame.open < frame.capacity)).any()):
            break  # nobody has room: the rest keep waiting
        lead_id = waiting.lead_of_key(row_key)
        stored = t.ledger.get(key(pool, lead_id))
        entry = LedgerEntry.from_dict(stored) if stored else None
        if entry is None or entry.status != WAITING or entry.lead is None:
            del t.wait[row_key]  # left behind
            continue
        lead = LeadCreated.model_validate(entry.lead)
        with logs.bind(lead_id=lead_id, pool=pool):
            new = waiting.freed(lead, frame, policy, entry, now=now)
            if new is None:
                continue
            del t.wait[row_key]
            if entry.sla_due is not None:
                del t.sla[sla.timer_key(entry.sla_due, pool, lead_id)]
            await take_effect(ctx, cache, pool, lead, new, entry)
            ctx.metrics.record_waiting(pool, "assigned")
            log.info(
                "capacity freed: waiting lead -> %s after %.0fs",
                new.decision.rep_id,
                new.entry.waited_seconds or 0.0,
                extra={"rep_id": new.decision.rep_id, "decision_id": new.decision.decision_id},
            )
        assigned += 1
    cache.touched.add(pool)
    return assigned


async def end_wait(
    ctx: Context, cache: PoolCache, pool: str, lead: LeadCreated, entry: LedgerEntry, now: datetime
) -> None:
    """The lead waited the policy's max_wait: it goes to the open pool (claimable), once."""
    t = ctx.tables
    new = waiting.timed_out(lead, cache.frame(pool), cache.policy(pool), entry, now=now)
    del t.wait[wait_key(pool, entry)]
    await take_effect(ctx, cache, pool, lead, new, entry)
    ctx.metrics.record_waiting(pool, "timed_out")
    log.info("max wait: the lead goes to the open pool after %.0fs", new.entry.waited_seconds or 0.0)


def set_load(ctx: Context, cache: PoolCache, pool: str, rep_id: str, load: Load) -> None:
    ctx.tables.loads[key(pool, rep_id)] = load.to_dict()
    frame = cache.cached(pool)
    if frame is not None:
        frame.set_load(rep_id, load)
        if rep_id in frame.index:
            ctx.metrics.set_rep_load(pool, rep_id, load.open, frame.limit(rep_id))


async def take_effect(
    ctx: Context,
    cache: PoolCache,
    pool: str,
    lead: LeadCreated,
    new: Assigned,
    before: LedgerEntry | None,
    latency: float | None = None,
) -> None:
    """A later attempt's decision (SLA, hand-back, claim, claim window, capacity freed, max wait, update,
    move): its ledger entry, holder row and timer, the new holder's load, the pool's state, the decision
    out; the pool's gauges after the batch. A timer's decision has no latency (None)."""
    t = ctx.tables
    t.ledger[key(pool, lead.lead_id)] = new.entry.to_dict()
    track(ctx, pool, lead, before, new.entry)
    start_timer(ctx, pool, lead, new.entry)
    if new.load is not None and new.decision.rep_id is not None:
        set_load(ctx, cache, pool, new.decision.rep_id, new.load)
    if new.state is not None:
        t.pools[pool] = new.state.to_dict()
        cache.frame(pool).set_state(new.state)
    await ctx.topics.assignments.send(key=lead.lead_id.encode(), value=dump(new.decision))
    ctx.metrics.record_decision(new.decision, latency)
    cache.touched.add(pool)


async def on_update(ctx: Context, cache: PoolCache, ev: LeadUpdated, now: datetime) -> None:
    """A new version of a lead this pool holds: kept, decided again, or moved to another pool (the move,
    the new pool's first record of the lead and the index's move commit together, in that order)."""
    t, lead = ctx.tables, ev.lead
    stored = t.ledger.get(key(ev.pool, lead.lead_id))
    if stored is None:  # left the ledger after retention: a closed lead
        ctx.metrics.record_update("ignored")
        return
    entry = LedgerEntry.from_dict(stored)
    load = Load.from_dict(t.loads.get(key(ev.pool, entry.rep_id))) if entry.rep_id else None
    u = updates.apply(lead, ev.to_pool, cache.frame(ev.pool), cache.policy(ev.pool), entry, load, now=now)
    if u.outcome == "forwarded":  # not reached: follow_move sent the update after its lead already
        return
    ctx.metrics.record_update(u.outcome)
    if u.outcome == "ignored":
        return
    leave_queue(ctx, ev.pool, entry)  # a waiting lead takes a new place (or none) below
    if u.stopped is not None:
        del t.sla[sla.timer_key(u.stopped, ev.pool, lead.lead_id)]
    if u.released is not None:
        set_load(ctx, cache, ev.pool, *u.released)
        ctx.metrics.record_release(ev.pool)
    if u.assigned is not None:
        await settle(ctx, cache, ev.pool, lead, u.assigned, entry, now)
    elif u.entry is not None:
        t.ledger[key(ev.pool, lead.lead_id)] = u.entry.to_dict()
        track(ctx, ev.pool, lead, entry, u.entry)  # a move: the holder row goes
        if u.outcome == "kept" and entry.rep_id is not None:  # its row holds the new version for a hand-back
            t.held[key(ev.pool, entry.rep_id, lead.lead_id)] = held_row(lead)
        start_timer(ctx, ev.pool, lead, u.entry)  # the same row, now holding the new version
        if u.entry.status == WAITING:
            t.wait[wait_key(ev.pool, u.entry)] = {"since": sla.stamp(now)}
    if u.moved is not None:
        await move(ctx, ev, u.moved)
    log.info("lead updated: %s", u.outcome, extra={"pool": ev.pool})


async def move(ctx: Context, ev: LeadUpdated, moved: updates.Moved) -> None:
    """The lead's next attempt goes to its new pool's log first, then the index learns the new pool: a
    record that still finds the old pool is forwarded from there (`follow_move`), after the lead."""
    lead_id = ev.lead.lead_id
    arrival = LeadArrived(
        pool=moved.to_pool,
        lead=ev.lead,
        received_at=ev.received_at,
        origin=ev.origin,
        attempt=moved.attempt,
        previous_holders=list(moved.holders),
        trigger="moved",
        moved_from=ev.pool,
    )
    await ctx.topics.pool_events.send(key=moved.to_pool.encode(), value=dump(arrival))
    indexed = LeadIndexed(
        lead_id=lead_id, pool=moved.to_pool, rep_id=None, decision_id=decision_id(lead_id, moved.attempt)
    )
    partition = home_partition(lead_id, ctx.settings.partitions)
    await ctx.topics.lead_events.send(key=lead_id.encode(), value=dump(indexed), partition=partition)


async def follow_move(ctx: Context, ev: PoolEvent, stored: dict[str, Any] | None) -> bool:
    """A record for a lead that moved on from this pool (`stored`: its ledger row here) goes after it (the
    index still named this pool when it was routed). The same producer sent the lead there first, so it
    arrives after the lead."""
    if lead_of(ev) is None or (isinstance(ev, LeadArrived) and ev.attempt is not None):
        return False  # not about one lead, or the lead moving (back) here
    if stored is None or stored["status"] != MOVED:
        return False
    to_pool = str(stored["moved_to"])
    await ctx.topics.pool_events.send(key=to_pool.encode(), value=dump(ev.model_copy(update={"pool": to_pool})))
    if isinstance(ev, LeadUpdated):
        ctx.metrics.record_update("forwarded")
    return True


def lead_of(ev: PoolEvent) -> str | None:
    if isinstance(ev, LeadArrived | LeadUpdated):
        return ev.lead.lead_id
    if isinstance(ev, ActivityArrived):
        return ev.activity.lead_id
    if isinstance(ev, DealArrived):
        return ev.deal.lead_id
    if isinstance(ev, ClaimArrived):
        return ev.claim.lead_id
    return None


def on_activity(ctx: Context, cache: PoolCache, ev: ActivityArrived, now: datetime) -> None:
    """Activity touches the lead (its follow-up timer stops) or closes it without a deal (load released)."""
    t, act = ctx.tables, ev.activity
    ledger_key = key(ev.pool, act.lead_id)
    stored = t.ledger.get(ledger_key)
    if stored is None:
        raise UnknownLead(f"no decision for this lead in pool {ev.pool}", field="lead_id")
    entry = LedgerEntry.from_dict(stored)
    load = Load.from_dict(t.loads.get(key(ev.pool, entry.rep_id))) if entry.rep_id else None
    result = lifecycle.touch(act, entry, load, now=now)
    ctx.metrics.record_activity(act.kind, result.outcome)
    if result.outcome == "ignored":
        return
    t.ledger[ledger_key] = result.entry.to_dict()
    track(ctx, ev.pool, act.lead_id, entry, result.entry)
    if result.outcome == "closed":
        leave_queue(ctx, ev.pool, entry)
    if result.stopped is not None:
        del t.sla[sla.timer_key(result.stopped, ev.pool, act.lead_id)]
    if result.released is not None:
        set_load(ctx, cache, ev.pool, *result.released)
        ctx.metrics.record_release(ev.pool)
    if result.outcome == "closed":
        log.info("lead closed: %s", (result.entry.closure or {}).get("summary"), extra={"pool": ev.pool})


async def fire_timers(ctx: Context, cache: PoolCache, now: datetime) -> None:
    """Follow-up timers due at `now`, in due order, inside the task's transaction: each one that still
    stands gives its lead's next attempt and is deleted in the same commit, so it fires exactly once,
    whoever owns the partition when it is due."""
    t, until = ctx.tables, sla.stamp(now)
    rows, _ = t.sla.scan(None, FIRE_ROWS)
    for timer, row in rows:
        due, pool, lead_id = sla.split_timer_key(timer)
        if due > until:
            break
        del t.sla[timer]
        stored = t.ledger.get(key(pool, lead_id))
        entry = LedgerEntry.from_dict(stored) if stored else None
        if row.get("kind") == MAX_WAIT:
            if entry is not None and entry.status == WAITING and entry.sla_due == due:
                with logs.bind(lead_id=lead_id, pool=pool):
                    await end_wait(ctx, cache, pool, LeadCreated.model_validate(row["lead"]), entry, now)
            continue
        if row.get("kind") == WINDOW:
            if entry is not None and entry.status == CLAIMABLE and entry.sla_due == due:
                with logs.bind(lead_id=lead_id, pool=pool):
                    await close_window(ctx, cache, pool, LeadCreated.model_validate(row["lead"]), entry, now)
            continue
        if entry is None or not lifecycle.due(entry, due):
            continue  # touched, closed or fired already: the row was left behind
        policy = cache.policy(pool)
        if policy.follow_up is None:  # the pool's policy dropped its SLA since: the lead stays
            t.ledger[key(pool, lead_id)] = replace(entry, sla_due=None).to_dict()
            continue
        with logs.bind(lead_id=lead_id, pool=pool):
            await reassign(ctx, cache, pool, LeadCreated.model_validate(row["lead"]), entry, now)
        await drain(ctx, cache, pool, now)  # the silent holder's load was released


async def close_window(
    ctx: Context, cache: PoolCache, pool: str, lead: LeadCreated, entry: LedgerEntry, now: datetime
) -> None:
    """Nobody claimed the lead within the claim window: the pool's policy assigns it, if anyone is eligible."""
    t = ctx.tables
    frame, policy = cache.frame(pool), cache.policy(pool)
    new = claims.window_closed(lead, frame, policy, entry, now=now)
    if new is None:  # stays claimable, without a window now
        t.ledger[key(pool, lead.lead_id)] = replace(entry, sla_due=None).to_dict()
        log.info("claim window closed, nobody eligible: the lead stays in the open pool")
        return
    await take_effect(ctx, cache, pool, lead, new, entry)
    ctx.metrics.record_sla("window_assigned")


async def reassign(
    ctx: Context, cache: PoolCache, pool: str, lead: LeadCreated, entry: LedgerEntry, now: datetime
) -> None:
    t, m = ctx.tables, ctx.metrics
    assert entry.rep_id is not None
    frame, policy = cache.frame(pool), cache.policy(pool)
    silent = Load.from_dict(t.loads.get(key(pool, entry.rep_id)))
    result = lifecycle.expire(lead, frame, policy, entry, silent, now=now)
    new = result.assigned
    set_load(ctx, cache, pool, *result.released)
    m.record_release(pool)
    await take_effect(ctx, cache, pool, lead, new, entry)
    m.record_sla(result.outcome)
    log.info(
        "follow-up SLA: %s -> %s (attempt %d)",
        entry.rep_id,
        new.decision.rep_id or "open pool",
        new.decision.attempt,
        extra={"rep_id": new.decision.rep_id, "decision_id": new.decision.decision_id},
    )


async def on_claim(ctx: Context, cache: PoolCache, ev: ClaimArrived, now: datetime) -> None:
    """The first valid claim in the pool's log takes the lead: a new attempt for the claimant; every
    other claim is answered with its reason."""
    t, c = ctx.tables, ev.claim
    stored = t.ledger.get(key(ev.pool, c.lead_id))
    if stored is None:
        await answer(ctx, c, ev.pool, "unknown_lead", f"no decision for this lead in pool {ev.pool}", now)
        return
    entry = LedgerEntry.from_dict(stored)
    if entry.lead is None:  # not claimable, or made claimable before leads were kept for claims
        await answer(ctx, c, ev.pool, "not_claimable", f"the lead is {entry.status}", now)
        return
    lead = LeadCreated.model_validate(entry.lead)
    frame, policy = cache.frame(ev.pool), cache.policy(ev.pool)
    load = Load.from_dict(t.loads.get(key(ev.pool, c.rep_id)))
    result = claims.claim(lead, frame, policy, entry, c.rep_id, load, now=now)
    new = result.assigned
    if new is not None:
        await take_effect(ctx, cache, ev.pool, lead, new, entry)
    await answer(ctx, c, ev.pool, result.reason, result.detail, now, new.decision if new else None)


async def on_rep(ctx: Context, cache: PoolCache, ev: RepChanged, now: datetime) -> None:
    """A roster change: the rep's row and the pool's members; a rep coming back starts its ramp-up (`now`,
    the log time); one leaving or turning unavailable hands back leads as the pool's policy says."""
    t = ctx.tables
    rep_key = key(ev.pool, ev.rep_id)
    stored = t.reps.get(rep_key)
    before = Rep.from_dict(stored) if stored else None
    after = Rep.from_event(ev.profile, ev.pool) if ev.profile is not None else None
    if after is not None and before is not None:
        after = replace(after, returned_at=now if availability.came_back(before, after) else before.returned_at)
    state = cache.state(ev.pool)
    cursor = state.cursor
    if ev.profile is None and cursor == ev.rep_id:  # rare: only then is the roster order worth a frame
        cursor = cursor_after_leaving(cache.frame(ev.pool).rotation_ids(), cursor, ev.rep_id)
    if after is not None:
        t.reps[rep_key] = after.to_dict()
    elif stored is not None:
        del t.reps[rep_key]  # its load row stays: the leads it holds are still open until they close
        ctx.metrics.forget_rep(ev.pool, ev.rep_id)
    members = tuple(with_member(list(state.members), ev.rep_id, ev.profile is not None))
    if members != state.members or cursor != state.cursor:
        t.pools[ev.pool] = replace(state, members=members, cursor=cursor).to_dict()
    cache.drop(ev.pool)  # structural change: the frame is rebuilt on the next lead
    trigger = availability.departure(before, after, cache.policy(ev.pool).availability)
    if trigger is not None:
        await hand_back(ctx, cache, ev.pool, ev.rep_id, trigger, availability.state(after), now)


async def hand_back(
    ctx: Context, cache: PoolCache, pool: str, rep_id: str, trigger: str, state: str | None, now: datetime
) -> None:
    """The rep's open leads (`rep_left`) or its untouched ones (`rep_unavailable`) go to their next attempt,
    in the roster change's transaction: reassigned with previous holders excluded, else to the open pool.
    Leads it got before holder rows existed (0.2) have none and stay with it."""
    t = ctx.tables
    for row_key, row in t.held.prefixed(key(pool, rep_id) + SEP, HAND_BACK_ROWS):
        lead_id = row_key.rsplit(SEP, 1)[1]
        stored = t.ledger.get(key(pool, lead_id))
        entry = LedgerEntry.from_dict(stored) if stored else None
        if entry is None or holder(entry) != rep_id:
            del t.held[row_key]  # left behind
            continue
        if trigger == availability.UNAVAILABLE and entry.touched_at is not None:
            continue  # worked on: the rep keeps it
        lead = LeadCreated.model_validate(row["lead"])
        with logs.bind(lead_id=lead_id, pool=pool):
            load = Load.from_dict(t.loads.get(key(pool, rep_id)))
            frame, policy = cache.frame(pool), cache.policy(pool)
            result = lifecycle.hand_back(lead, frame, policy, entry, load, now=now, trigger=trigger, state=state)
            if entry.sla_due is not None:
                del t.sla[sla.timer_key(entry.sla_due, pool, lead_id)]
            set_load(ctx, cache, pool, *result.released)
            if entry.holds_load:  # a duplicate released nothing: it becomes a lead of its own, with a load
                ctx.metrics.record_release(pool)
            await take_effect(ctx, cache, pool, lead, result.assigned, entry)
            ctx.metrics.record_hand_back(trigger, result.outcome)
            log.info(
                "%s: %s -> %s",
                trigger,
                rep_id,
                result.assigned.decision.rep_id or "open pool",
                extra={"rep_id": result.assigned.decision.rep_id, "decision_id": result.assigned.decision.decision_id},
            )


def on_deal(ctx: Context, cache: PoolCache, ev: DealArrived, now: datetime) -> None:
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
    model = t.models.get(key(ev.pool, credited)) if credited else None
    result = close(deal, entry, load, buckets, model, now=now)
    if result.duplicate:
        return
    frame = cache.cached(ev.pool)
    if result.entry is not None:
        t.ledger[ledger_key] = result.entry.to_dict()
        track(ctx, ev.pool, deal.lead_id, entry, result.entry)
        leave_queue(ctx, ev.pool, entry)  # a max_wait timer is left behind, dropped when due
    if result.released is not None:
        rep_id, new_load = result.released
        t.loads[key(ev.pool, rep_id)] = new_load.to_dict()
        ctx.metrics.record_release(ev.pool)
        if frame is not None:
            frame.set_load(rep_id, new_load)
            if rep_id in frame.index:
                ctx.metrics.set_rep_load(ev.pool, rep_id, new_load.open, frame.limit(rep_id))
    if result.credited is not None:
        if result.buckets is not None:
            t.performance[key(ev.pool, result.credited)] = result.buckets
            if frame is not None:
                frame.set_buckets(result.credited, result.buckets)
        if result.model is not None:
            t.models[key(ev.pool, result.credited)] = result.model
            if frame is not None:
                frame.set_model(result.credited, result.model)
    variant = entry.decision.get("variant") if entry else None
    ctx.metrics.record_deal(ev.pool, deal.outcome, variant, matched=entry is not None)


def on_policy(ctx: Context, cache: PoolCache, ev: PolicyChanged) -> None:
    t = ctx.tables
    current = t.policies.get(ev.pool)
    if ev.policy is None:
        if current is not None:
            del t.policies[ev.pool]
        log.info("policy removed; default applies", extra={"pool": ev.pool})
    else:
        try:
            Policy.model_validate(ev.policy)  # checked at ingress too; never store what cannot decide
        except ValidationError as exc:
            raise InvalidPolicy(f"policy for {ev.pool}: {exc.error_count()} error(s)", field="policy") from None
        if current is not None and current != ev.policy and ev.policy["version"] <= current["version"]:
            raise StalePolicy(
                f"version {ev.policy['version']} is not newer than running {current['version']}", field="version"
            )
        t.policies[ev.pool] = ev.policy
        log.info("policy %s v%s active", ev.policy["id"], ev.policy["version"], extra={"pool": ev.pool})
    cache.drop_policy(ev.pool)
    policy = cache.policy(ev.pool)
    variants = [v.id for v in policy.experiment.variants] if policy.experiment else []
    ctx.metrics.set_policy(ev.pool, policy.id, policy.version, variants)


def on_expire(ctx: Context, pool: str, lead_ids: list[str], now: datetime) -> None:
    retention = timedelta(days=ctx.settings.ledger_retention_days)
    for lead_id in lead_ids:
        ledger_key = key(pool, lead_id)
        stored = ctx.tables.ledger.get(ledger_key)
        if stored and expired(LedgerEntry.from_dict(stored), now=now, retention=retention):
            del ctx.tables.ledger[ledger_key]


async def housekeeping(ctx: Context, cache: PoolCache, now: datetime) -> None:
    """Due follow-up timers fire; waiting leads get another look; closed ledger entries past retention and
    dedupe keys past their horizon leave, a bounded sweep step at a time; all in the task's own
    transaction. `now` is the wall clock: the one clock input of a timer's decision, recorded as its
    decided_at."""
    await fire_timers(ctx, cache, now)
    for pool, _ in ctx.tables.pools.items():  # a few pools per partition
        if ctx.tables.wait.prefixed(pool + waiting.SEP, 1):
            # Capacity can grow without a record (a ramp-up goes on, a rep's shift starts), and a freeing
            # record tries DRAIN_ROWS leads at most: each step gives the waiting leads another look.
            await drain(ctx, cache, pool, now)
    retention = timedelta(days=ctx.settings.ledger_retention_days)
    for ledger_key, stored in ctx.tables.ledger.sweep(SWEEP_ROWS):
        if stored and expired(LedgerEntry.from_dict(stored), now=now, retention=retention):
            del ctx.tables.ledger[ledger_key]
    for row_key, stored in ctx.tables.dedupe.sweep(SWEEP_ROWS):  # past the horizon, or the pool dropped dedupe
        if not dedupe.live(stored, cache.policy(row_key.partition(SEP)[0]).dedupe, now):
            del ctx.tables.dedupe[row_key]


async def handle_event(ctx: Context, cache: PoolCache, event: Event) -> None:
    """One pool-log record. The clock enters here, at the edge, and is passed into the core: the time
    the event entered the pool's log (its record timestamp, written by this app), not the wall clock, so
    handling the same record again (a redone batch, a replay offline) decides the same way."""
    now = kafka_time(event)
    ev = parse_internal(POOL_EVENT, event.value)
    lead_id = lead_of(ev)
    # One read of the lead's row for both: on a backfill, every record is a lead (the hot path).
    stored = ctx.tables.ledger.get(key(ev.pool, lead_id)) if lead_id is not None else None
    if await follow_move(ctx, ev, stored):
        return
    if isinstance(ev, LeadArrived):
        with logs.bind(lead_id=ev.lead.lead_id, pool=ev.pool):
            await on_lead(ctx, cache, ev, now, stored)
    elif isinstance(ev, LeadUpdated):
        with logs.bind(lead_id=ev.lead.lead_id, pool=ev.pool):
            await on_update(ctx, cache, ev, now)
        await drain(ctx, cache, ev.pool, now)  # a holder let go of the lead
    elif isinstance(ev, RepChanged):
        await on_rep(ctx, cache, ev, now)
        await drain(ctx, cache, ev.pool, now)  # a new rep, or more capacity
    elif isinstance(ev, DealArrived):
        on_deal(ctx, cache, ev, now)
        await drain(ctx, cache, ev.pool, now)
    elif isinstance(ev, ActivityArrived):
        with logs.bind(lead_id=ev.activity.lead_id, pool=ev.pool):
            on_activity(ctx, cache, ev, now)
        await drain(ctx, cache, ev.pool, now)
    elif isinstance(ev, ClaimArrived):
        with logs.bind(lead_id=ev.claim.lead_id, pool=ev.pool):
            await on_claim(ctx, cache, ev, now)
    elif isinstance(ev, PolicyChanged):
        on_policy(ctx, cache, ev)
        await drain(ctx, cache, ev.pool, now)
    else:  # a 0.1 worker's housekeeping request (schemas/internal.py)
        on_expire(ctx, ev.pool, ev.lead_ids, now)
