"""The stages of the transactional runtime and the context their handlers see.

Two hops for a lead or a deal, no cycle:

  leads.new, deals.closed ──> leads (key lead_id; lead index, parked deals) ──> pool-events ──> route
  reps.roster ──> roster (rep -> pools) ──> pool-events          routing.policies ──> policies ──> pool-events

The handlers are the agents' own functions (agents/*), called with a context bound to one task: its
table rows through an overlay (streams/runtime/store.py) and its sends through the task's open
transaction. A lead or deal that arrives on a partition other than its lead's (a producer that did not
key by lead_id) is validated and passed on, as the same LeadArrived/DealUnrouted the Faust runtime
writes, to the lead's partition of the internal lead-events topic, which the leads stage also reads:
the lead index stays correct whatever key the producer used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from agents import ingest_policies, ingest_roster, match_deals, route
from agents.ingest_leads import origin_of
from routing.ledger import LedgerEntry, expired
from routing.policy import Policy
from routing.territory import resolve_pool
from schemas.events import DealClosed, LeadCreated
from schemas.internal import (
    LEAD_EVENT,
    DealUnrouted,
    IndexExpired,
    LeadArrived,
    LeadIndexed,
    LedgerExpired,
    PendingExpired,
)
from streams import logs
from streams.boundary import kafka_time
from streams.codecs import dump, parse, parse_internal
from streams.context import Context
from streams.dlq import dead_letter, dead_letter_unexpected
from streams.errors import InvalidInput
from streams.metrics import Metrics
from streams.poolcache import PoolCache
from streams.runtime.loop import Event, Outbox, Stage, Task
from streams.runtime.store import Overlay
from streams.settings import Settings
from streams.tables import MATCH_KINDS, ROUTE_KINDS, SEP
from streams.topics import lead_events_topic, pool_events_topic

log = logging.getLogger("leadrelay.runtime")

EXPIRE_BATCH = 1000
SWEEP_ROWS = 5000  # ledger / index rows looked at per housekeeping step and task


# --- what a handler sees -------------------------------------------------------------------------


@dataclass
class Sender:
    """`ctx.topics.<name>.send(...)`, into the task's open transaction."""

    task: Task
    topic: str

    async def send(
        self,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        outbox = self.task.outbox
        assert isinstance(outbox, Outbox), f"task {self.task.name} has no open transaction"
        await outbox.send(
            self.topic, key=key, value=value, headers=headers, timestamp_ms=timestamp_ms, partition=partition
        )


class View:
    """One kind of row of a task's table (`ledger|<pool>|<lead>` ...), as a mapping over its overlay."""

    def __init__(self, overlay: Overlay, kind: str | None) -> None:
        self.overlay = overlay
        self.prefix = f"{kind}{SEP}" if kind else ""

    def get(self, key: str, default: Any = None) -> Any:
        value = self.overlay.get(self.prefix + key)
        return default if value is None else value

    def __getitem__(self, key: str) -> Any:
        value = self.overlay.get(self.prefix + key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self.overlay.set(self.prefix + key, value)

    def __delitem__(self, key: str) -> None:
        self.overlay.delete(self.prefix + key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.overlay.get(self.prefix + key) is not None

    def items(self) -> Iterator[tuple[str, Any]]:
        n = len(self.prefix)
        return ((k[n:], v) for k, v in self.overlay.items(self.prefix))

    def scan(self, after: str | None, limit: int) -> tuple[list[tuple[str, Any]], str | None]:
        """Up to `limit` rows after the key `after` (None: from the start), and where to go on from (None:
        the end was reached). A sweep in bounded steps, so housekeeping never stalls the loop."""
        n = len(self.prefix)
        start = None if after is None else self.prefix + after
        rows = list(islice(((k[n:], v) for k, v in self.overlay.items(self.prefix, start)), limit))
        return rows, (rows[-1][0] if len(rows) == limit else None)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self.items())

    def __len__(self) -> int:
        return sum(1 for _ in self.items())


class TaskTables:
    """The kinds of row a task's table holds, by the names agents use (`ctx.tables.ledger`, ...)."""

    def __init__(self, task: Task) -> None:
        overlay = task.overlay
        table = task.stage.table
        self.overlay = overlay  # for guarded(): a failed record's own writes are undone
        if overlay is None:
            return
        kinds = {"route": ROUTE_KINDS, "match": MATCH_KINDS}.get(table or "", {})
        for kind in kinds:
            setattr(self, kind.replace("-", "_"), View(overlay, kind))
        if table == "rep-pools":
            self.rep_pools = View(overlay, None)


class TaskTopics:
    def __init__(self, settings: Settings, task: Task) -> None:
        self.assignments = Sender(task, settings.topic_assignments)
        self.dlq = Sender(task, settings.topic_dlq)
        self.pool_events = Sender(task, pool_events_topic(settings))
        self.lead_events = Sender(task, lead_events_topic(settings))
        self.reps_roster = Sender(task, settings.topic_reps_roster)
        self.policies = Sender(task, settings.topic_policies)


def binder(settings: Settings, metrics: Metrics) -> Callable[[Task], Context]:
    def bind(task: Task) -> Context:
        return Context(settings=settings, topics=TaskTopics(settings, task), tables=TaskTables(task), metrics=metrics)  # type: ignore[arg-type]

    return bind


def guarded(
    agent: str,
    handle: Callable[[Context, Event], Any],
    on_error: Callable[[], None] | None = None,
) -> Callable[[Context, Event], Any]:
    """Every failure of one record is classified here, once: invalid input goes to the dead-letter topic;
    anything else is logged with topic[partition]@offset, counted and dead-lettered too (not retried in
    place: that would reorder the log). Both inside the batch's transaction. A failed record's table
    writes are undone (and `on_error` drops caches that may hold them); sends cannot be, so handlers
    send last."""

    async def run(ctx: Context, event: Event) -> None:
        overlay: Overlay | None = getattr(ctx.tables, "overlay", None)
        if overlay is not None:
            overlay.mark()
        try:
            await handle(ctx, event)
        except InvalidInput as exc:
            _undo(overlay, on_error)
            await dead_letter(ctx, event, exc, agent=agent)
        except KafkaError:
            raise  # not the record's fault (fenced, broker gone): the whole batch aborts and is redone
        except Exception as exc:
            _undo(overlay, on_error)
            await dead_letter_unexpected(ctx, event, exc, agent=agent)

    return run


def _undo(overlay: Overlay | None, on_error: Callable[[], None] | None) -> None:
    if overlay is not None:
        overlay.rollback()
    if on_error is not None:
        on_error()


# --- the leads stage (hop 1 for leads and deals) -------------------------------------------------


def home(lead_id: str, partitions: int) -> int:
    """The partition of lead-events (and of the lead index) a lead belongs to: the default partitioner's."""
    return (murmur2(lead_id.encode()) & 0x7FFFFFFF) % partitions


def leads_handler(settings: Settings) -> Callable[[Context, Event], Any]:
    lead_topic = lead_events_topic(settings)

    async def handle(ctx: Context, event: Event) -> None:
        msg = event.message
        if msg.topic == lead_topic:  # already validated, on its lead's partition
            await on_lead_event(ctx, parse_internal(LEAD_EVENT, msg.value), kafka_time(event))
            return
        ev: LeadArrived | DealUnrouted
        if msg.topic == settings.topic_leads_new:
            lead = parse(LeadCreated, msg.value, max_bytes=settings.max_payload_bytes)
            pool, _ = resolve_pool(lead, settings.territory_rules, settings.default_pool)
            ev = LeadArrived(pool=pool, lead=lead, received_at=kafka_time(event), origin=origin_of(event))
            lead_id = lead.lead_id
        else:
            deal = parse(DealClosed, msg.value, max_bytes=settings.max_payload_bytes)
            ev = DealUnrouted(deal=deal, origin=origin_of(event), first_seen_at=kafka_time(event))
            lead_id = deal.lead_id
        own = home(lead_id, settings.partitions)
        if own != msg.partition:
            # To the lead's own partition, validated, with its origin; the record keeps its time.
            await ctx.topics.lead_events.send(
                key=lead_id.encode(), value=dump(ev), timestamp_ms=int(msg.timestamp * 1000), partition=own
            )
            return
        await on_lead_event(ctx, ev, kafka_time(event))

    return handle


async def on_lead_event(ctx: Context, ev: Any, now: datetime) -> None:
    """A lead or deal on its lead's partition. The lead log also holds what the Faust runtime put there
    (the same LeadArrived/DealUnrouted, plus LeadIndexed and its housekeeping requests), so a worker
    switched to this runtime carries on from it: an index update is applied, housekeeping requests are
    left to this task's own housekeeping."""
    if isinstance(ev, LeadArrived):
        with logs.bind(lead_id=ev.lead.lead_id):
            await match_deals.on_lead(ctx, ev, now)
    elif isinstance(ev, DealUnrouted):
        with logs.bind(lead_id=ev.deal.lead_id):
            # A deal waits for its lead on the wall clock (from parking), so a worker catching up on
            # lag waits too, as in the Faust runtime.
            await match_deals.on_deal(ctx, ev, datetime.now(UTC))
    elif isinstance(ev, LeadIndexed):
        await match_deals.on_indexed(ctx, ev, now)
    else:
        log.debug("%s request of the Faust runtime left to this task's housekeeping", ev.kind)


_cursors: dict[tuple[int, str], str | None] = {}  # (task context, kind) -> where the last sweep step stopped


def sweep(ctx: Context, kind: str, view: View) -> list[tuple[str, Any]]:
    """The next step of a task's sweep over one kind of row (SWEEP_ROWS at a time, wrapping around)."""
    rows, _cursors[(id(ctx), kind)] = view.scan(_cursors.get((id(ctx), kind)), SWEEP_ROWS)
    return rows


async def leads_housekeeping(ctx: Context, now: datetime) -> None:
    """Parked deals past their wait, index entries past retention: applied in the owner's transaction."""
    wait = timedelta(seconds=ctx.settings.unknown_lead_wait_seconds)
    for lead_id, parked in list(ctx.tables.parked_deals.items()):  # few: deals wait minutes at most
        if parked and any(DealUnrouted.model_validate(p).first_seen_at + wait < now for p in parked):
            await match_deals.on_pending_expired(ctx, PendingExpired(lead_id=lead_id), now)
    horizon = (now - timedelta(days=ctx.settings.index_retention_days)).isoformat()
    rows = sweep(ctx, "lead-index", ctx.tables.lead_index)
    old = [k for k, e in rows if e and e.get("indexed_at") and e["indexed_at"] < horizon]
    for start in range(0, len(old), EXPIRE_BATCH):
        match_deals.on_index_expired(ctx, IndexExpired(lead_ids=old[start : start + EXPIRE_BATCH]), now)


# --- route (hop 2) -------------------------------------------------------------------------------


async def route_housekeeping(ctx: Context, now: datetime) -> None:
    retention = timedelta(days=ctx.settings.ledger_retention_days)
    by_pool: dict[str, list[str]] = {}
    for ledger_key, stored in sweep(ctx, "ledger", ctx.tables.ledger):
        if stored and expired(LedgerEntry.from_dict(stored), now=now, retention=retention):
            pool, lead_id = ledger_key.split(SEP, 1)
            by_pool.setdefault(pool, []).append(lead_id)
    for pool, lead_ids in by_pool.items():
        for start in range(0, len(lead_ids), EXPIRE_BATCH):
            route.on_expire(ctx, LedgerExpired(pool=pool, lead_ids=lead_ids[start : start + EXPIRE_BATCH]), now)


def build(settings: Settings, metrics: Metrics, default_policy: Policy) -> tuple[list[Stage], Callable[[Task], Any]]:
    """The stages and the binder that gives each task its context (and route tasks their pool cache)."""
    caches: dict[int, PoolCache] = {}
    bind_plain = binder(settings, metrics)

    def bind(task: Task) -> Any:
        ctx = bind_plain(task)
        if task.stage.name == "route":
            caches[task.partition] = PoolCache(ctx, default_policy)
        return ctx

    async def route_handle(ctx: Context, event: Event) -> None:
        await route.handle_event(ctx, caches[event.message.partition], event)

    def clear_caches() -> None:
        for cache in caches.values():
            cache.clear()

    stages = [
        Stage(
            "leads",
            (settings.topic_leads_new, settings.topic_deals_closed, lead_events_topic(settings)),
            guarded("leads", leads_handler(settings)),
            table="match",
            housekeeping=leads_housekeeping,
        ),
        Stage(
            "route",
            (pool_events_topic(settings),),
            guarded("route", route_handle, on_error=clear_caches),
            table="route",
            housekeeping=route_housekeeping,
            on_reset=clear_caches,
        ),
        Stage(
            "roster",
            (settings.topic_reps_roster,),
            guarded("ingest_roster", ingest_roster.handle),
            table="rep-pools",
        ),
        Stage("policies", (settings.topic_policies,), guarded("ingest_policies", ingest_policies.handle)),
    ]
    return stages, bind


__all__ = ["build", "home"]
