"""sweep: a timer that finds expired ledger entries and parked deals and asks their owners to drop them.

Tables can only be changed from inside their own partition's stream, so the timer only reads local
state and sends housekeeping events; the owning agent applies them in log order.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import faust

from routing.ledger import LedgerEntry, expired
from schemas.internal import DealUnrouted, IndexExpired, LedgerExpired, PendingExpired
from streams.codecs import dump
from streams.context import Context
from streams.tables import SEP

log = logging.getLogger("leadrelay.sweep")
BATCH = 500


async def sweep_once(ctx: Context, now: datetime) -> int:
    """Send one housekeeping event per expired item (batched per pool); return how many were found."""
    retention = timedelta(days=ctx.settings.ledger_retention_days)
    by_pool: dict[str, list[str]] = defaultdict(list)
    for ledger_key, stored in list(ctx.tables.ledger.items()):
        if stored and expired(LedgerEntry.from_dict(stored), now=now, retention=retention):
            pool, lead_id = ledger_key.split(SEP, 1)
            by_pool[pool].append(lead_id)
    for pool, lead_ids in by_pool.items():
        for start in range(0, len(lead_ids), BATCH):
            batch = LedgerExpired(pool=pool, lead_ids=lead_ids[start : start + BATCH])
            await ctx.topics.pool_events.send(key=pool.encode(), value=dump(batch))
    wait = timedelta(seconds=ctx.settings.unknown_lead_wait_seconds)
    stale = 0
    for lead_id, parked in list(ctx.tables.parked_deals.items()):
        if parked and any(DealUnrouted.model_validate(p).first_seen_at + wait < now for p in parked):
            await ctx.topics.lead_events.send(key=lead_id.encode(), value=dump(PendingExpired(lead_id=lead_id)))
            stale += 1
    # Index entries are keyed by lead, so each expires through its own partition (one event per lead).
    horizon = (now - timedelta(days=ctx.settings.index_retention_days)).isoformat()
    old = [
        lead_id
        for lead_id, e in list(ctx.tables.lead_index.items())
        if e and e.get("indexed_at") and e["indexed_at"] < horizon
    ]
    for lead_id in old:
        await ctx.topics.lead_events.send(key=lead_id.encode(), value=dump(IndexExpired(lead_ids=[lead_id])))
    return stale + len(old) + sum(len(v) for v in by_pool.values())


def register(app: faust.App, ctx: Context) -> Any:
    @app.timer(interval=ctx.settings.housekeeping_interval_seconds, name="sweep")
    async def sweep() -> None:
        found = await sweep_once(ctx, datetime.now(UTC))
        if found:
            log.info("housekeeping: %d expired items handed to their owners", found)

    return sweep
