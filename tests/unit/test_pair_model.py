"""routing.pairmodel + routing.learning: the calibrated pair model recovers planted signals, follows drift,
starts new reps from their tier and tags, and restores exactly from its table rows."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pytest

from routing import learning, pairmodel
from routing.frame import PoolFrame
from routing.ledger import assign, close
from routing.model import PoolState
from routing.policy import Learning, Policy
from tests.factories import NOW, apply, make_deal, make_lead, make_rep

START = NOW - timedelta(days=400)
INDUSTRIES = ("saas", "retail", "health")


def _frame(reps, models=None) -> PoolFrame:
    by_id = {r.rep_id: r for r in reps}
    return PoolFrame("p", by_id, models=models or {}, state=PoolState(members=tuple(sorted(by_id))))


def _teach(models: dict, rep_id: str, feats: list[str], won: bool, at: datetime, half_life: float | None) -> None:
    models[rep_id] = learning.update(models.get(rep_id), feats, won, at=at, half_life=half_life)


def _planted(truth, days: int, per_day: int, half_life: float | None, start: datetime = START, models=None, seed=0):
    """Closed deals for reps a/b/c over `days` days; truth(rep, industry, day) is the win probability."""
    rng = np.random.default_rng(seed)
    models = {} if models is None else models
    for day in range(days):
        at = start + timedelta(days=day)
        for _ in range(per_day):
            rep = str(rng.choice(["a", "b", "c"]))
            industry = str(rng.choice(INDUSTRIES))
            won = bool(rng.random() < truth(rep, industry, day))
            _teach(models, rep, [f"industry={industry}"], won, at, half_life)
    return models


def _p(frame: PoolFrame, cfg: Learning, industry: str, now: datetime) -> dict[str, float]:
    post = pairmodel.posterior(frame, np.arange(frame.n), [f"industry={industry}"], cfg, now)
    return dict(zip(frame.ids, post.p.tolist(), strict=True))


STRENGTHS = {("a", "saas"): 0.6, ("b", "retail"): 0.5, ("c", "health"): 0.45}


def test_recovers_a_planted_pair_signal() -> None:
    cfg = Learning(half_life_days=None, load_bands=False, tag_prior=0)
    models = _planted(lambda rep, ind, day: STRENGTHS.get((rep, ind), 0.1), days=200, per_day=12, half_life=None)
    frame = _frame([make_rep(rep_id=r) for r in "abc"], models)
    end = START + timedelta(days=200)
    for (rep, industry), truth in STRENGTHS.items():
        p = _p(frame, cfg, industry, end)
        assert abs(p[rep] - truth) < 0.08, (rep, industry, p)
        assert max(p, key=p.get) == rep
        for other in set("abc") - {rep}:
            assert abs(p[other] - 0.1) < 0.07, (other, industry, p)


def test_follows_a_planted_drift_with_a_half_life_and_not_without() -> None:
    # Until day 150 a is the saas expert; from then on b is, and a is not.
    def truth(rep, industry, day):
        expert = "a" if day < 150 else "b"
        return 0.6 if (rep == expert and industry == "saas") else 0.15

    end = START + timedelta(days=300)
    reps = [make_rep(rep_id=r) for r in "abc"]
    decaying = _frame(reps, _planted(truth, 300, 6, half_life=30.0, seed=1))
    forever = _frame(reps, _planted(truth, 300, 6, half_life=None, seed=1))
    p = _p(decaying, Learning(half_life_days=30.0, load_bands=False, tag_prior=0), "saas", end)
    assert p["b"] > 0.45 and p["a"] < 0.3, p
    q = _p(forever, Learning(half_life_days=None, load_bands=False, tag_prior=0), "saas", end)
    assert q["a"] > 0.3, "all-time counts still believe the old expert"
    assert p["b"] - p["a"] > q["b"] - q["a"] + 0.1


def test_a_new_rep_starts_from_its_tier_and_its_declared_tags() -> None:
    cfg = Learning(half_life_days=None, load_bands=False, tag_prior=0.3)
    # seniors win 40%, juniors 10% (all industries)
    models = {}
    for k in range(200):
        at = START + timedelta(hours=k)
        _teach(models, "s1", ["industry=saas"], k % 5 < 2, at, None)
        _teach(models, "j1", ["industry=saas"], k % 10 == 0, at, None)
    reps = [
        make_rep(rep_id="s1", tier="senior"),
        make_rep(rep_id="j1", tier="junior"),
        make_rep(rep_id="s-new", tier="senior"),
        make_rep(rep_id="j-new", tier="junior"),
        make_rep(rep_id="j-tagged", tier="junior", tags={"saas": 3}),
    ]
    p = _p(_frame(reps, models), cfg, "saas", NOW)
    assert p["s-new"] > 0.3 > 0.15 > p["j-new"], p  # each new rep near its own tier
    assert p["j-tagged"] > p["j-new"] + 0.05, "a declared tag lifts the prior"
    post = pairmodel.posterior(_frame(reps, models), np.arange(5), ["industry=saas"], cfg, NOW)
    sd = dict(zip(sorted(r.rep_id for r in reps), post.sd.tolist(), strict=True))
    assert sd["s-new"] > 2 * sd["s1"], "less evidence, more uncertainty"


def test_update_is_order_independent_with_a_half_life() -> None:
    events = [(START + timedelta(days=d), d % 3 == 0, [f"industry={INDUSTRIES[d % 3]}"]) for d in range(40)]
    forward = backward = None
    for at, won, feats in events:
        forward = learning.update(forward, feats, won, at=at, half_life=20.0)
    for at, won, feats in reversed(events):
        backward = learning.update(backward, feats, won, at=at, half_life=20.0)
    assert forward is not None and backward is not None
    assert forward["t"] == backward["t"]
    assert forward["n"] == pytest.approx(backward["n"])
    for key, counts in forward["f"].items():
        assert counts == pytest.approx(backward["f"][key])


def test_legacy_rows_stay_whole_counts_without_a_half_life() -> None:
    row = learning.update(None, ["industry=saas"], True)
    assert row == {"n": [1, 0], "f": {"industry=saas": [1, 0]}}


POLICY = Policy.model_validate(
    {
        "learning": {"features": ["industry", "company_size", "attributes.segment"], "half_life_days": 45},
        "strategies": {"default": {"scorers": {}, "objective": {"unit": "probability"}}},
    }
)


def _run_log(frame: PoolFrame, rows: dict) -> None:
    """Assign and close leads through the ledger, writing model rows as the route agent does."""
    entries = {}
    for k in range(60):
        lead = make_lead(
            lead_id=f"L{k}",
            industry=INDUSTRIES[k % 3],
            company_size=[10, 300, 5000][k % 3],
            attributes={"segment": "SMB" if k % 2 else "ent"},
            estimated_value=1000.0,
            created_at=START + timedelta(days=k),
        )
        result = assign(lead, frame, POLICY, None, now=lead.created_at)
        apply(frame, result)
        entries[lead.lead_id] = result.entry
        if k >= 5:
            entry = entries[f"L{k - 5}"]
            rep = entry.rep_id
            assert rep is not None
            at = START + timedelta(days=k, hours=1)
            deal = make_deal(lead_id=f"L{k - 5}", outcome="won" if k % 4 == 0 else "lost", closed_at=at)
            done = close(deal, entry, frame.loads[frame.index[rep]], {}, rows.get(rep))
            assert done.model is not None and done.released is not None
            rows[rep] = json.loads(json.dumps(done.model))  # what the changelog stores
            frame.set_model(rep, rows[rep])
            frame.set_load(*done.released)


def test_parameters_restored_from_the_rows_equal_the_ones_before_a_restart() -> None:
    reps = {r: make_rep(rep_id=r, tier="junior" if r == "c" else "senior") for r in "abcd"}
    live = PoolFrame("p", reps, state=PoolState(members=tuple(reps)))
    rows: dict = {}
    _run_log(live, rows)
    assert rows and all("t" in row for row in rows.values())
    features = {f for row in rows.values() for f in row["f"]}
    assert {"company_size=250-999", "attributes.segment=smb", "industry=saas"} <= features
    assert any(f.startswith("load=") for f in features)
    restored = PoolFrame("p", reps, {r: live.loads[live.index[r]] for r in reps}, models=rows, state=live.state)
    lead_feats = ["industry=saas", "company_size=250-999", "attributes.segment=smb"]
    before = pairmodel.posterior(live, np.arange(4), lead_feats, POLICY.learning, NOW)  # type: ignore[arg-type]
    after = pairmodel.posterior(restored, np.arange(4), lead_feats, POLICY.learning, NOW)  # type: ignore[arg-type]
    assert before.p.tolist() == after.p.tolist()
    assert before.n.tolist() == after.n.tolist()
    # and the same log gives the same rows (deterministic)
    again: dict = {}
    _run_log(PoolFrame("p", reps, state=PoolState(members=tuple(reps))), again)
    assert again == rows


@pytest.mark.parametrize(("size", "band"), [(0, "<50"), (49, "<50"), (50, "50-249"), (999, "250-999"), (1000, "1000+")])
def test_company_size_bands(size: int, band: str) -> None:
    assert learning.size_band(size, [50, 250, 1000]) == band


def test_policy_features_include_region_and_attributes() -> None:
    lead = make_lead(region="EMEA", company_size=120, attributes={"segment": "SMB"}, industry="SaaS")
    feats = learning.features(
        lead,
        "premium",
        ["region", "company_size", "attributes.segment", "industry", "value_tier", "product"],
        [50, 250],
    )
    assert feats == ["region=emea", "company_size=50-249", "attributes.segment=smb", "industry=saas", "tier=premium"]


@pytest.mark.parametrize(("tagged_rate", "expect_high"), [(0.6, True), (0.2, False)])
def test_what_a_declared_tag_is_worth_is_learned_from_the_pool(tagged_rate: float, expect_high: bool) -> None:
    """Deals recorded with "tag=L" (the rep's declared level for the lead) teach the tag's worth: worth
    much where tagged reps win more, about nothing where tags are mere claims."""
    cfg = Learning(half_life_days=None, load_bands=False, tag_prior=0.1)
    models: dict = {}
    for k in range(400):
        at = START + timedelta(hours=k)
        _teach(models, "a", ["industry=saas", "tag=4"], (k % 100) < tagged_rate * 100, at, None)
        _teach(models, "b", ["industry=retail", "tag=0"], k % 5 == 0, at, None)
    reps = [make_rep(rep_id="a", tags={"saas": 4}), make_rep(rep_id="b")]
    frame = _frame(reps, models)
    lv = pairmodel._levels(frame, cfg, NOW)
    effects = pairmodel.tag_effects(frame, lv, cfg)
    assert effects[0] == 0.0
    if expect_high:
        assert effects[4] > 1.0 > 4 * cfg.tag_prior, effects
    else:
        assert abs(effects[4]) < 0.2, effects
    fixed = pairmodel.tag_effects(frame, lv, cfg.model_copy(update={"learn_tags": False}))
    assert fixed[4] == pytest.approx(0.4)


def test_assign_records_the_reps_load_band_and_tag_level() -> None:
    policy = Policy.model_validate(
        {"learning": {"features": ["industry"]}, "strategies": {"default": {"scorers": {}, "objective": {}}}}
    )
    frame = _frame([make_rep(rep_id="a", tags={"saas": 3}, capacity=4)])
    apply(frame, assign(make_lead(lead_id="x", industry="retail"), frame, policy, None, now=NOW))
    entry = assign(make_lead(lead_id="y", industry="saas"), frame, policy, None, now=NOW).entry
    assert entry.features == ("industry=saas", "load=<50", "tag=3")
    assert entry.half_life == 90.0
