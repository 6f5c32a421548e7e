"""The calibrated pair model: P(won | lead, rep) from decayed per-rep counts, shrunk rep -> tier -> pool.

Why this and not a library model: the state must be one small JSON row per (pool, rep) that a changelog
restores exactly, updated by one closed deal at a time in event time, and read for a whole pool in a
few vector operations per decision. A Beta-Binomial hierarchy over those rows does all of that:

- the pool's rate p0 (Beta prior `prior_won`/`prior_lost`), a tier's rate shrunk toward p0 and a
  rep's base rate shrunk toward its tier, each by `shrink` pseudo-deals;
- for each of the lead's feature values ("industry=saas", "company_size=250-999", "load=75-90"), the
  pool's and the tier's log-odds shift on that value, and the rep's own rate on it shrunk (by
  `feature_shrink` pseudo-deals) toward the rep's base rate plus the tier's shift plus what a declared
  tag naming the value is worth (learned from the pool's deals with and without such a tag, starting
  from `tag_prior` per level);
- P(won) = sigmoid(rep base log-odds + the sum of the rep's shifts), an additive logistic model whose
  every term is a smoothed rate: a new rep starts from its tier and its tags, a rep with evidence
  from its own deals;
- counts decay with a half-life of event time (the rows' day "t"), so a skill that changes is
  unlearned and a junior's improvement shows.

Uncertainty: the posterior is read as Beta(p n, (1 - p) n) where n is the rep's smallest evidence over
the lead's feature values plus the prior's pseudo-deals: wide for what the rep was never seen doing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from routing.frame import PoolFrame
from routing.learning import event_day, load_band
from routing.policy import Learning

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_EPS = 1e-9


@dataclass(frozen=True)
class Posterior:
    """Per eligible rep (positions of `idx`): mean P(won), effective evidence, own decayed deals."""

    p: F64
    n: F64
    deals: F64

    @property
    def sd(self) -> F64:
        out: F64 = np.sqrt(self.p * (1 - self.p) / (self.n + 1))
        return out


def _logit(p: F64) -> F64:
    q = np.clip(p, _EPS, 1 - _EPS)
    out: F64 = np.log(q / (1 - q))
    return out


def _sigmoid(x: F64) -> F64:
    out: F64 = 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))
    return out


def decay_factors(frame: PoolFrame, cfg: Learning, now: datetime) -> F64:
    """Each rep's weight on its stored counts at `now` (rows without a day never decay)."""
    if cfg.half_life_days is None:
        return np.ones(frame.n)
    age = np.maximum(0.0, event_day(now) - frame.model_day)
    out: F64 = np.where(np.isnan(age), 1.0, 0.5 ** (np.nan_to_num(age) / cfg.half_life_days))
    return out


@dataclass(frozen=True)
class _Levels:
    """The hierarchy's base rates for one pool at one time."""

    d: F64  # decay per rep
    g: I64  # tier id per rep
    p0: float  # pool
    tier_logit: F64  # per tier
    rep_logit: F64  # per rep
    evidence: F64  # own decayed deals per rep


def _levels(frame: PoolFrame, cfg: Learning, now: datetime) -> _Levels:
    d = decay_factors(frame, cfg, now)
    won, lost, g = frame.base_won * d, frame.base_lost * d, frame.tier_ids
    p0 = (won.sum() + cfg.prior_won) / (won.sum() + lost.sum() + cfg.prior_won + cfg.prior_lost)
    tw = np.bincount(g, won, frame.tier_count)
    tl = np.bincount(g, lost, frame.tier_count)
    pt = (tw + cfg.shrink * p0) / (tw + tl + cfg.shrink)
    pr = (won + cfg.shrink * pt[g]) / (won + lost + cfg.shrink)
    return _Levels(d, g, float(p0), _logit(pt), _logit(pr), won + lost)


def tag_effects(frame: PoolFrame, lv: _Levels, cfg: Learning) -> F64:
    """Log-odds a declared tag of level 0..5 adds to a rep's prior on the value it names: learned from
    the pool's deals ("tag=L" features, pooled over reps and shrunk toward tag_prior x L), or fixed."""
    fixed: F64 = cfg.tag_prior * np.arange(6, dtype=np.float64)
    if not cfg.learn_tags or cfg.tag_prior == 0:
        return fixed
    k = cfg.feature_shrink
    w0, l0 = (float((c * lv.d).sum()) for c in frame.feature_counts("tag=0"))
    base = float(_logit(np.array([(w0 + k * lv.p0) / (w0 + l0 + k)]))[0])
    out = np.zeros(6)
    for level in range(1, 6):
        won, lost = (float((c * lv.d).sum()) for c in frame.feature_counts(f"tag={level}"))
        prior = float(_sigmoid(np.array([base + fixed[level]]))[0])
        out[level] = float(_logit(np.array([(won + k * prior) / (won + lost + k)]))[0]) - base
    return out


def _shift(frame: PoolFrame, feature: str, lv: _Levels, cfg: Learning, tags: F64 | None = None) -> tuple[F64, F64]:
    """(each rep's log-odds shift on this feature value, each rep's decayed deals with it)."""
    fw, fl = frame.feature_counts(feature)
    fw, fl = fw * lv.d, fl * lv.d
    k = cfg.feature_shrink
    logit0 = float(_logit(np.array([lv.p0]))[0])
    pool_rate = (fw.sum() + k * lv.p0) / (fw.sum() + fl.sum() + k)
    pool_shift = float(_logit(np.array([pool_rate]))[0]) - logit0
    tw = np.bincount(lv.g, fw, frame.tier_count)
    tl = np.bincount(lv.g, fl, frame.tier_count)
    tier_rate = (tw + k * _sigmoid(lv.tier_logit + pool_shift)) / (tw + tl + k)
    tier_shift = _logit(tier_rate) - lv.tier_logit
    prior = lv.rep_logit + tier_shift[lv.g]
    if tags is not None and "=" in feature:
        name, value = feature.split("=", 1)
        levels = np.maximum(frame.tag_levels(value), frame.tag_levels(f"{name}:{value}"))
        prior = prior + tags[np.clip(levels, 0, 5).astype(np.int64)]
    rate = (fw + k * _sigmoid(prior)) / (fw + fl + k)
    return _logit(rate) - lv.rep_logit, fw + fl


def load_bands(frame: PoolFrame) -> list[str]:
    """Each rep's load band now (the feature its next lead would be learned under)."""
    return [load_band(float(o), float(c)) for o, c in zip(frame.open, frame.capacity, strict=True)]


def posterior(frame: PoolFrame, idx: I64, feats: list[str], cfg: Learning, now: datetime) -> Posterior:
    """P(won) for this lead and each eligible rep, with its evidence. Feature strings are the lead's
    (routing.learning.features); with `load_bands` each rep's current load band is added per rep."""
    lv = _levels(frame, cfg, now)
    score = lv.rep_logit.copy()
    n = lv.evidence + cfg.shrink
    tags = tag_effects(frame, lv, cfg) if cfg.tag_prior > 0 else None
    for feature in feats:
        shift, seen = _shift(frame, feature, lv, cfg, tags)
        score += shift
        n = np.minimum(n, seen + cfg.feature_shrink)
    if cfg.load_bands:
        bands = np.array(load_bands(frame))
        for band in sorted(set(bands[idx].tolist())):
            shift, _ = _shift(frame, band, lv, cfg)
            score += np.where(bands == band, shift, 0.0)
    return Posterior(_sigmoid(score)[idx], n[idx], lv.evidence[idx])
