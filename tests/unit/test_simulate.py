"""evaluation: the synthetic market and `leadrelay simulate` (small markets, so the suite stays fast)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from evaluation.market import MarketConfig, build
from evaluation.run import BASELINE, ORACLE, load_policies, run, simulate, summary
from streams.tools.cli import main

SMALL = MarketConfig(days=40, leads_per_day=6.0)


@pytest.fixture(scope="module")
def policies():
    chosen = load_policies()
    return {name: chosen[name] for name in (BASELINE, "least-loaded", "learning")}


def test_a_seed_builds_the_same_market_and_another_seed_another():
    a, b, c = build(5, SMALL), build(5, SMALL), build(6, SMALL)
    assert a.leads == b.leads and a.hidden == b.hidden and a.reps == b.reps
    assert a.leads != c.leads


def test_the_hidden_truth_differs_from_the_declared_tags():
    market = build(1)
    declared_right = declared = 0
    for rep_id, rep in market.reps.items():
        tags = {t for t in rep.tags if t != "en"}
        declared += len(tags)
        declared_right += len(tags & set(market.hidden[rep_id].strong))
    assert 0 < declared_right < declared, "some declared tags are right, some are not"
    assert any(h.strong != h.strong_after for h in market.hidden.values()), "some reps drift"


def test_overload_and_juniors_improving_move_the_true_odds():
    market = build(1)
    lead = market.leads[0]
    junior = next(r for r, h in market.hidden.items() if h.tier == "junior")
    start, later = market.config.start, market.config.start + (market.leads[-1].created_at - market.config.start)
    assert market.p_win(junior, lead, later, 0.0) > market.p_win(junior, lead, start, 0.0)
    assert market.p_win(junior, lead, start, 1.0) < market.p_win(junior, lead, start, 0.5)


def test_seeded_simulations_reproduce(policies):
    first = [r.to_dict() for r in run([3], policies, SMALL)]
    again = [r.to_dict() for r in run([3], policies, SMALL)]
    assert first == again
    other = [r.to_dict() for r in run([4], policies, SMALL)]
    assert [r["won"] for r in other] != [r["won"] for r in first]


def test_totals_add_up_and_every_lead_is_counted_once(policies):
    market = build(2, SMALL)
    for name, policy in [*policies.items(), (ORACLE, None)]:
        result = simulate(market, policy, name)
        assert result.leads == len(market.leads)
        assert sum(s["leads"] for s in result.per_rep.values()) == result.assigned <= result.leads
        assert sum(s["won"] for s in result.per_rep.values()) == result.won == sum(result.monthly_won)
        assert sum(result.monthly_leads) == result.leads
        assert 0 <= result.value_gini <= 1


def test_the_learning_policy_learns_through_the_core():
    """The simulator drives routing.ledger.assign/close: closed deals leave model rows that the policy reads."""
    from evaluation.run import _Pool

    market = build(1, SMALL)
    policy = load_policies()["learning"]
    pool = _Pool(market)
    for lead in market.leads:
        pool.step(lead, policy)
    pool.close_until(None)
    assert pool.models and all("t" in row for row in pool.models.values())
    assert all(entry.closed for entry in pool.ledger.values() if entry.rep_id)
    assert (pool.frame.open == 0).all(), "every closed deal released its rep"


def test_the_oracle_beats_round_robin_on_the_default_market_shape(policies):
    results = run([1], {BASELINE: policies[BASELINE]}, replace(SMALL, days=60))
    rows = summary(results)
    assert rows[ORACLE]["lift"] > 0.2


def test_simulate_command_writes_markdown_json_and_charts(tmp_path: Path, capsys):
    policy = Path(__file__).resolve().parents[2] / "deploy" / "policies" / "learning.yaml"
    args = ["simulate", "--seed", "1", "--policy", str(policy), "--days", "20", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| learning |" in out and "| oracle |" in out
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["seeds"] == [1] and {r["policy"] for r in data["results"]} == {BASELINE, "learning", ORACLE}
    assert "# leadrelay simulate" in (tmp_path / "report.md").read_text()
    for chart in ("conversion.png", "fairness.png", "monthly.png"):
        assert (tmp_path / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_names_an_invalid_policy_file_in_one_line(tmp_path: Path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: bad\nversion: 1\nstrategies:\n  default:\n    scorers: {}\n    objective: {load_cost: 99}\n")
    assert main(["simulate", "--policy", str(bad), "--out", str(tmp_path / "out"), "--no-charts"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"policy file {bad}" in err and "load_cost" in err
