"""`leadrelay replay`: a recorded history re-decided through the pure core, and the off-policy estimate."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from evaluation.history import BEGINNING, History, RosterChange, from_jsonl, recorded, write_jsonl
from evaluation.market import INDUSTRIES, HiddenRep, MarketConfig, build
from evaluation.replay import Replayer, summarize
from evaluation.run import BASELINE, POLICIES, load_policies
from routing.model import Rep
from routing.policy import parse_policy
from schemas.events import DealClosed, LeadCreated, RepUpdated
from streams.tools.cli import main

SMALL = MarketConfig(days=30, leads_per_day=6.0, capacity=4)  # small books: capacity and deals matter


@pytest.fixture(scope="module")
def policies():
    return load_policies()


def _roundtrip(history: History, tmp: Path) -> History:
    """Through the files a user would pass, so the JSON-lines path is what is tested."""
    return from_jsonl(**write_jsonl(history, tmp))


@pytest.mark.parametrize("name", [BASELINE, "least-loaded", "full", "learning"])
def test_the_historical_policy_reproduces_every_recorded_decision(name, policies, tmp_path) -> None:
    policy = policies[name]
    history = _roundtrip(recorded(build(4, SMALL), policy), tmp_path)
    assert any(d.reason == "no_eligible_rep" for d in history.decisions), "books fill up: capacity is exercised"
    run = Replayer(policy).run(history)
    recorded_by_lead = {d.lead_id: d for d in history.decisions}
    assert len(run.rows) == len(history.leads) == len(recorded_by_lead)
    for row in run.rows:
        assert row.candidate == recorded_by_lead[row.lead_id], row.lead_id  # the whole decision, explanation too
    summary = summarize(run, resamples=200)
    assert summary["agreement"] == 1.0
    c = summary["conversion"]
    assert c["matched"] == c["n"] > 0
    assert c["candidate"] == c["historical"] and c["diff"] == 0.0 and c["diff_low"] == c["diff_high"] == 0.0


def test_another_policy_disagrees_and_its_load_adds_up(policies) -> None:
    history = recorded(build(4, SMALL), policies[BASELINE])
    run = Replayer(policies["learning"]).run(history)
    summary = summarize(run, resamples=100)
    assert 0 < summary["agreement"] < 0.5
    pool = summary["pools"]["sim"]
    for side in ("historical", "candidate"):
        per_rep = sum(row.get(f"{side}_leads", 0) for row in pool["per_rep"].values())
        assert (
            per_rep
            == pool[side]["assigned"]
            == sum(
                1
                for r in run.rows
                if (r.historical if side == "historical" else r.candidate).rep_id  # type: ignore[union-attr]
            )
        )


def test_replay_is_deterministic(policies) -> None:
    history = recorded(build(5, SMALL), policies[BASELINE])
    first = summarize(Replayer(policies["learning"]).run(history), resamples=100, seed=3)
    again = summarize(Replayer(policies["learning"]).run(history), resamples=100, seed=3)
    assert json.dumps(first, sort_keys=True, default=str) == json.dumps(again, sort_keys=True, default=str)


T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_the_roster_applies_as_of_each_leads_time() -> None:
    """A rep who goes away mid-history is not chosen after that point, and was before."""
    history = History()
    history.roster = [
        (BEGINNING, RosterChange("a", RepUpdated(rep_id="a", pools=["p"], capacity=None))),
        (BEGINNING, RosterChange("b", RepUpdated(rep_id="b", pools=["p"], capacity=None))),
        (T0 + timedelta(hours=1), RosterChange("b", RepUpdated(rep_id="b", pools=["p"], availability="away"))),
        (T0 + timedelta(hours=2), RosterChange("a", None)),  # a tombstone: a leaves every pool
    ]
    history.leads = [
        (T0 + timedelta(minutes=m), LeadCreated(lead_id=f"L{m}", created_at=T0 + timedelta(minutes=m), pool="p"))
        for m in range(0, 180, 10)
    ]
    run = Replayer(parse_policy((POLICIES / "weighted-rotation.yaml").read_text())).run(history)
    by_minute = {int(r.lead_id[1:]): r.candidate for r in run.rows}
    assert {by_minute[m].rep_id for m in range(0, 60, 10)} == {"a", "b"}
    assert {by_minute[m].rep_id for m in range(60, 120, 10)} == {"a"}
    assert {by_minute[m].reason for m in range(120, 180, 10)} == {"no_eligible_rep"}


def test_a_deal_credits_the_rep_who_worked_the_lead_and_frees_the_candidates_holder() -> None:
    """History gave L1 to b; the candidate gives it to a. The deal frees a's book (a gets L2 again, at
    capacity 1) and is recorded as b's outcome, not a's."""
    history = History()
    for rep in ("a", "b"):
        history.roster.append((BEGINNING, RosterChange(rep, RepUpdated(rep_id=rep, pools=["p"], capacity=1))))
    lead1 = LeadCreated(lead_id="L1", created_at=T0, pool="p")
    lead2 = LeadCreated(lead_id="L2", created_at=T0 + timedelta(hours=2), pool="p")
    history.leads = [(lead1.created_at, lead1), (lead2.created_at, lead2)]
    history.deals = [(T0 + timedelta(hours=1), DealClosed(lead_id="L1", outcome="won", closed_at=T0))]
    first = Replayer(parse_policy((POLICIES / "weighted-rotation.yaml").read_text())).run(history)
    holder = first.rows[0].candidate.rep_id
    other = "b" if holder == "a" else "a"
    history.decisions = [first.rows[0].candidate.model_copy(update={"rep_id": other})]
    run = Replayer(parse_policy((POLICIES / "weighted-rotation.yaml").read_text())).run(history)
    pool = run.pools["p"]
    assert run.rows[0].candidate.rep_id == holder and not run.rows[0].agrees
    assert pool.ledger["L1"].status == "won"
    assert pool.buckets.get(other) and not pool.buckets.get(holder)  # the outcome is the historical rep's
    assert run.rows[0].outcome == "won"


def _planted_market(seed: int):
    """Four reps, one of whom ('ace') truly wins saas leads at 0.6; everybody else wins everything at 0.2.
    Only the ace declares the saas tag, and nobody is ever overloaded (no capacity)."""
    base, strong = math.log(0.2 / 0.8), math.log(0.6 / 0.4) - math.log(0.2 / 0.8)
    config = MarketConfig(
        days=200,
        leads_per_day=8.0,
        base_logit=dict.fromkeys(("senior", "mid", "junior"), base),
        strong=strong,
        overload=0.0,
    )
    market = build(seed, config)
    hidden, reps = {}, {}
    for rep_id in ("ace", "bo", "cy", "di"):
        skills = ("saas",) if rep_id == "ace" else ()
        hidden[rep_id] = HiddenRep(rep_id, "mid", base, skills, "none", skills, size_band=-1)
        reps[rep_id] = Rep(rep_id=rep_id, tier="mid", tags={"saas": 1} if skills else {}, capacity=None)
    return replace(market, reps=reps, hidden=hidden)


CANDIDATE = """
id: to-the-specialist
strategies:
  default:
    must_have: [{tag: "{industry}"}]
    relax: [{drop_must_have: all}]
    scorers: {rotation: 1.0}
