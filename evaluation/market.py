"""A synthetic sales market with a hidden truth: who really wins what, and how that changes over time.

Everything is drawn from one numpy Generator seeded by the market seed, and each lead's outcome from
a hash of (seed, lead id), so every policy meets the same leads and the same luck (common random
numbers: differences between policies are the policies', not the dice's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from routing.ids import unit_hash
from routing.model import Rep
from schemas.events import LeadCreated

INDUSTRIES = ("saas", "retail", "health", "finance", "manufacturing", "education")
REGIONS = ("emea", "amer", "apac")
SIZES = (20, 120, 600, 3000)  # typical company sizes of the four size bands


@dataclass(frozen=True)
class MarketConfig:
    """The default market (docs/evaluation.md). Logits are log-odds of winning a lead."""

    days: int = 180
    leads_per_day: float = 7.0
    seniors: int = 4
    mids: int = 8
    juniors: int = 4
    capacity: int = 12
    base_logit: dict[str, float] = field(default_factory=lambda: {"senior": -1.2, "mid": -1.5, "junior": -2.4})
    junior_gain: float = 0.9  # juniors' logit rises by this much ...
    junior_ramp_days: int = 120  # ... over their first this many days
    strong: float = 1.3  # a rep's two strong industries
    weak: float = -0.9  # and its weak one
    size_affinity: float = 0.5  # a rep's favoured company size band
    drift_day: int = 90  # on this day a quarter of the reps change one strong industry
    tag_true: float = 0.6  # chance that a real strength is declared as a tag
    tag_false: float = 0.5  # chance of one declared tag that is not a real strength
    overload: float = 1.6  # logit lost at a full book (from half full on, linearly)
    close_days: tuple[float, float] = (6.0, 30.0)  # a deal closes uniformly within this many days
    value_median: float = 8000.0
    value_sigma: float = 0.8
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC)


@dataclass(frozen=True)
class HiddenRep:
    """What the simulator knows and the policies do not."""

    rep_id: str
    tier: str
    base: float
    strong: tuple[str, ...]
    weak: str
    strong_after: tuple[str, ...]  # after the drift day (the same when this rep does not drift)
    size_band: int


@dataclass(frozen=True)
class Market:
    seed: int
    config: MarketConfig
    reps: dict[str, Rep]  # what the roster says (tags as declared)
    hidden: dict[str, HiddenRep]
    leads: list[LeadCreated]

    def day(self, at: datetime) -> float:
        return (at - self.config.start).total_seconds() / 86400.0

    def logit(self, rep_id: str, lead: LeadCreated, at: datetime, utilisation: float) -> float:
        """The true log-odds that this rep wins this lead, taken on at this load."""
        h, c = self.hidden[rep_id], self.config
        day = self.day(at)
        x = h.base
        if h.tier == "junior":
            x += c.junior_gain * min(1.0, max(0.0, day) / c.junior_ramp_days)
        strong = h.strong if day < c.drift_day else h.strong_after
        if lead.industry in strong:
            x += c.strong
        elif lead.industry == h.weak:
            x += c.weak
        if size_band(lead.company_size or 0) == h.size_band:
            x += c.size_affinity
        x -= c.overload * max(0.0, utilisation - 0.5) / 0.5
        return x

    def p_win(self, rep_id: str, lead: LeadCreated, at: datetime, utilisation: float) -> float:
        return 1.0 / (1.0 + math.exp(-self.logit(rep_id, lead, at, utilisation)))

    def won(self, rep_id: str, lead: LeadCreated, at: datetime, utilisation: float) -> bool:
        return unit_hash("won", str(self.seed), lead.lead_id) < self.p_win(rep_id, lead, at, utilisation)

    def close_after(self, lead: LeadCreated) -> timedelta:
        low, high = self.config.close_days
        return timedelta(days=low + (high - low) * unit_hash("close", str(self.seed), lead.lead_id))


def size_band(size: int) -> int:
    return 0 if size < 50 else 1 if size < 250 else 2 if size < 1000 else 3


def build(seed: int, config: MarketConfig | None = None) -> Market:
    c = config or MarketConfig()
    rng = np.random.default_rng([seed, 11])
    reps: dict[str, Rep] = {}
    hidden: dict[str, HiddenRep] = {}
    tiers = ["senior"] * c.seniors + ["mid"] * c.mids + ["junior"] * c.juniors
    drifting = set(rng.choice(len(tiers), size=max(1, len(tiers) // 4), replace=False).tolist())
    for k, tier in enumerate(tiers):
        rep_id = f"{tier}-{k:02d}"
        picks = rng.permutation(len(INDUSTRIES))
        strong = (INDUSTRIES[picks[0]], INDUSTRIES[picks[1]])
        weak = INDUSTRIES[picks[2]]
        after = (INDUSTRIES[picks[3]], strong[1]) if k in drifting else strong
        hidden[rep_id] = HiddenRep(rep_id, tier, c.base_logit[tier], strong, weak, after, int(rng.integers(4)))
        tags: dict[str, int] = {"en": 5}
        for industry in strong:
            if rng.random() < c.tag_true:
                tags[industry] = 4
        if rng.random() < c.tag_false:
            tags[INDUSTRIES[picks[4 + int(rng.integers(2))]]] = 4
        hired = c.start - timedelta(days=10 if tier == "junior" else 400 + 30 * k)
        reps[rep_id] = Rep(rep_id=rep_id, tier=tier, tags=tags, capacity=c.capacity, hired_at=hired.date())
    return Market(seed, c, reps, hidden, _leads(seed, c, rng))


def _leads(seed: int, c: MarketConfig, rng: np.random.Generator) -> list[LeadCreated]:
    leads: list[LeadCreated] = []
    for day in range(c.days):
        count = int(rng.poisson(c.leads_per_day))
        for minute in np.sort(rng.integers(8 * 60, 18 * 60, size=count)):
            band = int(rng.choice(4, p=[0.35, 0.3, 0.2, 0.15]))
            value = float(round(c.value_median * math.exp(c.value_sigma * rng.standard_normal() + 0.3 * band), 2))
            leads.append(
                LeadCreated(
                    lead_id=f"S{seed}-{len(leads):05d}",
                    created_at=c.start + timedelta(days=day, minutes=int(minute)),
                    industry=str(rng.choice(INDUSTRIES)),
                    region=str(rng.choice(REGIONS)),
                    company_size=int(SIZES[band] * math.exp(0.3 * rng.standard_normal())),
                    language="en",
                    source=str(rng.choice(["web", "partner", "event"])),
                    estimated_value=value,
                )
            )
    return leads
