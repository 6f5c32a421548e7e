"""PoolFrame: one pool's state as columns (numpy), so a decision scores thousands of reps in vector ops.

The frame is built once from the pool's records and then kept current by the writer with set_*()
calls that take the same values written to the tables, so it never drifts from them. Day-dependent
columns (today's counters, performance windows, growth membership) are recomputed when the day changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from routing import availability, performance
from routing.model import Load, PoolState, Rep

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]


def day_keys(now: datetime) -> tuple[str, str, date]:
    """(day, ISO week, date) in UTC: caps and counters roll over at midnight UTC."""
    today = now.astimezone(UTC).date()
    iso = today.isocalendar()
    return today.isoformat(), f"{iso.year}-W{iso.week:02d}", today


def _model_day(model: Mapping[str, Any] | None) -> float:
    day = (model or {}).get("t")
    return float("nan") if day is None else float(day)


class PoolFrame:
    def __init__(
        self,
        pool: str,
        reps: Mapping[str, Rep],
        loads: Mapping[str, Load] | None = None,
        buckets: Mapping[str, Mapping[str, list[float]]] | None = None,
        models: Mapping[str, Mapping[str, Any]] | None = None,
        state: PoolState | None = None,
    ) -> None:
        self.pool = pool
        self.ids: list[str] = sorted(reps)
        self.index = {rep_id: i for i, rep_id in enumerate(self.ids)}
        self.reps = [reps[r] for r in self.ids]
        self.loads = [(loads or {}).get(r) or Load() for r in self.ids]
        self.buckets: list[Mapping[str, list[float]]] = [(buckets or {}).get(r) or {} for r in self.ids]
        self.models: list[Mapping[str, Any] | None] = [(models or {}).get(r) for r in self.ids]
        self.state = state or PoolState(members=tuple(self.ids))
        n = len(self.ids)
        self.n = n
        # An unlimited rep (capacity None) has an infinite limit: never at capacity, and scorers that
        # divide by capacity must handle it (see routing.decide and routing.fairness).
        self.capacity = np.array([np.inf if r.capacity is None else r.capacity for r in self.reps], dtype=np.float64)
        self.weight = np.array([r.weight for r in self.reps], dtype=np.float64)
        self.active = np.array([r.active for r in self.reps], dtype=np.bool_)
        self.available = np.array([r.availability == "available" for r in self.reps], dtype=np.bool_)
        self.scheduled = [i for i, r in enumerate(self.reps) if r.working_hours is not None or r.out_of_office]
        self.states = np.array([availability.state(r) for r in self.reps], dtype=object)
        # Reps that came back at some point (ramp-up): looked at one by one, like the scheduled ones.
        self.returning = [i for i, r in enumerate(self.reps) if r.returned_at is not None or r.out_of_office]
        inf = np.inf
        self.daily_cap = np.array([inf if r.daily_cap is None else r.daily_cap for r in self.reps], dtype=np.float64)
        self.weekly_cap = np.array([inf if r.weekly_cap is None else r.weekly_cap for r in self.reps], dtype=np.float64)
        self.open = np.zeros(n)
        self.value = np.zeros(n)
        self.premium = np.zeros(n)
        self.vpass = np.zeros(n)
        self.day_count = np.zeros(n)
        self.day_value = np.zeros(n)
        self.week_count = np.zeros(n)
        self.won = np.zeros(n)
        self.lost = np.zeros(n)
        self.revenue = np.zeros(n)
        self.base_won = np.array([(m or {}).get("n", (0, 0))[0] for m in self.models], dtype=np.float64)
        self.base_lost = np.array([(m or {}).get("n", (0, 0))[1] for m in self.models], dtype=np.float64)
        # The day each rep's counts are as of (decaying models); nan: a row that never decays.
        self.model_day = np.array([_model_day(m) for m in self.models], dtype=np.float64)
        self.assigned = np.zeros(n)
        tiers = sorted({r.tier for r in self.reps})
        self.tier_ids = np.array([tiers.index(r.tier) for r in self.reps], dtype=np.int64)
        self.tier_count = len(tiers)
        self._features: dict[str, tuple[F64, F64]] = {}
        self._tags: dict[str, F64] = {}
        self._tier_masks: dict[tuple[str, ...], B] = {}
        self._growth: tuple[tuple[Any, ...], B] | None = None
        self._day: tuple[str, str] | None = None
        self._window: tuple[str, int] | None = None
        self._rotation: tuple[tuple[str, ...], npt.NDArray[np.int64]] | None = None
        for i in range(n):
            self._load_columns(i)

    def limit(self, rep_id: str) -> int | None:
        """A member's capacity as a whole number, None when it has no limit (for metrics)."""
        return self.reps[self.index[rep_id]].capacity

    def in_states(self, states: set[str]) -> B:
        """Reps whose availability is one of `states` (away, offline), active ones only."""
        return np.isin(self.states, sorted(states))

    def ramped_capacity(self, now: datetime, seconds: float, start: float) -> F64:
        """Capacity with returning reps ramped up (availability.ramp): a rep with a limit that came back
        less than `seconds` ago has that share of it, at least one lead. The nominal column otherwise."""
        cap = self.capacity
        for i in self.returning:
            share = availability.ramp(self.reps[i], now, seconds, start)
            if share < 1.0 and np.isfinite(cap[i]):
                cap = cap.copy() if cap is self.capacity else cap
                cap[i] = min(cap[i], max(1.0, float(np.floor(cap[i] * share))))
        return cap

    def total_capacity(self) -> int | None:
        """The active reps' capacity together; None when one of them has no limit."""
        active = self.capacity[self.active]
        return None if np.isinf(active).any() else int(active.sum())

    # keeping current -------------------------------------------------------------------------
    def _load_columns(self, i: int) -> None:
        load = self.loads[i]
        self.open[i], self.value[i], self.premium[i], self.vpass[i] = load.open, load.value, load.premium, load.vpass
        self.assigned[i] = load.assigned
        if self._day is not None:
            self.day_count[i], self.day_value[i], self.week_count[i] = load.counts_on(*self._day)

    def set_load(self, rep_id: str, load: Load) -> None:
        i = self.index.get(rep_id)
        if i is not None:
            self.loads[i] = load
            self._load_columns(i)

    def set_buckets(self, rep_id: str, buckets: Mapping[str, list[float]]) -> None:
        i = self.index.get(rep_id)
        if i is not None:
            self.buckets[i] = buckets
            self._window = None  # recomputed lazily on the next decision

    def set_model(self, rep_id: str, model: Mapping[str, Any]) -> None:
        i = self.index.get(rep_id)
        if i is None:
            return
        self.models[i] = model
        self.base_won[i], self.base_lost[i] = model.get("n", (0, 0))
        self.model_day[i] = _model_day(model)
        per = model.get("f") or {}
        for feature, (won, lost) in self._features.items():
            won[i], lost[i] = per.get(feature, (0, 0))

    def set_state(self, state: PoolState) -> None:
        self.state = state

    # day-dependent columns --------------------------------------------------------------------
    def refresh(self, now: datetime, window_days: int) -> None:
        today, week, _ = day_keys(now)
        if self._day != (today, week):
            self._day = (today, week)
            for i in range(self.n):
                self._load_columns(i)
            self._growth = None
        if self._window != (today, window_days):
            self._window = (today, window_days)
            for i, buckets in enumerate(self.buckets):
                w = performance.window(buckets, window_days, now)
                self.won[i], self.lost[i], self.revenue[i] = w.won, w.lost, w.revenue

    def growth_members(self, now: datetime, tiers: list[str], new_rep_days: int) -> B:
        key = (day_keys(now)[0], tuple(tiers), new_rep_days)
        if self._growth is None or self._growth[0] != key:
            today = day_keys(now)[2]
            flags = [
                r.tier in tiers or (r.hired_at is not None and (today - r.hired_at).days < new_rep_days)
                for r in self.reps
            ]
            self._growth = (key, np.array(flags, dtype=np.bool_))
        return self._growth[1]

    def tag_levels(self, tag: str) -> F64:
        levels = self._tags.get(tag)
        if levels is None:
            levels = np.array([r.tags.get(tag, 0) for r in self.reps], dtype=np.float64)
            self._tags[tag] = levels
        return levels

    def tier_mask(self, tiers: list[str]) -> B:
        """Reps whose tier is one of `tiers` (cached: policies name few tier sets)."""
        key = tuple(sorted(tiers))
        mask = self._tier_masks.get(key)
        if mask is None:
            mask = np.array([r.tier in key for r in self.reps], dtype=np.bool_)
            self._tier_masks[key] = mask
        return mask

    def feature_counts(self, feature: str) -> tuple[F64, F64]:
        counts = self._features.get(feature)
        if counts is None:
            per = [((m or {}).get("f") or {}).get(feature, (0, 0)) for m in self.models]
            counts = (np.array([c[0] for c in per], dtype=np.float64), np.array([c[1] for c in per], dtype=np.float64))
            self._features[feature] = counts
        return counts

    def rotation_order(self) -> npt.NDArray[np.int64]:
        """Each rep's place in the roster order: explicit `position` first (lower first), then the order
        the reps joined the pool (state.members); never the ids' sort order. Reps the state does not
        list come last, by id. Cached per member list (positions change only with a rebuilt frame)."""
        members = self.state.members
        if self._rotation is None or self._rotation[0] != members:
            joined = {rep_id: k for k, rep_id in enumerate(members)}
            keys = [
                (r.position is None, r.position or 0, joined.get(r.rep_id, len(members)), i)
                for i, r in enumerate(self.reps)
            ]
            place = np.empty(self.n, dtype=np.int64)
            place[[k[-1] for k in sorted(keys)]] = np.arange(self.n)
            self._rotation = (members, place)
        return self._rotation[1]

    def rotation_ids(self) -> list[str]:
        """The members in roster order (the order rotation goes round in)."""
        return [self.ids[i] for i in np.argsort(self.rotation_order())]

    def rotation_rank(self) -> npt.NDArray[np.int64]:
        """Position of each rep in rotation order: reps after the cursor first, then wrapping around. A
        cursor that left the pool starts from the top (stride positions keep the shares fair)."""
        place = self.rotation_order()
        i = self.index.get(self.state.cursor) if self.state.cursor is not None else None
        start = 0 if i is None else int(place[i]) + 1
        return (place - start) % max(1, self.n)
