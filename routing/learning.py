"""Predicted conversion per (lead, rep), learned online from closed deals: the per-rep rows.

Per rep: won/lost counts overall and per lead feature value ("industry=saas"). The legacy `predict`
is a naive-Bayes style log-odds sum: the rep's smoothed base rate, adjusted by how this rep does on
each of the lead's feature values relative to its base rate, with Beta priors shrinking thin evidence.
The calibrated, hierarchical model (routing/pairmodel.py) reads the same rows; with a half-life the
counts decay by event time ("t" is the day the counts are as of), so the model follows drift.
Deterministic, cheap to update (one value per rep), and explainable (one delta per feature).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from schemas.events import LeadCreated

FEATURES = ("industry", "product", "country", "source", "language")
MAX_KEYS = 200  # feature values kept per rep; the rarest beyond this are dropped
LOAD_BANDS = (0.5, 0.75, 0.9)  # open / capacity when the lead was assigned: "load=<50", "load=50-75", ...
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def features(
    lead: LeadCreated, value_tier: str | None, spec: Sequence[str] | None = None, size_bands: Sequence[int] = ()
) -> list[str]:
    """The lead's feature values: the legacy fixed list, or the policy's `learning.features`."""
    if spec is None:
        out = [f"{name}={getattr(lead, name)}" for name in FEATURES if getattr(lead, name) is not None]
        if value_tier:
            out.append(f"tier={value_tier}")
        return out
    out = []
    for name in spec:
        if name == "value_tier":
            value: Any = value_tier
        elif name == "company_size":
            value = None if lead.company_size is None else size_band(lead.company_size, size_bands)
        elif name.startswith("attributes."):
            value = lead.attributes.get(name.removeprefix("attributes."))
        else:
            value = getattr(lead, name)
        if value is not None:
            out.append(f"{'tier' if name == 'value_tier' else name}={str(value).lower()}")
    return out


def size_band(size: int, bands: Sequence[int]) -> str:
    """ "<50", "50-249", "1000+" for bands [50, 250, 1000]."""
    if not bands or size < bands[0]:
        return f"<{bands[0]}" if bands else "all"
    for low, high in itertools.pairwise(bands):
        if size < high:
            return f"{low}-{high - 1}"
    return f"{bands[-1]}+"


def load_band(opened: float, capacity: float) -> str:
    """The rep's load band when it took a lead; an unlimited rep is never loaded."""
    util = opened / capacity if capacity > 0 and capacity != float("inf") else 0.0
    labels = (f"<{int(LOAD_BANDS[0] * 100)}", "50-75", "75-90", "90+")
    for k, edge in enumerate(LOAD_BANDS):
        if util < edge:
            return f"load={labels[k]}"
    return f"load={labels[-1]}"


def tag_level(tags: Mapping[str, int], feats: Sequence[str]) -> int:
    """The highest level of a declared tag that names one of the lead's feature values ("saas", or
    "industry:saas" for industry=saas)."""
    best = 0
    for feature in feats:
        if "=" not in feature or feature.startswith(("load=", "tag=")):
            continue
        name, value = feature.split("=", 1)
        best = max(best, tags.get(value, 0), tags.get(f"{name}:{value}", 0))
    return best


def event_day(at: datetime) -> float:
    """Event time as days since 2000-01-01 UTC (the decay clock: never the wall clock)."""
    return (at - _EPOCH).total_seconds() / 86400.0


def decay(half_life: float | None, since: float | None, until: float) -> float:
    """The weight that counts as of day `since` keep at day `until` (1 without a half-life)."""
    if half_life is None or since is None or until <= since:
        return 1.0
    return float(0.5 ** ((until - since) / half_life))


def update(
    model: Mapping[str, Any] | None,
    feats: Sequence[str],
    won: bool,
    *,
    at: datetime | None = None,
    half_life: float | None = None,
) -> dict[str, Any]:
    """The rep's model after one closed deal of a lead with these features.

    With a half-life, counts are kept as of the newest deal's day ("t"): older counts are decayed to it,
    and a deal older than "t" counts with its own decayed weight, so the result does not depend on the
    order deals arrive in (up to rounding)."""
    old = model or {}
    base = [float(x) for x in old.get("n", [0, 0])]
    per = {k: [float(x) for x in v] for k, v in (old.get("f") or {}).items()}
    step = 1.0
    out_t: float | None = old.get("t")
    if half_life is not None and at is not None:
        day = event_day(at)
        if out_t is None or day >= out_t:
            keep = decay(half_life, out_t, day)
            base = [x * keep for x in base]
            per = {k: [x * keep for x in v] for k, v in per.items()}
            out_t = day
        else:
            step = decay(half_life, day, out_t)
    idx = 0 if won else 1
    base[idx] += step
    for f in feats:
        counts = per.setdefault(f, [0.0, 0.0])
        counts[idx] += step
    if len(per) > MAX_KEYS:
        per = dict(sorted(per.items(), key=lambda kv: (-(kv[1][0] + kv[1][1]), kv[0]))[:MAX_KEYS])
    if half_life is None and out_t is None:  # the legacy row: whole counts, no clock
        return {"n": [_whole(x) for x in base], "f": {k: [_whole(x) for x in v] for k, v in per.items()}}
    return {"n": base, "f": per, "t": out_t}


def _whole(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


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
