"""In-memory frames and parsed policies per pool, for the route agent. Tables stay the source of truth.

A frame is built from the tables on first use and then kept current with the same values route writes
to the tables. Anything that can change tables behind route's back (a rebalance: partitions revoked,
assigned, recovered) clears the cache.
"""

from __future__ import annotations

from typing import Any

from routing.frame import PoolFrame
from routing.model import Load, PoolState, Rep
from routing.policy import Policy
from streams.runtime.context import Context
from streams.runtime.tables import key


class PoolCache:
    def __init__(self, ctx: Context, default_policy: Policy) -> None:
        self.ctx = ctx
        self.default_policy = default_policy
        self._frames: dict[str, PoolFrame] = {}
        self._policies: dict[str, tuple[Any, Policy]] = {}
        self.touched: set[str] = set()  # pools decided in since the last route.pool_gauges

    def clear(self, *_: Any, **__: Any) -> None:
        self._frames.clear()
        self._policies.clear()

    def drop(self, pool: str) -> None:
        self._frames.pop(pool, None)

    def drop_policy(self, pool: str) -> None:
        self._policies.pop(pool, None)

    def policy(self, pool: str) -> Policy:
        raw = self.ctx.tables.policies.get(pool)
        if raw is None:
            return self.default_policy
        stamp = (raw.get("id"), raw.get("version"))
        cached = self._policies.get(pool)
        if cached is None or cached[0] != stamp:
            cached = (stamp, Policy.model_validate(raw))  # validated at ingress; cheap and safe to re-check
            self._policies[pool] = cached
        return cached[1]

    def state(self, pool: str) -> PoolState:
        return PoolState.from_dict(self.ctx.tables.pools.get(pool))

    def frame(self, pool: str) -> PoolFrame:
        frame = self._frames.get(pool)
        if frame is None:
            frame = self._build(pool)
            self._frames[pool] = frame
        return frame

    def cached(self, pool: str) -> PoolFrame | None:
        return self._frames.get(pool)

    def _build(self, pool: str) -> PoolFrame:
        t = self.ctx.tables
        state = self.state(pool)
        reps = {}
        for rep_id in state.members:
            profile = t.reps.get(key(pool, rep_id))
            if profile is not None:
                reps[rep_id] = Rep.from_dict(profile)
        loads = {r: Load.from_dict(t.loads.get(key(pool, r))) for r in reps}
        buckets = {r: b for r in reps if (b := t.performance.get(key(pool, r)))}
        models = {r: m for r in reps if (m := t.models.get(key(pool, r)))}
        return PoolFrame(pool, reps, loads, buckets, models, state)
