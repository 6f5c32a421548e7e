"""The stages: which handler (agents/*) reads which topics and keeps which table.

Two hops for a lead or a deal:

  leads.new, leads.updated, deals.closed, leads.activity, leads.claims
      ──> leads (key lead_id; lead index) ──> pool-events ──> route
  reps.roster ──> roster (rep -> pools) ──> pool-events          routing.policies ──> policies ──> pool-events

One way back, for an update that moves a lead (docs/lifecycle.md): route sends the lead to its new pool's
log (pool-events) and its new pool to the index (lead-events, which only writes the index: no further hop).

Each stage runs as one task per partition (streams/runtime/loop.py); its handler sees a context bound to
that task (streams/runtime/context.py), every record through guarded() (streams/runtime/boundary.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from agents import ingest_policies, ingest_roster, match_deals, route
from routing.policy import Policy
from streams.kafka.topics import lead_events_topic, pool_events_topic
from streams.runtime.boundary import guarded
from streams.runtime.context import Context, binder
from streams.runtime.loop import Event, Stage, Task
from streams.runtime.poolcache import PoolCache
from streams.settings import Settings
from streams.web.metrics import Metrics


def build(
    settings: Settings, metrics: Metrics, default_policy: Policy
) -> tuple[list[Stage], Callable[[Task], Context]]:
    """The stages and the binder that gives each task its context (and route tasks their pool cache)."""
    caches: dict[int, PoolCache] = {}
    bind_plain = binder(settings, metrics)

    def bind(task: Task) -> Context:
        ctx = bind_plain(task)
        if task.stage.name == "route":
            caches[task.partition] = PoolCache(ctx, default_policy)
        return ctx

    async def route_handle(ctx: Context, event: Event) -> None:
        await route.handle_event(ctx, caches[event.message.partition], event)

    def route_gauges(ctx: Context, partition: int) -> None:
        route.pool_gauges(ctx, caches[partition])

    async def route_housekeeping(ctx: Context, now: datetime) -> None:
        await route.housekeeping(ctx, caches[ctx.partition], now)

    def clear_caches() -> None:
        for cache in caches.values():
            cache.clear()

    stages = [
        Stage(
            "leads",
            (
                settings.topic_leads_new,
                settings.topic_leads_updated,
                settings.topic_deals_closed,
                settings.topic_lead_activity,
                settings.topic_claims,
                lead_events_topic(settings),
            ),
            guarded("leads", match_deals.handler(settings)),
            table="match",
            housekeeping=match_deals.housekeeping,
        ),
        Stage(
            "route",
            (pool_events_topic(settings),),
            guarded("route", route_handle, on_error=clear_caches),
            table="route",
            housekeeping=route_housekeeping,
            on_reset=clear_caches,
            after_batch=route_gauges,
        ),
        Stage(
            "roster", (settings.topic_reps_roster,), guarded("ingest_roster", ingest_roster.handle), table="rep-pools"
        ),
        Stage("policies", (settings.topic_policies,), guarded("ingest_policies", ingest_policies.handle)),
    ]
    return stages, bind
