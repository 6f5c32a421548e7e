"""Markdown and JSON of `leadrelay replay` and `leadrelay report` (charts: evaluation/figures.py)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1%}"


def _num(x: float | None, fmt: str = "{:.3f}") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def replay_markdown(summary: Mapping[str, Any], policy: str) -> str:
    c = summary["conversion"]
    pools = summary["pools"]
    parts = [
        "# leadrelay replay",
        f"Candidate policy {policy}: {summary['leads']} leads re-decided, {summary['compared']} with a recorded "
        f"decision; same rep as history: {_pct(summary['agreement'])} (same outcome reason: "
        f"{_pct(summary['same_reason'])}).",
        "## Agreement",
        _table(
            ["pool", "leads", "compared", "same rep"],
            [[p, str(v["leads"]), str(v["compared"]), _pct(v["agreement"])] for p, v in pools.items()],
        ),
        "## Conversion (off-policy estimate)",
        f"Leads with a recorded rep and a closed deal: {c['n']}; the candidate agrees with history on "
        f"{c['matched']} of them (observed outcomes), the rest come from the outcome model. Intervals: "
        f"{1 - c['alpha']:.0%} bootstrap over leads, {c['resamples']} resamples.",
        _table(
            ["", "conversion", "interval"],
            [
                [
                    "historical (observed)",
                    _pct(c["historical"]),
                    f"{_pct(c['historical_low'])} .. {_pct(c['historical_high'])}",
                ],
                [
                    "candidate (doubly robust)",
                    _pct(c["candidate"]),
                    f"{_pct(c['candidate_low'])} .. {_pct(c['candidate_high'])}",
                ],
                [
                    "difference",
                    _num(c["diff"], "{:+.3f}"),
                    f"{_num(c['diff_low'], '{:+.3f}')} .. {_num(c['diff_high'], '{:+.3f}')}",
                ],
                ["candidate, outcome model only", _pct(c["direct"]), ""],
            ],
        ),
        ("**Weak estimate**: " if c["weak"] else "Overlap: ") + c["why"] + ".",
        "## Load and fairness",
        _table(
            ["pool", "side", "assigned", "spread (CV of leads per capacity)", "max share", "value Gini (per capacity)"],
            [
                [
                    p,
                    side,
                    str(v[side]["assigned"]),
                    f"{v[side]['spread']:.3f}",
                    _pct(v[side]["max_share"]),
                    f"{v[side]['value_gini']:.3f}",
                ]
                for p, v in pools.items()
                for side in ("historical", "candidate")
            ],
        ),
        "## Per rep",
        _table(
            ["pool", "rep", "capacity", "historical leads", "candidate leads", "historical value", "candidate value"],
            [
                [
                    p,
                    rep,
                    f"{v['capacity'][rep]:g}",
                    f"{row.get('historical_leads', 0):g}",
                    f"{row.get('candidate_leads', 0):g}",
                    f"{row.get('historical_value', 0):,.0f}",
                    f"{row.get('candidate_value', 0):,.0f}",
                ]
                for p, v in pools.items()
                for rep, row in v["per_rep"].items()
            ],
        ),
        "## Counts",
        _table(["", "count"], [[k, str(v)] for k, v in summary["counts"].items()]),
    ]
    return "\n\n".join(parts) + "\n"


def _cells(cells: Mapping[str, Mapping[str, Any]]) -> str:
    rows = [
        [
            name,
            str(c["leads"]),
            str(c["assigned"]),
            str(c["won"]),
            str(c["lost"]),
            str(c["open"]),
            _pct(c["conversion"]),
            f"{_pct(c['low'])} .. {_pct(c['high'])}",
            f"{c['revenue']:,.0f}",
        ]
        for name, c in cells.items()
    ]
    head = ["", "leads", "assigned", "won", "lost", "no deal yet", "conversion", "95% interval", "revenue"]
    return _table(head, rows)


TITLES = {
    "pool": "pool",
    "strategy": "strategy",
    "variant": "experiment variant",
    "rep": "rep",
    "rep_tier": "rep tier",
    "value_tier": "value tier",
}


def report_markdown(summary: Mapping[str, Any]) -> str:
    t = summary["totals"]
    rule = summary["stopping_rule"]
    parts = [
        "# leadrelay report",
        f"{t['leads']} leads (each once), {t['assigned']} assigned, {t['won']} won, {t['lost']} lost, {t['open']} "
        f"without a deal yet. Conversion = won / (won + lost); intervals are Wilson score intervals.",
        _table(["", "count"], [[k, str(v)] for k, v in summary["counts"].items()]),
    ]
    for group, title in TITLES.items():
        parts += [f"## Conversion by {title}", _cells(summary["by"][group])]
    parts.append("## Experiments")
    parts.append(
        f"Stopping rule: {rule['kind']}. Each arm needs the sample (leads with an outcome) that detects an "
        f"absolute change of {rule['effect']:.3f} in conversion at alpha {rule['alpha']:g} (two-sided, Bonferroni "
        f"over the variants compared with the control) with power {rule['power']:g}; until every arm has it the "
        "answer is continue, whatever the intervals show. Then the differences are read once."
    )
    if not summary["experiments"]:
        parts.append("No decision in the input belongs to an experiment.")
    for name, e in summary["experiments"].items():
        parts += [f"### {name}", _cells(e["arms"])]
        v = e.get("verdict")
        if v is None:
            parts.append("One arm only: nothing to compare.")
            continue
        parts.append(
            f"**{v['decision']}**: {v['reason']}. Horizon {v['need_per_arm']} leads with an outcome per arm "
            f"(baseline {v['baseline']:.3f}, {v['baseline_source']})."
        )
        parts.append(
            _table(
                ["variant - control", "difference", "interval", "alpha", "different"],
                [
                    [
                        f"{c['variant']} - {c['control']}",
                        _num(c["diff"], "{:+.3f}"),
                        f"{_num(c['low'], '{:+.3f}')} .. {_num(c['high'], '{:+.3f}')}",
                        f"{c['alpha']:g}",
                        "yes" if c["significant"] else "no",
                    ]
                    for c in v["comparisons"]
                ],
            )
        )
    parts += [
        f"## Fairness and load by {summary['period']}",
        f"Gini of {'value' if summary['value_basis'] == 'estimated_value' else 'leads'} per unit of capacity over "
        "each pool's reps (0 = even); max share = the busiest rep's share of the period's assigned leads.",
        _table(
            ["period", "pool", "leads", "won", "lost", "Gini", "max share"],
            [
                [
                    r["period"],
                    r["pool"],
                    str(r["leads"]),
                    str(r["won"]),
                    str(r["lost"]),
                    f"{r['value_gini']:.3f}",
                    _pct(r["max_share"]),
                ]
                for r in summary["over_time"]
            ],
        ),
    ]
    return "\n\n".join(parts) + "\n"


def write(out: Path, name: str, markdown: str, data: Mapping[str, Any]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / f"{name}.md", out / f"{name}.json"
    md.write_text(markdown)
    js.write_text(json.dumps(_clean(data), indent=1, sort_keys=True, allow_nan=False) + "\n")
    return [md, js]


def _clean(value: Any) -> Any:
    """JSON has no NaN: a quantity that cannot be computed is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
