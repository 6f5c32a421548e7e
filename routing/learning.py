"""Predicted conversion per (lead, rep), learned online from closed deals.

Per rep: won/lost counts overall and per lead feature value ("industry=saas"). The prediction is a
naive-Bayes style log-odds sum: the rep's smoothed base rate, adjusted by how this rep does on each
of the lead's feature values relative to its base rate, with Beta priors shrinking thin evidence.
Deterministic, cheap to update (one value per rep), and explainable (one delta per feature).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from schemas.events import LeadCreated

FEATURES = ("industry", "product", "country", "source", "language")
MAX_KEYS = 200  # feature values kept per rep; the rarest beyond this are dropped


def features(lead: LeadCreated, value_tier: str | None) -> list[str]:
    out = [f"{name}={getattr(lead, name)}" for name in FEATURES if getattr(lead, name) is not None]
    if value_tier:
        out.append(f"tier={value_tier}")
    return out


def update(model: Mapping[str, Any] | None, feats: list[str], won: bool) -> dict[str, Any]:
    """The rep's model after one closed deal of a lead with these features."""
    base = list((model or {}).get("n", [0, 0]))
    per = {k: list(v) for k, v in ((model or {}).get("f") or {}).items()}
    idx = 0 if won else 1
    base[idx] += 1
    for f in feats:
        counts = per.setdefault(f, [0, 0])
        counts[idx] += 1
    if len(per) > MAX_KEYS:
        per = dict(sorted(per.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:MAX_KEYS])
    return {"n": base, "f": per}


def _logit(won: float, lost: float, prior_won: float, prior_lost: float) -> float:
    return math.log((won + prior_won) / (lost + prior_lost))


def predict(model: Mapping[str, Any] | None, feats: list[str], prior_won: float, prior_lost: float) -> float:
    """Probability that this rep wins this lead."""
    if not model:
        return prior_won / (prior_won + prior_lost)
    won, lost = model.get("n", (0, 0))
    base = _logit(won, lost, prior_won, prior_lost)
    score = base
    per = model.get("f") or {}
    for f in feats:
        counts = per.get(f)
        if counts:
            # Shrink the feature's rate toward the rep's own base rate (its prior is the base rate).
            rate = (won + prior_won) / (won + lost + prior_won + prior_lost)
            strength = 4.0
            score += _logit(counts[0], counts[1], rate * strength, (1 - rate) * strength) - base
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, score))))
