"""PNG charts of a simulation (matplotlib, drawn off-screen)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")  # no display: files only
import matplotlib.pyplot as plt  # after choosing the backend
from matplotlib.figure import Figure

from evaluation.run import BASELINE, ORACLE, Result


def draw(out: Path, results: Sequence[Result], summary: Mapping[str, Mapping[str, float]]) -> list[Path]:
    return [_lift(out, summary), _frontier(out, summary), _monthly(out, results)]


def _lift(out: Path, summary: Mapping[str, Mapping[str, float]]) -> Path:
    names = list(summary)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    lifts = [100 * summary[n]["lift"] for n in names]
    lows = [100 * (summary[n]["lift"] - summary[n]["lift_min"]) for n in names]
    highs = [100 * (summary[n]["lift_max"] - summary[n]["lift"]) for n in names]
    ax.bar(
        names,
        lifts,
        yerr=[lows, highs],
        capsize=3,
        color=["#999" if n in (BASELINE, ORACLE) else "#3a7" for n in names],
    )
    ax.axhline(30, linestyle="--", color="#c33", linewidth=1, label="target +30%")
    ax.set_ylabel(f"conversion vs {BASELINE} (%), mean and range over seeds")
    ax.tick_params(axis="x", rotation=40)
    plt.setp(ax.get_xticklabels(), ha="right")
    ax.legend()
    return _save(fig, out / "conversion.png")


def _frontier(out: Path, summary: Mapping[str, Mapping[str, float]]) -> Path:
    fig, ax = plt.subplots(figsize=(7, 5))
    for name, row in summary.items():
        ax.scatter(row["value_gini"], 100 * row["lift"], color="#3a7" if name.startswith("learning") else "#777")
        ax.annotate(name, (row["value_gini"], 100 * row["lift"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axvline(0.12, linestyle="--", color="#c33", linewidth=1)
    ax.axhline(30, linestyle="--", color="#c33", linewidth=1)
    ax.set_xlabel("value Gini (value received per capacity)")
    ax.set_ylabel(f"conversion vs {BASELINE} (%)")
    return _save(fig, out / "fairness.png")


def _monthly(out: Path, results: Sequence[Result]) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    names = list(dict.fromkeys(r.policy for r in results))
    for name in names:
        rows = [r for r in results if r.policy == name]
        months = len(rows[0].monthly_leads)
        rates = []
        for m in range(months):
            leads = sum(r.monthly_leads[m] for r in rows)
            rates.append(100 * sum(r.monthly_won[m] for r in rows) / leads if leads else float("nan"))
        ax.plot(range(1, months + 1), rates, marker="o", label=name, linewidth=2 if name.startswith("learning") else 1)
    ax.set_xlabel("month (30 days, by lead creation)")
    ax.set_ylabel("conversion (%), all seeds")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, out / "monthly.png")


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no version stamp: same inputs, same bytes
    plt.close(fig)
    return path
