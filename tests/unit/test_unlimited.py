"""Unlimited capacity (`capacity: null`): never at capacity, finite scores, JSON-safe explanations, metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from routing import fairness
from routing.model import Rep
from schemas.events import RepUpdated
from streams.web.metrics import Metrics
from tests.factories import make_policy, make_rep, make_view, run_leads

ROTATION = make_policy({"scorers": {"rotation": 1}})


def test_a_pure_rotation_without_a_limit_is_not_capped_at_ten() -> None:
    frame = make_view([make_rep(rep_id="a", capacity=None), make_rep(rep_id="b", capacity=None)])
    results = run_leads(frame, ROTATION, 60)
    assert all(r.decision.reason == "assigned" for r in results)
    assert frame.open.tolist() == [30, 30]


@pytest.mark.parametrize(
    "scorers",
    [{"load": 1}, {"load": 1, "rotation": 0.001}, {"fairness": 1, "load": 0.5}, {"rotation": 1}],
)
def test_unlimited_reps_score_finite_and_explain_without_a_capacity(scorers) -> None:
    reps = [make_rep(rep_id="a", capacity=None), make_rep(rep_id="b", capacity=None), make_rep(rep_id="c", capacity=4)]
    frame = make_view(reps, {"a": 3, "b": 1, "c": 2})
    for i, result in enumerate(run_leads(frame, make_policy({"scorers": scorers}), 12, estimated_value=100.0)):
        decision = result.decision
        assert decision.rep_id is not None, i
        for scored in [decision.explanation.chosen, *decision.explanation.runners_up]:
            assert scored is not None
            values = [scored.score, *scored.components.values(), *scored.facts.values()]
            assert all(math.isfinite(v) for v in values), scored
            assert ("capacity" in scored.facts) == (scored.rep_id == "c")
        json.loads(decision.model_dump_json())  # strict JSON: no Infinity or NaN
        assert "nan" not in decision.explanation.summary.lower()
        assert "inf" not in decision.explanation.summary.lower()


def test_load_prefers_the_unlimited_rep_with_fewer_open_leads() -> None:
    frame = make_view([make_rep(rep_id="a", capacity=None), make_rep(rep_id="b", capacity=None)], {"a": 5, "b": 4})
    [result] = run_leads(frame, make_policy({"scorers": {"load": 1}}), 1)
    assert result.decision.rep_id == "b"
    chosen = result.decision.explanation.chosen
    assert chosen is not None and chosen.facts["open"] == 4
    assert "4 open (no limit)" in result.decision.explanation.summary


def test_an_unlimited_rep_is_never_excluded_at_capacity() -> None:
    frame = make_view([make_rep(rep_id="a", capacity=None)], {"a": 100_000})
    [result] = run_leads(frame, make_policy(), 1)
    assert result.decision.rep_id == "a"


def test_fair_shares_stay_finite_with_unlimited_reps() -> None:
    shares = fairness.fair_shares(np.array([np.inf, 10.0, 5.0]), np.array([1.0, 1.0, 2.0]))
    assert np.isfinite(shares).all() and shares.sum() == pytest.approx(1.0)
    assert shares.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3])  # no limit counts as the largest limit
    only = fairness.fair_shares(np.array([np.inf, np.inf]), np.array([1.0, 3.0]))
    assert only.tolist() == pytest.approx([0.25, 0.75])  # nobody limited: shares by weight


def test_rep_capacity_null_means_unlimited_in_every_pool_unless_split() -> None:
    event = RepUpdated.model_validate(
        {"rep_id": "r", "pools": ["a", "b", "c"], "capacity": None, "pool_capacity": {"b": 3, "c": None}}
    )
    assert [Rep.from_event(event, p).capacity for p in ("a", "b", "c")] == [None, 3, None]
    limited = RepUpdated.model_validate({"rep_id": "r", "pools": ["a", "c"], "pool_capacity": {"c": None}})
    assert [Rep.from_event(limited, p).capacity for p in ("a", "c")] == [10, None]
    rep = Rep.from_event(event, "a")
    assert Rep.from_dict(json.loads(json.dumps(rep.to_dict()))) == rep
    assert Rep.from_dict({"rep_id": "r"}).capacity == 10  # rows stored before: the default


def test_frame_limits_for_metrics() -> None:
    frame = make_view([make_rep(rep_id="a", capacity=None), make_rep(rep_id="b", capacity=3)])
    assert (frame.limit("a"), frame.limit("b")) == (None, 3)
    assert frame.total_capacity() is None  # an active rep without a limit: the pool has none
    inactive = make_view([make_rep(rep_id="a", capacity=None, active=False), make_rep(rep_id="b", capacity=3)])
    assert inactive.total_capacity() == 3


def test_metrics_leave_out_the_capacity_of_unlimited_reps_and_pools() -> None:
    m = Metrics.create(CollectorRegistry(), runtime_collectors=False, per_rep=True, max_reps=10)
    m.set_rep_load("dach", "anna", 2, 5)
    m.set_pool_state("dach", open_leads=3, capacity=10)
    m.set_rep_load("dach", "anna", 2, None)  # anna lost her limit: no stale capacity series stays
    m.set_pool_state("dach", open_leads=3, capacity=None)
    names = {s.name: s.value for metric in m.registry.collect() for s in metric.samples}
    assert "leadrelay_rep_capacity_leads" not in names and "leadrelay_capacity_leads" not in names
    assert names["leadrelay_rep_open_leads"] == 2 and names["leadrelay_open_leads"] == 3
