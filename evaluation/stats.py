"""Intervals for proportions and the A/B stopping rule of `leadrelay report` (no scipy: stdlib NormalDist).

- Wilson score interval for one proportion (good coverage at small n and near 0 or 1, unlike Wald).
- Newcombe's hybrid score interval (his method 10) for a difference of two independent proportions,
  built from the two Wilson intervals.
- The stopping rule is a fixed horizon: the sample per arm is computed up front from a minimum effect
  worth detecting, and the comparison is read once, when every arm has it. Peeking at a fixed-horizon
  test and stopping at the first "significant" look inflates false positives; here the rule says
  "continue" until the horizon, whatever the interval shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

_Z = NormalDist()


def z(alpha: float) -> float:
    """The two-sided critical value: z(0.05) = 1.96."""
    return _Z.inv_cdf(1 - alpha / 2)


def wilson(won: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of won / n; (0, 1) when there is nothing to go on."""
    if n <= 0:
        return 0.0, 1.0
    k = z(alpha)
    p = won / n
    centre = (p + k * k / (2 * n)) / (1 + k * k / n)
    half = k * math.sqrt(p * (1 - p) / n + k * k / (4 * n * n)) / (1 + k * k / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def diff_interval(won_a: int, n_a: int, won_b: int, n_b: int, alpha: float = 0.05) -> tuple[float, float, float]:
    """(estimate, low, high) of p_b - p_a, Newcombe's hybrid score interval."""
    if n_a <= 0 or n_b <= 0:
        return math.nan, -1.0, 1.0
    pa, pb = won_a / n_a, won_b / n_b
    la, ua = wilson(won_a, n_a, alpha)
    lb, ub = wilson(won_b, n_b, alpha)
    d = pb - pa
    return d, d - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2), d + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2)


def sample_size(baseline: float, effect: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Leads with an outcome needed per arm to detect an absolute change of `effect` from `baseline`
    (two-sided test of two proportions at level `alpha` with the given power; Fleiss' formula without
    continuity correction)."""
    p1 = min(max(baseline, 1e-6), 1 - 1e-6)
    p2 = min(max(p1 + effect, 1e-6), 1 - 1e-6)
    if abs(p2 - p1) < 1e-12:
        raise ValueError("the effect must move the rate (baseline + effect inside (0, 1))")
    mean = (p1 + p2) / 2
    top = z(alpha) * math.sqrt(2 * mean * (1 - mean)) + _Z.inv_cdf(power) * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(top * top / (p2 - p1) ** 2)


@dataclass(frozen=True)
class Arm:
    name: str
    won: int
    n: int  # leads with an outcome (won or lost)

    @property
    def rate(self) -> float:
        return self.won / self.n if self.n else math.nan


@dataclass(frozen=True)
class Comparison:
    """One variant against the control, read at the horizon."""

    control: str
    variant: str
    diff: float
    low: float
    high: float
    alpha: float  # per comparison (Bonferroni: the family's alpha over the number of comparisons)

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Verdict:
    """The stopping rule's answer for one experiment."""

    decision: str  # "continue" or "stop"
    need: int  # leads with an outcome per arm (the horizon)
    baseline: float
    baseline_source: str  # "given" or "observed"
    effect: float
    comparisons: tuple[Comparison, ...]
    reason: str


def stopping_rule(
    arms: list[Arm],
    *,
    effect: float,
    alpha: float = 0.05,
    power: float = 0.8,
    baseline: float | None = None,
    control: str | None = None,
) -> Verdict:
    """Fixed horizon: continue until every arm has `sample_size(...)` leads with an outcome, then stop and
    compare every variant with the control (the first arm unless named), Bonferroni-corrected. The
    intervals are computed at every look for information, but only the horizon decides."""
    if len(arms) < 2:
        raise ValueError("an A/B comparison needs at least two arms")
    ordered = sorted(arms, key=lambda a: (a.name != control, a.name)) if control else list(arms)
    base_arm, others = ordered[0], ordered[1:]
    source = "given"
    if baseline is None:
        total = sum(a.n for a in arms)
        baseline = sum(a.won for a in arms) / total if total else 0.5
        source = "observed"
    per = alpha / len(others)
    need = sample_size(baseline, effect, per, power)
    comparisons = tuple(
        Comparison(base_arm.name, a.name, *diff_interval(base_arm.won, base_arm.n, a.won, a.n, per), alpha=per)
        for a in others
    )
    short = [a for a in ordered if a.n < need]
    if short:
        missing = ", ".join(f"{a.name} {a.n}/{need}" for a in short)
        return Verdict("continue", need, baseline, source, effect, comparisons, f"below the horizon: {missing}")
    found = [c for c in comparisons if c.significant]
    if found:
        said = "; ".join(f"{c.variant} - {c.control} = {c.diff:+.3f} [{c.low:+.3f}, {c.high:+.3f}]" for c in found)
        why = f"horizon reached; different: {said}"
    else:
        why = f"horizon reached; no difference of {effect:.3f} or more found (every interval covers 0)"
    return Verdict("stop", need, baseline, source, effect, comparisons, why)
