"""`leadrelay report`: each lead once, totals that add up, A/B intervals and the stopping rule."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from evaluation import outcomes, stats
from evaluation.history import recorded, write_jsonl
from evaluation.market import MarketConfig, build
from evaluation.run import POLICIES
from routing.ids import decision_id
from routing.policy import parse_policy
from schemas.events import AssignmentDecision, DealClosed, Explanation
from streams.tools.cli import main

T0 = datetime(2026, 4, 6, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def history():
    """Six weeks of the simulator's market under full.yaml with its A/B trial (variants A and B)."""
    policy = parse_policy((POLICIES / "full.yaml").read_text())
    return recorded(build(2, MarketConfig(days=42, leads_per_day=6.0, capacity=6)), policy)


def _summary(decisions, deals, **kw):
    return outcomes.summarize(outcomes.join(decisions, deals, **kw))


def test_totals_add_up_in_every_table(history) -> None:
    deals = [d for _, d in history.deals]
    leads = [lead for _, lead in history.leads]
    s = _summary(history.decisions, deals, leads=leads)
    t = s["totals"]
    assert t["leads"] == len(history.leads)
    assert t["won"] + t["lost"] == len(deals) and t["won"] == sum(d.outcome == "won" for d in deals)
    assert t["leads"] == t["won"] + t["lost"] + t["open"]
    assert outcomes.totals_add_up(s) == []
    assert set(s["by"]["variant"]) == {"learned-vs-balanced/A", "learned-vs-balanced/B"}
    assert "(unassigned)" in s["by"]["rep"]  # books fill up: unassigned leads are counted, once
    assert sum(r["leads"] for r in s["over_time"]) == t["leads"]


def test_the_self_check_finds_a_table_that_does_not_add_up(history) -> None:
    s = _summary(history.decisions, [d for _, d in history.deals])
    first = next(iter(s["by"]["rep"]))
    s["by"]["rep"][first]["won"] += 1
    assert outcomes.totals_add_up(s) == [f"by rep: won {s['totals']['won'] + 1} != {s['totals']['won']}"]


def test_no_lead_is_counted_twice_when_decisions_and_deals_repeat(history) -> None:
    deals = [d for _, d in history.deals]
    once = _summary(history.decisions, deals)
    rng = random.Random(5)
    repeated = history.decisions + rng.sample(history.decisions, 50)  # re-emitted decisions
    rng.shuffle(repeated)
    second_deals = [d.model_copy(update={"outcome": "lost" if d.outcome == "won" else "won"}) for d in deals[:30]]
    twice = _summary(repeated, deals + second_deals)  # a second deal for a closed lead is ignored
    for key in ("totals", "by", "experiments", "over_time"):
        assert twice[key] == once[key], key
    assert twice["counts"]["duplicate decision records"] == 50
    assert twice["counts"]["duplicate deals"] == 30


def _decision(
    lead_id: str, *, attempt: int = 1, rep: str | None = "r1", variant: str | None = None
) -> AssignmentDecision:
    return AssignmentDecision(
        decision_id=decision_id(lead_id, attempt),
        lead_id=lead_id,
        pool="p",
        rep_id=rep,
        reason="assigned" if rep else "no_eligible_rep",
        attempt=attempt,
        policy_id="t",
        policy_version=1,
        variant=variant,
        experiment="trial" if variant else None,
        explanation=Explanation(strategy=variant or "default", summary="test"),
        lead_created_at=T0,
        decided_at=T0 + timedelta(hours=attempt),
    )


def test_a_later_attempt_is_the_leads_decision_and_the_lead_counts_once() -> None:
    decisions = [_decision("L1", rep="r1"), _decision("L1", attempt=2, rep="r2"), _decision("L2")]
    deals = [
        DealClosed(lead_id="L1", outcome="won", amount=5, closed_at=T0),
        DealClosed(lead_id="X", outcome="won", closed_at=T0),
    ]
    s = _summary(decisions, deals)
    assert s["totals"]["leads"] == 2 and s["totals"]["won"] == 1
    assert s["by"]["rep"]["p/r2"]["won"] == 1 and s["by"]["rep"]["p/r1"]["leads"] == 1
    assert s["counts"]["earlier attempts"] == 1 and s["counts"]["deals without a decision"] == 1


def _trial(p_a: float, p_b: float, n: int, seed: int) -> tuple[list[AssignmentDecision], list[DealClosed]]:
    rng = random.Random(seed)
    decisions, deals = [], []
    for i in range(2 * n):
        arm, p = ("A", p_a) if i % 2 == 0 else ("B", p_b)
        lead_id = f"T{seed}-{i}"
        decisions.append(_decision(lead_id, variant=arm))
        deals.append(DealClosed(lead_id=lead_id, outcome="won" if rng.random() < p else "lost", closed_at=T0))
    return decisions, deals


def test_the_ab_interval_covers_a_planted_difference() -> None:
    """Over 40 independent trials with a planted +0.10, the 95% difference interval covers it about 95% of
    the time (at least 34 of 40) and tells it from no difference in most (power well above 80% at 1500 per arm)."""
    covered = detected = 0
    for seed in range(40):
        s = _summary(*_trial(0.20, 0.30, 1500, seed))
        (c,) = s["experiments"]["trial"]["verdict"]["comparisons"]
        assert (c["control"], c["variant"]) == ("A", "B")
        covered += c["low"] <= 0.10 <= c["high"]
        detected += c["low"] > 0
    assert covered >= 34
    assert detected >= 36


