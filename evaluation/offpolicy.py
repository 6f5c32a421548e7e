"""Off-policy estimate of a candidate policy's conversion from a logged history: doubly robust, bootstrapped.

The log holds, per lead, its segment, the rep (arm) the historical policy gave it and whether it was
won; the candidate's choice for the same lead comes from a replay. leadrelay's policies are
deterministic given the lead and the pool's state (even exploration and experiment variants are
seeded by the lead id), so the logged rep had propensity 1 and every other rep 0. The doubly robust
estimate with those propensities is, per lead:

    DR = m(s, candidate) + [candidate == historical] * (won - m(s, historical))

that is, the observed outcome where the candidate agrees with history and the outcome model's
prediction where it does not. m(segment, rep) is P(won) with Beta shrinkage, cell -> (rep rate +
segment effect) -> pool rate, fit on the log. The estimate is the mean over leads; its interval a
percentile bootstrap over leads that refits the model on each resample (seeded: same inputs, same
numbers). The interval covers sampling noise, not model error: where the candidate disagrees, the
estimate is only as good as the model, which assumes that a rep's outcome depends on the lead
through its segment alone (not on load, time or what the rep learned), and that history gave each
rep a fair sample of each segment (true for rotation and load balancing, not for a policy that
already sorted leads by skill). `weak` says when most of the estimate rests on thin model cells.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
THIN_CELL = 10  # a (segment, rep) cell with fewer logged leads leans on its prior more than on its data
WEAK_THIN = 0.2  # weak when more than this share of the leads is predicted from thin cells, ...
WEAK_LEADS = 30  # ... or when there are fewer leads than this


@dataclass(frozen=True)
class Estimate:
    n: int  # leads with a historical rep and a known outcome
    matched: int  # of them, where the candidate chose the historical rep
    historical: float  # observed conversion of those leads
    historical_low: float
    historical_high: float
    candidate: float  # doubly robust estimate of the candidate's conversion on the same leads
    candidate_low: float
    candidate_high: float
    diff: float  # candidate - historical
    diff_low: float
    diff_high: float
    direct: float  # the outcome model alone, on every lead
    thin: float  # share of the leads predicted from (segment, rep) cells with fewer than THIN_CELL leads
    resamples: int
    alpha: float
    weak: bool
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def _fit(seg: I64, arm: I64, won: F64, w: F64, shape: tuple[int, int], shrink: float) -> tuple[F64, F64]:
    """(m, n): P(won) and the weighted number of logged leads, both segments x arms."""
    segments, arms = shape
    total, wins = w.sum(), (w * won).sum()
    p0 = (wins + 1.0) / (total + 2.0)
    n_a, k_a = np.bincount(arm, w, arms), np.bincount(arm, w * won, arms)
    n_s, k_s = np.bincount(seg, w, segments), np.bincount(seg, w * won, segments)
    p_a = (k_a + shrink * p0) / (n_a + shrink)
    p_s = (k_s + shrink * p0) / (n_s + shrink)
    cell = seg * arms + arm
    n_sa = np.bincount(cell, w, segments * arms).reshape(shape)
    k_sa = np.bincount(cell, w * won, segments * arms).reshape(shape)
    prior = np.clip(p_a[None, :] + p_s[:, None] - p0, 1e-3, 1 - 1e-3)
    m: F64 = (k_sa + shrink * prior) / (n_sa + shrink)
    return m, n_sa.astype(np.float64)


def _values(
    seg: I64, arm: I64, chosen: I64, won: F64, w: F64, shape: tuple[int, int], shrink: float
) -> tuple[float, float, float, float]:
    """(historical, doubly robust, direct, share of leads on thin cells) under lead weights w."""
    m, n_sa = _fit(seg, arm, won, w, shape, shrink)
    has = chosen >= 0
    at = np.maximum(chosen, 0)
    mc = np.where(has, m[seg, at], 0.0)
    agree = chosen == arm
    dr_each = np.where(agree, won, mc)
    thin = (~agree) & has & (n_sa[seg, at] < THIN_CELL)
    total = w.sum()
    return (
        float((w * won).sum() / total),
        float((w * dr_each).sum() / total),
        float((w * mc).sum() / total),
        float((w * thin).sum() / total),
    )


def estimate(
    segment: list[str],
    logged: list[str],
    chosen: list[str | None],
    won: list[bool],
    *,
    shrink: float = 8.0,
    resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Estimate:
    """The candidate's conversion on the logged leads. Inputs are per lead, aligned: its segment (include
    the pool in it), the historical rep, the candidate's rep (None: nobody, which counts as not won),
    and whether it was won."""
    n = len(logged)
    if not (len(segment) == len(chosen) == len(won) == n):
        raise ValueError("segment, logged, chosen and won must be aligned, one entry per lead")
    if n == 0:
        nan = math.nan
        return Estimate(0, 0, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, 0.0, 0, alpha, True, "no leads")
    seg_ids = {s: i for i, s in enumerate(sorted(set(segment)))}
    arm_ids = {a: i for i, a in enumerate(sorted(set(logged) | {c for c in chosen if c is not None}))}
    seg = np.array([seg_ids[s] for s in segment], dtype=np.int64)
    arm = np.array([arm_ids[a] for a in logged], dtype=np.int64)
    pick = np.array([-1 if c is None else arm_ids[c] for c in chosen], dtype=np.int64)
    y = np.array(won, dtype=np.float64)
    shape = (len(seg_ids), len(arm_ids))
    hist, dr, dm, thin = _values(seg, arm, pick, y, np.ones(n), shape, shrink)
    rng = np.random.default_rng(seed)
    draws = np.empty((resamples, 2))
    for b in range(resamples):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        h, d, *_ = _values(seg, arm, pick, y, w, shape, shrink)
        draws[b] = (h, d)
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    h_lo, h_hi = np.percentile(draws[:, 0], [lo, hi])
    c_lo, c_hi = np.percentile(draws[:, 1], [lo, hi])
    d_lo, d_hi = np.percentile(draws[:, 1] - draws[:, 0], [lo, hi])
    matched = int((pick == arm).sum())
    reasons = []
    if n < WEAK_LEADS:
        reasons.append(f"only {n} leads with an outcome")
    if thin > WEAK_THIN:
        reasons.append(
            f"{thin:.0%} of the leads go to reps with fewer than {THIN_CELL} leads of their segment in history"
        )
    why = (
        "; ".join(reasons) + ": the estimate rests on the model's priors"
        if reasons
        else f"{matched / n:.0%} observed, {1 - matched / n - thin:.0%} from well-supported model cells"
    )
    return Estimate(
        n=n,
        matched=matched,
        historical=hist,
        historical_low=float(h_lo),
        historical_high=float(h_hi),
        candidate=dr,
        candidate_low=float(c_lo),
        candidate_high=float(c_hi),
        diff=dr - hist,
        diff_low=float(d_lo),
        diff_high=float(d_hi),
        direct=dm,
        thin=thin,
        resamples=resamples,
        alpha=alpha,
        weak=bool(reasons),
        why=why,
    )
