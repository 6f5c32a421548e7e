"""PNG charts of `leadrelay replay` and `leadrelay report` (matplotlib off-screen, as evaluation/charts.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")  # no display: files only
import matplotlib.pyplot as plt  # after choosing the backend

from evaluation.charts import _save


def replay(out: Path, summary: Mapping[str, Any]) -> list[Path]:
    return [_replay_load(out, summary), _replay_conversion(out, summary)]


def report(out: Path, summary: Mapping[str, Any]) -> list[Path]:
    return [_report_variants(out, summary), _report_load(out, summary), _report_gini(out, summary)]


def _replay_load(out: Path, summary: Mapping[str, Any]) -> Path:
    labels, hist, cand = [], [], []
    for pool, v in summary["pools"].items():
        for rep, row in v["per_rep"].items():
            labels.append(f"{pool}/{rep}")
            hist.append(row.get("historical_leads", 0))
            cand.append(row.get("candidate_leads", 0))
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(labels) + 2), 4.5))
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], hist, width=0.4, label="historical", color="#999")
    ax.bar([i + 0.2 for i in x], cand, width=0.4, label="candidate", color="#3a7")
    ax.set_xticks(list(x), labels, rotation=40, ha="right", fontsize=7)
    ax.set_ylabel("leads assigned")
    ax.legend()
    return _save(fig, out / "replay-load.png")


def _replay_conversion(out: Path, summary: Mapping[str, Any]) -> Path:
    c = summary["conversion"]
    fig, ax = plt.subplots(figsize=(5, 4))
    names, mid, low, high = [], [], [], []
    for label, key in (("historical", "historical"), ("candidate (DR)", "candidate")):
        if c[key] is not None:
            names.append(label)
            mid.append(100 * c[key])
            low.append(100 * (c[key] - c[f"{key}_low"]))
            high.append(100 * (c[f"{key}_high"] - c[key]))
    ax.bar(names, mid, yerr=[low, high], capsize=4, color=["#999", "#3a7"][: len(names)])
    ax.set_ylabel(f"conversion (%), {1 - c['alpha']:.0%} bootstrap interval")
    if c["weak"]:
        ax.set_title("weak estimate: low overlap", fontsize=9, color="#c33")
    return _save(fig, out / "replay-conversion.png")


def _report_variants(out: Path, summary: Mapping[str, Any]) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    names, mid, low, high = [], [], [], []
    for experiment, e in summary["experiments"].items():
        for arm, cell in e["arms"].items():
            if cell["conversion"] is None:
                continue
            names.append(f"{experiment}/{arm}")
            mid.append(100 * cell["conversion"])
            low.append(100 * (cell["conversion"] - cell["low"]))
            high.append(100 * (cell["high"] - cell["conversion"]))
    if names:
        ax.bar(names, mid, yerr=[low, high], capsize=4, color="#3a7")
        ax.tick_params(axis="x", rotation=30)
    else:
        ax.text(0.5, 0.5, "no experiment with outcomes", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("conversion (%), Wilson 95% interval")
    return _save(fig, out / "report-variants.png")


def _report_load(out: Path, summary: Mapping[str, Any]) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    periods = sorted({r["period"] for r in summary["over_time"]})
    series: dict[str, list[float]] = {}
    for r in summary["over_time"]:
        for rep in r["per_rep"]:
            series.setdefault(rep, [0.0] * len(periods))
    for r in summary["over_time"]:
        for rep, n in r["per_rep"].items():
            series[rep][periods.index(r["period"])] += n
    for rep, counts in sorted(series.items()):
        ax.plot(periods, counts, marker="o", linewidth=1, label=rep)
    ax.set_xlabel(summary["period"])
    ax.set_ylabel("leads assigned")
    if series:
        ax.legend(fontsize=6, ncol=3)
    ax.tick_params(axis="x", rotation=30)
    return _save(fig, out / "report-load.png")


def _report_gini(out: Path, summary: Mapping[str, Any]) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4))
    periods = sorted({r["period"] for r in summary["over_time"]})
    for pool in sorted({r["pool"] for r in summary["over_time"]}):
        rows = {r["period"]: r["value_gini"] for r in summary["over_time"] if r["pool"] == pool}
        ax.plot(periods, [rows.get(p, float("nan")) for p in periods], marker="o", label=pool)
    ax.set_xlabel(summary["period"])
    ax.set_ylabel("Gini of value per capacity")
    ax.set_ylim(0, 1)
    if periods:
        ax.legend(fontsize=7)
    ax.tick_params(axis="x", rotation=30)
    return _save(fig, out / "report-fairness.png")
