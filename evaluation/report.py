"""The simulation's outputs: a markdown report, the raw results as JSON, and PNG charts."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from evaluation.market import MarketConfig
from evaluation.run import BASELINE, ORACLE, Result

COLUMNS = (
    ("conversion", "conversion", "{:.3f}"),
    ("lift", "vs round robin (min..max)", None),
    ("value_gini", "value Gini (max)", None),
    ("junior_vs_rr", "juniors' share vs RR (min)", None),
    ("overload_rate", "overloaded", "{:.0%}"),
    ("gap_to_oracle", "gap to oracle", "{:.0%}"),
    ("revenue", "revenue", "{:,.0f}"),
)


def _cell(key: str, row: Mapping[str, float], fmt: str | None) -> str:
    if key == "lift":
        return f"{row['lift']:+.1%} ({row['lift_min']:+.1%}..{row['lift_max']:+.1%})"
    if key == "value_gini":
        return f"{row['value_gini']:.3f} ({row['value_gini_max']:.3f})"
    if key == "junior_vs_rr":
        return f"{row['junior_vs_rr']:.2f} ({row['junior_vs_rr_min']:.2f})"
    value = row[key]
    return "n/a" if math.isnan(value) else (fmt or "{}").format(value)


def table(summary: Mapping[str, Mapping[str, float]]) -> str:
    """Means over seeds, one policy a row (markdown)."""
    head = "| policy | " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "|---" * (len(COLUMNS) + 1) + "|"
    rows = [
        f"| {name} | " + " | ".join(_cell(k, row, f) for k, _, f in COLUMNS) + " |" for name, row in summary.items()
    ]
    return "\n".join([head, rule, *rows])


def markdown(
    summary: Mapping[str, Mapping[str, float]], results: Sequence[Result], seeds: Sequence[int], config: MarketConfig
) -> str:
    per_seed = [
        "| policy | seed | leads | won | conversion | value Gini | juniors' share | overloaded |",
        "|---" * 8 + "|",
    ]
    for r in results:
        per_seed.append(
            f"| {r.policy} | {r.seed} | {r.leads} | {r.won} | {r.conversion:.3f} | {r.value_gini:.3f} | "
            f"{r.junior_share:.3f} | {r.overload_rate:.0%} |"
        )
    return "\n\n".join(
        [
            "# leadrelay simulate",
            f"Seeds {', '.join(map(str, seeds))}; {config.days} days, {config.leads_per_day:g} leads a day, "
            f"{config.seniors} senior, {config.mids} mid and {config.juniors} junior reps of capacity "
            f"{config.capacity}. Means over seeds; lifts and juniors' share against {BASELINE} on the same "
            f"seed; the {ORACLE} knows the hidden truth.",
            table(summary),
            "## Per seed",
            "\n".join(per_seed),
        ]
    )


def write(
    out: Path,
    results: Sequence[Result],
    summary: Mapping[str, Mapping[str, float]],
    seeds: Sequence[int],
    config: MarketConfig,
    *,
    charts: bool = True,
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    report, data = out / "report.md", out / "results.json"
    report.write_text(markdown(summary, results, seeds, config) + "\n")
    payload = {
        "seeds": list(seeds),
        "market": {k: v for k, v in asdict(config).items() if k != "start"} | {"start": config.start.isoformat()},
        "summary": summary,
        "results": [r.to_dict() for r in results],
    }
    data.write_text(json.dumps(payload, indent=1, sort_keys=True, allow_nan=False, default=_finite) + "\n")
    written = [report, data]
    if charts:
        from evaluation import charts as draw

        written += draw.draw(out, results, summary)
    return written


def _finite(value: object) -> object:
    raise TypeError(f"not JSON: {value!r}")
