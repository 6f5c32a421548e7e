"""Fairness: value received against a fair share by capacity and weight, the pool's Gini, and bounds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from routing.policy import Bounds

Array = npt.NDArray[np.float64]


class PoolColumns(Protocol):
    """The pool columns the bounds read (a PoolFrame has them)."""

    capacity: Array
    weight: Array
    value: Array
    assigned: Array
    active: npt.NDArray[np.bool_]


def fair_shares(capacity: Array, weight: Array) -> Array:
    """Each rep's fair fraction of the pool's value: proportional to capacity x weight.

    A rep without a limit (capacity inf) counts with the largest limit in the pool, so it is entitled to
    at least as much as any limited rep; when nobody has a limit, shares follow the weights.
    """
    limited = capacity[np.isfinite(capacity)]
    largest = float(limited.max()) if len(limited) and limited.max() > 0 else 1.0
    entitlement = np.where(np.isfinite(capacity), capacity, largest) * weight
    total = float(entitlement.sum())
    if total <= 0:
        return np.full(len(capacity), 1.0 / max(1, len(capacity)))
    return entitlement / total


def deficit(received: Array, shares: Array) -> Array:
    """Fair value minus value received (positive: under-served), in units of the pool's total value."""
    total = float(received.sum())
    if total <= 0:
        return np.zeros(len(received))
    return shares - received / total


def gini(values: Sequence[float] | Array) -> float:
    """0 = everybody received the same, 1 = one rep received everything."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = len(x)
    if n == 0 or x.sum() <= 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float((2 * (ranks * x).sum()) / (n * x.sum()) - (n + 1) / n)


@dataclass(frozen=True)
class Choice:
    """The rep a bounded selector took (a frame index), and what the explanation should say."""

    rep: int
    note: str | None


def _active_shares(capacity: Array, weight: Array, active: npt.NDArray[np.bool_]) -> Array:
    share = np.zeros(len(capacity))
    if active.any():
        share[active] = fair_shares(capacity[active], weight[active])
    return share


def within_bounds(
    candidates: Sequence[int],
    value: float,
    bounds: Bounds,
    pool: PoolColumns,
    growth: npt.NDArray[np.bool_] | None,
    ids: Sequence[str],
) -> Choice:
    """The first candidate (best first) that keeps every bound after taking a lead worth `value`.

    - max_value_ratio: value received + value <= ratio x fair share x (pool value + value)
      + slack_leads x the pool's mean lead value;
    - min_growth_ratio: while growth reps hold less than ratio x their fair share of the pool's leads,
      only growth reps qualify (when one of them is a candidate within the other bounds);
    - max_gini: the Gini of value per fair share may not pass max_gini (or grow, if it already has).
    With nobody within the ratio bound, the candidate furthest below its share is taken, and said so.
    """
    cand = np.asarray(candidates, dtype=np.int64)
    share = _active_shares(pool.capacity, pool.weight, pool.active)
    total = float(pool.value[pool.active].sum())
    assigned = float(pool.assigned[pool.active].sum())
    mean = (total + value) / (assigned + 1)
    ok = np.ones(len(cand), dtype=np.bool_)
    if bounds.max_value_ratio is not None:
        limit = bounds.max_value_ratio * share[cand] * (total + value) + bounds.slack_leads * mean
        ok = pool.value[cand] + value <= limit + 1e-9
    if not ok.any():
        after = (pool.value[cand] + value) / np.maximum(share[cand], 1e-12)
        rep = int(cand[int(np.argmin(after))])
        return Choice(
            rep,
            f"fairness bound max_value_ratio: every eligible rep is at its bound; took {ids[rep]}, "
            "the furthest below its fair share",
        )
    why = "max_value_ratio"
    warm = assigned >= bounds.min_leads
    if warm and bounds.min_growth_ratio is not None and growth is not None and (growth & pool.active).any():
        members = growth & pool.active
        held = float(pool.assigned[members].sum()) / max(assigned, 1.0)
        if held < bounds.min_growth_ratio * float(share[members].sum()) and (ok & growth[cand]).any():
            if not growth[cand[0]] and ok[0]:
                why = "min_growth_ratio"
            ok &= growth[cand]
    if warm and bounds.max_gini is not None:
        ok, why = _gini_ok(cand, ok, value, bounds.max_gini, share, pool, why)
    first = int(np.flatnonzero(ok)[0]) if ok.any() else 0
    rep = int(cand[first])
    if first == 0:
        return Choice(rep, None)
    return Choice(rep, f"fairness bound {why} changed the choice: {ids[int(cand[0])]} would break it, took {ids[rep]}")


def _gini_ok(
    cand: npt.NDArray[np.int64],
    ok: npt.NDArray[np.bool_],
    value: float,
    max_gini: float,
    share: Array,
    pool: PoolColumns,
    why: str,
) -> tuple[npt.NDArray[np.bool_], str]:
    """Keep the first candidate (in order) whose Gini after the lead is within the bound."""
    members = pool.active & (share > 0)
    per = np.where(members, pool.value / np.maximum(share, 1e-12), 0.0)
    allowed = max(max_gini, gini(per[members]))
    out = np.zeros(len(cand), dtype=np.bool_)
    for k in np.flatnonzero(ok):
        i = int(cand[k])
        trial = per.copy()
        trial[i] += value / max(float(share[i]), 1e-12)
        if gini(trial[members]) <= allowed + 1e-12:
            out[k] = True
            break
    if not out.any():
        return ok, why  # no candidate keeps the Gini: the other bounds still choose
    if ok[0] and not out[0]:
        why = "max_gini"
    return out, why
