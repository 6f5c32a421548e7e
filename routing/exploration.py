"""Exploration over the pair model's posterior: Thompson sampling or UCB within a budget, seeded by the lead."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from routing.ids import unit_hash
from routing.pairmodel import Posterior
from routing.policy import Exploration

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def rng_for(*parts: str) -> np.random.Generator:
    """A generator seeded only by its inputs (a lead id and attempt): a decision replays identically."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).digest()
    return np.random.default_rng(int.from_bytes(digest, "big"))


@dataclass(frozen=True)
class Explored:
    pos: int  # position (into the eligible reps) to try instead of the best by expected value
    best: int
    why: str


def explore(
    x: Exploration, total: F64, order: I64, post: Posterior, scale: F64, cost: F64, lead_id: str, attempt: int
) -> Explored | None:
    """The rep to try, or None to take the best by expected value.

    Only reps whose expected value is within `budget` of the best take part (the price of exploring
    one lead is bounded); among them reps with fewer than `min_deals` closed deals go first (new reps
    are explored first); the pick is the highest sampled (Thompson) or optimistic (UCB) value."""
    if len(order) < 2 or unit_hash("explore", lead_id) >= x.share:
        return None
    best = int(order[0])
    top = float(total[best])
    allowed = total >= top - x.budget * abs(top) - 1e-12
    if np.count_nonzero(allowed) < 2:
        return None
    if x.method == "thompson":
        rng = rng_for("explore", lead_id, str(attempt))
        theta = rng.beta(np.maximum(post.p * post.n, 1e-3), np.maximum((1 - post.p) * post.n, 1e-3))
    else:
        theta = post.p + x.ucb_width * post.sd
    sampled = scale * theta - cost
    fresh = allowed & (post.deals < x.min_deals)
    candidates = fresh if fresh.any() else allowed
    pos = int(np.argmax(np.where(candidates, sampled, -np.inf)))
    if pos == best:
        return None
    why = "new rep, few closed deals" if fresh.any() else f"{x.method} sample"
    return Explored(pos, best, why)
