"""ingest_roster: fan each rep's profile out to every pool it joins or leaves."""

from __future__ import annotations

from schemas.events import RepUpdated
from schemas.internal import RepChanged
from streams.codecs import dump, parse
from streams.errors import KeyMismatch
from streams.runtime.context import Context
from streams.runtime.loop import Event


async def handle(ctx: Context, event: Event) -> None:
    key = event.key.decode("utf-8", "replace") if event.key else None
    profile: RepUpdated | None = None
    if event.value:  # None or empty: a tombstone deleting the rep from every pool
        profile = parse(RepUpdated, event.value, max_bytes=ctx.settings.max_payload_bytes)
        if key != profile.rep_id:
            # Compaction keeps the newest record per key; a wrong key would keep stale profiles alive.
            raise KeyMismatch(f"key {key!r} is not the rep_id", field="rep_id")
    elif not key:
        raise KeyMismatch("tombstone without a key", field="key")
    rep_id = profile.rep_id if profile else str(key)
    before = set(ctx.tables.rep_pools.get(rep_id) or [])
    after = set(profile.pools) if profile else set()
    for pool in sorted(before | after):
        change = RepChanged(pool=pool, rep_id=rep_id, profile=profile if pool in after else None)
        await ctx.topics.pool_events.send(key=pool.encode(), value=dump(change))
    if after:
        ctx.tables.rep_pools[rep_id] = sorted(after)
    elif before:
        del ctx.tables.rep_pools[rep_id]