def test_the_stopping_rule_says_continue_below_the_horizon_and_stop_at_it() -> None:
    need = stats.sample_size(0.2, 0.05, 0.05, 0.8)
    assert 1000 < need < 1200  # two proportions, 0.20 -> 0.25: about 1,100 per arm
    early = outcomes.summarize(outcomes.join(*_trial(0.2, 0.3, 300, 1)), effect=0.05, baseline=0.2)
    verdict = early["experiments"]["trial"]["verdict"]
    assert verdict["decision"] == "continue" and verdict["need_per_arm"] == need
    assert "below the horizon" in verdict["reason"]
    assert (
        early["experiments"]["trial"]["verdict"]["comparisons"][0]["low"] > 0
    )  # already "significant": still continue
    late = outcomes.summarize(outcomes.join(*_trial(0.2, 0.3, need, 2)), effect=0.05, baseline=0.2)
    verdict = late["experiments"]["trial"]["verdict"]
    assert verdict["decision"] == "stop" and "different" in verdict["reason"]
    same = outcomes.summarize(outcomes.join(*_trial(0.2, 0.2, need + 50, 3)), effect=0.05, baseline=0.2)
    assert same["experiments"]["trial"]["verdict"]["decision"] == "stop"


@pytest.mark.parametrize(
    ("won", "n", "low", "high"),
    [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (81, 263, 0.2553, 0.3662)],
)
def test_wilson_interval_matches_published_values(won, n, low, high) -> None:
    lo, hi = stats.wilson(won, n)
    assert math.isclose(lo, low, abs_tol=1e-4) and math.isclose(hi, high, abs_tol=1e-4)


def test_newcombe_difference_matches_his_worked_example() -> None:
    """Newcombe (1998), method 10, example (c): 56/70 vs 48/80 -> 0.2000 (0.0524, 0.3339)."""
    d, lo, hi = stats.diff_interval(48, 80, 56, 70)
    assert math.isclose(d, 0.2) and math.isclose(lo, 0.0524, abs_tol=1e-4) and math.isclose(hi, 0.3339, abs_tol=1e-4)


def test_more_arms_split_alpha_and_need_more_per_arm() -> None:
    two = stats.stopping_rule([stats.Arm("A", 10, 50), stats.Arm("B", 12, 50)], effect=0.05, baseline=0.2)
    three = stats.stopping_rule(
        [stats.Arm("A", 10, 50), stats.Arm("B", 12, 50), stats.Arm("C", 9, 50)], effect=0.05, baseline=0.2
    )
    assert three.need > two.need and {c.alpha for c in three.comparisons} == {0.025}


def test_the_cli_reports_files(history, tmp_path, capsys) -> None:
    files = write_jsonl(history, tmp_path / "h")
    out = tmp_path / "out"
    args = [
        "report",
        "--decisions",
        str(files["decisions"]),
        "--deals",
        str(files["deals"]),
        "--leads",
        str(files["leads"]),
    ]
    assert main([*args, "--roster", str(files["roster"]), "--period", "day", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{len(history.leads)} leads (each once)" in printed and "**continue**" in printed
    data = json.loads((out / "report.json").read_text())
    assert data["totals"]["leads"] == len(history.leads)
    assert set(data["by"]["rep_tier"]) <= {"senior", "mid", "junior", "(unassigned)"}
    assert {p.name for p in out.iterdir()} == {
        "report.md",
        "report.json",
        "report-variants.png",
        "report-load.png",
        "report-fairness.png",
    }


def test_the_report_reads_the_archive_like_the_files_it_came_from(history, tmp_path, capsys) -> None:
    """`report --archive`: decisions and deals from the archive's database give the report the same
    history as the records themselves, re-emitted decisions and all (the archive keeps each once)."""
    from streams.archive.archiver import row_of
    from streams.archive.store import ArchiveStore
    from streams.archive.tables import DEALS, DECISIONS
    from tests.archive_support import consumed

    deals = [d for _, d in history.deals]
    repeated = history.decisions + history.decisions[:40]  # the topic holds re-emitted decisions too
    url = f"sqlite:///{tmp_path}/archive.sqlite3"
    store = ArchiveStore(url)
    try:
        store.upsert([row_of(DECISIONS, r) for r in consumed("leads.assignments", repeated)])
        store.upsert([row_of(DEALS, r) for r in consumed("deals.closed", deals)])
    finally:
        store.close()
    files = write_jsonl(history, tmp_path / "h")
    from_files, from_archive = tmp_path / "files", tmp_path / "archive"
    base = ["report", "--period", "day", "--no-charts"]
    assert (
        main([*base, "--decisions", str(files["decisions"]), "--deals", str(files["deals"]), "--out", str(from_files)])
        == 0
    )
    assert main([*base, "--archive", url, "--out", str(from_archive)]) == 0
    capsys.readouterr()
    expected = json.loads((from_files / "report.json").read_text())
    got = json.loads((from_archive / "report.json").read_text())
    assert got["totals"] == expected["totals"] and got["totals"]["leads"] == len({d.lead_id for d in repeated})
    assert got["by"] == expected["by"]
    assert got["over_time"] == expected["over_time"]


def test_report_names_an_archive_it_cannot_read_in_one_line(tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path}/not-a-db.sqlite3"
    (tmp_path / "not-a-db.sqlite3").write_bytes(b"this is not a database" * 100)
    assert main(["report", "--archive", url, "--out", str(tmp_path / "out"), "--no-charts"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("leadrelay report: cannot read the archive") and err.count("\n") == 1
