"""ingest_policies: validate policy updates (compacted, key = pool); only valid ones reach the pool."""

from __future__ import annotations

from typing import Any

from agents.ingest_leads import origin_of
from routing.policy import PolicyError, parse_policy
from schemas.internal import PolicyChanged
from streams.codecs import check_size, dump
from streams.errors import InvalidPolicy, KeyMismatch
from streams.runtime.context import Context
from streams.runtime.loop import Event


async def handle(ctx: Context, event: Event) -> None:
    pool = event.key.decode("utf-8", "replace") if event.key else ""
    if not pool:
        raise KeyMismatch("policy records are keyed by their pool", field="key")
    body: dict[str, Any] | None = None
    if event.value:  # None or empty: a tombstone, the pool goes back to the default policy
        raw = check_size(event.value, ctx.settings.max_payload_bytes)
        try:
            policy = parse_policy(raw)
        except PolicyError as exc:
            raise InvalidPolicy(str(exc), field=exc.field) from None
        if policy.pool is not None and policy.pool != pool:
            raise KeyMismatch(f"policy names pool {policy.pool!r} but is keyed {pool!r}", field="pool")
        body = policy.model_dump(mode="json")
    try:
        change = PolicyChanged(pool=pool, policy=body, origin=origin_of(event))
    except ValueError:
        raise KeyMismatch(f"key {pool!r} is not a valid pool id", field="key") from None
    await ctx.topics.pool_events.send(key=pool.encode(), value=dump(change))
