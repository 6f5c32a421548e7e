"""Decide on expected value, and explore within a budget: seeded by the lead, new reps first."""

from __future__ import annotations

from datetime import timedelta

from routing import learning
from routing.decide import decide
from routing.model import Load
from tests.factories import NOW, make_lead, make_policy, make_rep, make_view

LEARN = {"half_life_days": None, "load_bands": False, "tag_prior": 0.0}


def _policy(exploration=None, **objective):
    strategy = {"scorers": {}, "objective": objective or {}}
    if exploration is not None:
        strategy["exploration"] = exploration
    return make_policy(strategy, learning=LEARN)


def _taught(frame, rep_id, won, lost, feature="industry=saas"):
    row = None
    for k in range(won + lost):
        row = learning.update(row, [feature], k < won, at=NOW - timedelta(days=1))
    frame.set_model(rep_id, row)


def _view(loads=None):
    frame = make_view([make_rep(rep_id=r, capacity=10) for r in ("good", "weak", "new")], loads)
    _taught(frame, "good", 30, 20)
    _taught(frame, "weak", 5, 45)
    return frame


def test_decides_on_expected_value_and_explains_it():
    d = decide(make_lead(industry="saas", estimated_value=2000.0), _view(), _policy(), now=NOW)
    assert d.rep_id == "good"
    facts = d.explanation.chosen.facts
    assert 0.5 < facts["p_win"] < 0.62
    assert abs(facts["expected_value"] - 2000.0 * facts["p_win"]) < 1e-3
    assert facts["p_sd"] > 0 and facts["deals"] == 50
    assert f"P(win) {facts['p_win']:.2f} +/- " in d.explanation.summary
    # in revenue units: the score is the expected value minus the load cost (no rescaling)
    assert d.explanation.chosen.score == round(facts["expected_value"] - facts["load_cost"], 6)


def test_probability_units_ignore_the_value():
    d = decide(make_lead(industry="saas", estimated_value=2000.0), _view(), _policy(unit="probability"), now=NOW)
    assert d.explanation.chosen.score <= 1.0


def test_load_cost_is_in_the_same_units_and_can_outweigh_a_small_edge():
    # with the best rep nearly full, a large load cost moves the lead to the next one
    loads = {"good": Load(open=9, assigned=9)}
    cheap = decide(make_lead(industry="saas"), _view(loads), _policy(load_cost=0.0), now=NOW)
    dear = decide(make_lead(industry="saas"), _view(loads), _policy(load_cost=10.0), now=NOW)
    assert cheap.rep_id == "good"
    assert dear.rep_id != "good"
    assert dear.explanation.chosen.facts["load_cost"] == 0.0


def test_without_exploration_the_best_rep_always_wins():
    policy = _policy()
    reps = {decide(make_lead(lead_id=f"L{k}", industry="saas"), _view(), policy, now=NOW).rep_id for k in range(40)}
    assert reps == {"good"}


def test_exploration_tries_new_reps_first_within_the_budget():
    policy = _policy({"budget": 1.0, "min_deals": 5})
    chosen = [decide(make_lead(lead_id=f"L{k}", industry="saas"), _view(), policy, now=NOW) for k in range(40)]
    assert {d.rep_id for d in chosen} == {"new"}, "a rep with no deals is tried before the known ones"
    assert all("explored (new rep" in " ".join(d.explanation.notes) for d in chosen)


def test_a_zero_budget_never_explores():
    policy = _policy({"budget": 0.0})
    reps = {decide(make_lead(lead_id=f"L{k}", industry="saas"), _view(), policy, now=NOW).rep_id for k in range(40)}
    assert reps == {"good"}


def test_thompson_samples_replay_identically_and_vary_across_leads():
    policy = _policy({"budget": 1.0, "min_deals": 0})
    frame = _view()
    _taught(frame, "new", 3, 7)
    first = [decide(make_lead(lead_id=f"L{k}", industry="saas"), frame, policy, now=NOW) for k in range(60)]
    again = [decide(make_lead(lead_id=f"L{k}", industry="saas"), frame, policy, now=NOW) for k in range(60)]
    assert [d.rep_id for d in first] == [d.rep_id for d in again]
    assert [d.explanation.notes for d in first] == [d.explanation.notes for d in again]
    counts = {r: sum(d.rep_id == r for d in first) for r in ("good", "weak", "new")}
    assert counts["good"] > counts["new"] > 0, counts  # mostly the best, sometimes the uncertain one
    assert counts["weak"] < counts["new"]


def test_exploration_share_limits_which_leads_may_explore():
    policy = _policy({"budget": 1.0, "share": 0.0})
    reps = {decide(make_lead(lead_id=f"L{k}", industry="saas"), _view(), policy, now=NOW).rep_id for k in range(20)}
    assert reps == {"good"}


def test_ucb_prefers_the_uncertain_rep_when_means_are_close():
    policy = _policy({"method": "ucb", "budget": 0.5, "min_deals": 0, "ucb_width": 2.0})
    frame = _view()
    _taught(frame, "new", 2, 2)  # 50% on four deals: about the same mean as good, far less evidence
    d = decide(make_lead(industry="saas"), frame, policy, now=NOW)
    assert d.rep_id == "new"
    assert "ucb" in " ".join(d.explanation.notes)