"""


def test_the_off_policy_estimate_recovers_a_planted_effect() -> None:
    market = _planted_market(8)
    assert "saas" in INDUSTRIES
    history = recorded(market, parse_policy((POLICIES / "weighted-rotation.yaml").read_text()))
    run = Replayer(parse_policy(CANDIDATE)).run(history)
    saas = [r for r in run.rows if r.segment == "sim|industry=saas"]
    assert saas and {r.candidate.rep_id for r in saas} == {"ace"}
    c = summarize(run, resamples=1000, seed=1)["conversion"]
    scored = [r for r in run.rows if r.outcome is not None]
    assert c["n"] == len(scored) > 1000
    lead = {lead.lead_id: lead for lead in market.leads}

    def truth(rep_of) -> float:
        return sum(market.p_win(rep_of(r), lead[r.lead_id], lead[r.lead_id].created_at, 0.0) for r in scored) / len(
            scored
        )

    true_candidate = truth(lambda r: r.candidate.rep_id)
    true_history = truth(lambda r: r.historical.rep_id)
    assert true_candidate - true_history > 0.03, "the planted effect is there to be found"
    assert c["candidate_low"] <= true_candidate <= c["candidate_high"]
    assert c["diff_low"] <= true_candidate - true_history <= c["diff_high"]
    assert c["diff_low"] > 0, "and the interval tells it from no effect"
    assert not c["weak"]


def test_an_estimate_without_overlap_says_it_is_weak() -> None:
    from evaluation.offpolicy import estimate

    segments = ["p|x"] * 40
    e = estimate(segments, ["a"] * 40, ["b"] * 40, [True] * 10 + [False] * 30, resamples=50)
    assert e.matched == 0 and e.weak and "priors" in e.why
    assert 0 < e.candidate < 1  # the model's prior for a rep history never tried, not an observation


def test_the_cli_replays_files_and_writes_markdown_json_and_charts(policies, tmp_path, capsys) -> None:
    files = write_jsonl(recorded(build(4, SMALL), policies["least-loaded"]), tmp_path / "history")
    out = tmp_path / "out"
    args = ["replay", "--policy", str(POLICIES / "frappe-load-balancing.yaml"), "--out", str(out), "--resamples", "50"]
    args += [arg for name, path in files.items() for arg in (f"--{name}", str(path))]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "same rep as history: 100.0%" in printed
    data = json.loads((out / "replay.json").read_text())
    assert data["agreement"] == 1.0 and data["policy"]["id"] == "frappe-load-balancing"
    assert {p.name for p in out.iterdir()} == {"replay.md", "replay.json", "replay-load.png", "replay-conversion.png"}


def test_the_cli_names_a_bad_line_without_quoting_it(tmp_path, capsys) -> None:
    leads = tmp_path / "leads.jsonl"
    leads.write_text('{"lead_id": "L1", "created_at": "2026-01-01T00:00:00Z"}\n{"lead_id": "L2", "contact": 5}\n')
    args = ["replay", "--policy", str(POLICIES / "weighted-rotation.yaml"), "--leads", str(leads)]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{leads}, line 2" in err and "5" not in err.split("line 2")[1]
