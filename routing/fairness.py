"""Fairness: value received against a fair share by capacity and weight, and the pool's Gini."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


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
