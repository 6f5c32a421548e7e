"""routing.decide and routing.frame: eligibility, least-loaded scoring, rotation tie-break, explanation, determinism."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from routing.decide import EXCLUSIONS, decide, evaluate, lead_value, route, value_tier
from routing.frame import PoolFrame, day_keys
from routing.ids import decision_id, unit_hash
from routing.model import Load, PoolState, Rep
from routing.policy import DEFAULT_POLICY, Policy
from schemas.events import RepUpdated
from tests.factories import NOW, make_lead, make_policy, make_rep, make_view, run_leads

TODAY, WEEK, _ = day_keys(NOW)


def _decide(view, *, policy=DEFAULT_POLICY, lead=None, **kwargs):
    kwargs.setdefault("now", NOW)
    return decide(lead or make_lead(), view, policy, **kwargs)


def _why(rep: Rep, load: Load | int = 0, *, policy: Policy = DEFAULT_POLICY, lead=None, **kwargs) -> str | None:
    """The exclusion reason of a lone rep (None: eligible)."""
    decision = _decide(make_view([rep], {rep.rep_id: load}), policy=policy, lead=lead, **kwargs)
    excluded = decision.explanation.excluded
    assert sum(excluded.values()) + decision.explanation.eligible == 1
    if not excluded:
        assert decision.rep_id == rep.rep_id
        return None
    assert decision.rep_id is None
    [reason] = excluded
    return reason


def _today(**counters) -> Load:
    return Load(day=TODAY, week=WEEK, **counters)


# --- eligibility ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rep_kwargs", "open_leads", "excluded_ids", "expected"),
    [
        ({}, 0, frozenset(), None),
        ({"capacity": 3}, 2, frozenset(), None),
        ({"active": False}, 0, frozenset(), "inactive"),
        ({"availability": "away"}, 0, frozenset(), "unavailable"),
        ({"availability": "offline"}, 0, frozenset(), "unavailable"),
        ({"capacity": 3}, 3, frozenset(), "at_capacity"),
        ({"capacity": 3}, 7, frozenset(), "at_capacity"),
        ({"capacity": 0}, 0, frozenset(), "at_capacity"),
        ({}, 0, frozenset({"rep-a"}), "excluded"),
        ({}, 0, frozenset({"rep-other"}), None),
        # precedence: excluded > inactive > unavailable > at_capacity
        ({"active": False, "availability": "away", "capacity": 0}, 0, frozenset({"rep-a"}), "excluded"),
        ({"active": False, "availability": "away", "capacity": 0}, 0, frozenset(), "inactive"),
        ({"availability": "offline", "capacity": 0}, 0, frozenset(), "unavailable"),
    ],
)
def test_exclusion_reason(rep_kwargs, open_leads, excluded_ids, expected):
    assert _why(make_rep(**rep_kwargs), open_leads, exclude=excluded_ids) == expected


SHIFT = {"sat": ["09:00-17:00"]}  # NOW is Saturday 12:00 UTC
AWAY = ((NOW - timedelta(hours=1), NOW + timedelta(hours=1)),)


@pytest.mark.parametrize(
    ("rep_kwargs", "load", "policy", "lead_kwargs", "expected"),
    [
        ({"out_of_office": AWAY}, 0, {}, {}, "out_of_office"),
        ({"working_hours": {"sat": ["13:00-17:00"]}}, 0, {}, {}, "off_shift"),
        ({"working_hours": SHIFT}, 0, {}, {}, None),
        ({"working_hours": {"sat": ["13:00-17:00"]}}, 0, {"respect_working_hours": False}, {}, None),
        ({"daily_cap": 2}, _today(day_count=2, week_count=2), {}, {}, "daily_cap"),
        ({}, _today(day_count=2, week_count=2), {"caps": {"daily": 2}}, {}, "daily_cap"),
        ({"weekly_cap": 5}, _today(day_count=0, week_count=5), {}, {}, "weekly_cap"),
        ({}, _today(week_count=5), {"caps": {"weekly": 5}}, {}, "weekly_cap"),
        (
            {},
            _today(day_count=1, day_value=900.0),
            {"caps": {"daily_value": 1000}},
            {"estimated_value": 200},
            "value_cap",
        ),
        ({}, _today(day_count=1, day_value=800.0), {"caps": {"daily_value": 1000}}, {"estimated_value": 200}, None),
        (
            {"tier": "junior"},
            0,
            {"value_tiers": [{"name": "big", "min_value": 1000, "allowed_rep_tiers": ["senior"]}]},
            {"estimated_value": 5000},
            "tier_not_allowed",
        ),
        (
            {"tier": "junior"},
            0,
            {"value_tiers": [{"name": "big", "min_value": 1000, "allowed_rep_tiers": ["senior"]}]},
            {"estimated_value": 999},
            None,
        ),
        ({}, 0, {"strategies": {"default": {"must_have": [{"tag": "de"}]}}}, {}, "missing_tag"),
        (
            {"tags": {"de": 1}},
            0,
            {"strategies": {"default": {"must_have": [{"tag": "de", "level": 2}]}}},
            {},
            "missing_tag",
        ),
        ({"tags": {"de": 2}}, 0, {"strategies": {"default": {"must_have": [{"tag": "de", "level": 2}]}}}, {}, None),
        (
            {},
            Load(premium=4),
            {
                "value_tiers": [{"name": "vip", "min_value": 100}],
                "premium_cap": {"tier": "vip", "max_share": 0.4, "min_leads": 0},
            },
            {"estimated_value": 500},
            "premium_share_cap",
        ),
    ],
)
def test_policy_and_schedule_exclusions(rep_kwargs, load, policy, lead_kwargs, expected):
    rep = make_rep(**rep_kwargs)
    view = make_view([rep], {rep.rep_id: load})
    if expected == "premium_share_cap":
        view.set_state(PoolState(members=("rep-a",), premium=10))
    decision = _decide(view, policy=make_policy(**policy), lead=make_lead(**lead_kwargs))
    assert decision.explanation.excluded == ({expected: 1} if expected else {})
    assert decision.rep_id == (None if expected else "rep-a")


def test_a_rep_failing_every_check_is_counted_under_the_first_in_exclusions_order():
    assert EXCLUSIONS == (
        "excluded",
        "inactive",
        "unavailable",
        "out_of_office",
        "off_shift",
        "at_capacity",
        "daily_cap",
        "weekly_cap",
        "value_cap",
        "tier_not_allowed",
        "missing_tag",
        "premium_share_cap",
        "growth_channel",
    )
    # Everything wrong at once; each round fixes the reason just seen, so the next one shows.
    rep = {"active": False, "availability": "away", "out_of_office": AWAY, "working_hours": {"mon": ["09:00-10:00"]}}
    rep |= {"capacity": 1}
    load = {"open": 1, "day": TODAY, "day_count": 1, "day_value": 50.0, "week": WEEK, "week_count": 1, "premium": 1}
    caps = {"daily": 1, "weekly": 1, "daily_value": 1}
    exclude = frozenset({"rep-a"})
    fixes = {
        "excluded": frozenset,
        "inactive": lambda: rep.pop("active"),
        "unavailable": lambda: rep.pop("availability"),
        "out_of_office": lambda: rep.pop("out_of_office"),
        "off_shift": lambda: rep.pop("working_hours"),
        "at_capacity": lambda: rep.update(capacity=5),
        "daily_cap": lambda: caps.pop("daily"),
        "weekly_cap": lambda: caps.pop("weekly"),
        "value_cap": lambda: caps.pop("daily_value"),
        "tier_not_allowed": lambda: rep.update(tier="senior"),
        "missing_tag": lambda: rep.update(tags={"de": 1}),
        "premium_share_cap": lambda: load.update(premium=0),
    }
    seen = []
    reasons = [r for r in EXCLUSIONS if r != "growth_channel"]  # that one needs a growth lead (test_methods)
    for _ in reasons:
        policy = make_policy(
            {"must_have": [{"tag": "de"}]},
            caps=caps,
            value_tiers=[{"name": "vip", "min_value": 10, "allowed_rep_tiers": ["senior"]}],
            premium_cap={"tier": "vip", "max_share": 0.5, "min_leads": 0},
        )
        view = make_view([make_rep(**rep)], {"rep-a": Load(**load)})
        view.set_state(PoolState(members=("rep-a",), premium=1))
        decision = _decide(view, policy=policy, lead=make_lead(estimated_value=100), exclude=exclude)
        [reason] = decision.explanation.excluded
        seen.append(reason)
        result = fixes[reason]()
        if reason == "excluded":
            exclude = result
    assert seen == reasons
    view = make_view([make_rep(**rep)], {"rep-a": Load(**load)})
    assert _decide(view, policy=policy, lead=make_lead(estimated_value=100)).rep_id == "rep-a"


def test_explanation_counts_exclusions_per_reason():
    reps = [
        make_rep(rep_id="inactive-1", active=False),
        make_rep(rep_id="away-1", availability="away"),
        make_rep(rep_id="offline-1", availability="offline"),
        make_rep(rep_id="full-1", capacity=2),
        make_rep(rep_id="full-2", capacity=0),
        make_rep(rep_id="skip-1"),
        make_rep(rep_id="ok-1"),
    ]
    view = make_view(reps, {"full-1": 2, "ok-1": 1})
    decision = _decide(view, exclude=frozenset({"skip-1"}))
    assert decision.rep_id == "ok-1"
    assert decision.reason == "assigned"
    assert decision.explanation.eligible == 1
    assert decision.explanation.excluded == {"at_capacity": 2, "excluded": 1, "inactive": 1, "unavailable": 2}
    assert list(decision.explanation.excluded) == sorted(decision.explanation.excluded)
    assert decision.explanation.summary == (
        "score 0.900 (load 0.90, rotation 1.00), 1/10 open; strategy default; "
        "1 eligible, excluded: at_capacity 2, excluded 1, inactive 1, unavailable 2"
    )


def test_excluded_rep_is_never_chosen_even_when_least_loaded():
    view = make_view([make_rep(rep_id="a"), make_rep(rep_id="b")], {"b": 5})
    assert _decide(view).rep_id == "a"
    assert _decide(view, exclude=frozenset({"a"})).rep_id == "b"


def test_excluding_an_id_outside_the_pool_changes_nothing():
    view = make_view([make_rep(rep_id="a")])
    assert _decide(view, exclude=frozenset({"ghost"})).explanation.excluded == {}


# --- scoring -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reps", "loads", "expected"),
    [
        # 1/10 open beats 1/4 open: relative, not absolute load
        ([("a", 4), ("b", 10)], {"a": 1, "b": 1}, "b"),
        # 3/10 (0.7 left) loses to 1/4 (0.75 left)
        ([("a", 4), ("b", 10)], {"a": 1, "b": 3}, "a"),
        # absolute: fewer open wins at equal capacity
        ([("a", 5), ("b", 5), ("c", 5)], {"a": 2, "b": 1, "c": 3}, "b"),
        # unknown load means nothing open
        ([("a", 5), ("b", 5)], {"a": 1}, "b"),
        # big capacity rep with several open still has the most room
        ([("a", 2), ("b", 100)], {"a": 0, "b": 40}, "a"),
        ([("a", 2), ("b", 100)], {"a": 1, "b": 40}, "b"),
    ],
)
def test_least_loaded_relative_to_capacity(reps, loads, expected):
    view = make_view([make_rep(rep_id=r, capacity=c) for r, c in reps], loads)
    decision = _decide(view)
    assert decision.rep_id == expected
    chosen = decision.explanation.chosen
    assert chosen is not None
    assert chosen.rep_id == expected
    capacity = dict(reps)[expected]
    open_ = loads.get(expected, 0)
    remaining = (capacity - open_) / capacity
    assert chosen.components == {"load": pytest.approx(remaining), "rotation": 1.0}  # rotation: tie-break only
    assert chosen.score == pytest.approx(remaining, abs=1e-6)
    assert chosen.facts["open"] == open_
    assert chosen.facts["capacity"] == capacity
    assert decision.explanation.weights == {"load": 1.0}


def test_load_only_policy_scores_remaining_capacity_exactly():
    view = make_view([make_rep(rep_id="a", capacity=4), make_rep(rep_id="b", capacity=10)], {"a": 1, "b": 3})
    decision = _decide(view, policy=make_policy({"scorers": {"load": 1}}))
    assert decision.rep_id == "a"
    assert decision.explanation.chosen.score == 0.75
    assert decision.explanation.chosen.components == {"load": 0.75}
    assert [(r.rep_id, r.score) for r in decision.explanation.runners_up] == [("b", 0.7)]


def test_zero_weight_scorers_are_left_out():
    policy = make_policy({"scorers": {"load": 1, "performance": 0}})
    decision = _decide(make_view([make_rep()]), policy=policy)
    assert decision.explanation.weights == {"load": 1.0}
    assert set(decision.explanation.chosen.components) == {"load"}


# --- rotation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "cursor", "expected_order"),
    [
        (["c", "a", "b"], None, ["a", "b", "c"]),
        (["c", "a", "b"], "a", ["b", "c", "a"]),
        (["c", "a", "b"], "b", ["c", "a", "b"]),
        (["c", "a", "b"], "c", ["a", "b", "c"]),
        # cursor no longer in the roster: from the top (route moves the cursor back when its rep leaves)
        (["a", "c", "d"], "b", ["a", "c", "d"]),
        (["a", "b"], "z", ["a", "b"]),
        ([], "a", []),
    ],
)
def test_rotation_rank(ids, cursor, expected_order):
    frame = make_view([make_rep(rep_id=r) for r in ids], cursor=cursor)
    rank = frame.rotation_rank()
    assert sorted(rank.tolist()) == list(range(len(ids)))
    assert [frame.ids[i] for i in np.argsort(rank)] == expected_order


@pytest.mark.parametrize(
    ("members", "positions", "expected"),
    [
        # join order, not the ids' sort order (e-mail-like ids sort in surprising ways)
        (("zoe@x.io", "Adam@x.io", "bob@x.io"), {}, ["zoe@x.io", "Adam@x.io", "bob@x.io"]),
        # explicit positions first, lower first; ties and the rest in join order
        (("a", "b", "c", "d"), {"c": 0, "d": 1}, ["c", "d", "a", "b"]),
        (("a", "b", "c", "d"), {"d": 5, "b": 5}, ["b", "d", "a", "c"]),
        # a rep the member list does not name (yet) comes last
        (("b",), {}, ["b", "a"]),
    ],
)
def test_rotation_follows_the_roster_order(members, positions, expected):
    reps = {r: make_rep(rep_id=r, position=positions.get(r)) for r in expected}
    frame = PoolFrame("p", reps, state=PoolState(members=members))
    assert frame.rotation_ids() == expected
    frame.set_state(PoolState(members=members, cursor=expected[0]))
    assert [frame.ids[i] for i in np.argsort(frame.rotation_rank())] == [*expected[1:], expected[0]]
    chosen = [r.decision.rep_id for r in run_leads(frame, make_policy({"scorers": {"rotation": 1}}), 2 * len(reps))]
    assert chosen == [*expected[1:], expected[0]] * 2


@pytest.mark.parametrize(
    ("ids", "cursor", "expected"),
    [
        (["rep-a", "rep-b", "rep-c"], None, "rep-a"),
        (["rep-a", "rep-b", "rep-c"], "rep-a", "rep-b"),
        (["rep-a", "rep-b", "rep-c"], "rep-b", "rep-c"),
        (["rep-a", "rep-b", "rep-c"], "rep-c", "rep-a"),  # wraps around
        (["rep-c", "rep-b", "rep-a"], "rep-a", "rep-b"),  # insertion order of the roster is irrelevant
        # a rep joined: it gets its turn in roster position (here: sorted members), no reset
        (["rep-a", "rep-b", "rep-bb", "rep-c"], "rep-b", "rep-bb"),
        (["rep-a", "rep-b", "rep-c", "rep-d"], "rep-c", "rep-d"),
    ],
)
def test_tie_goes_to_the_rep_after_the_cursor(ids, cursor, expected):
    view = make_view([make_rep(rep_id=r) for r in ids], {r: 2 for r in ids}, cursor=cursor)
    decision = _decide(view)
    assert decision.rep_id == expected
    # the runners-up tie with it and follow in rotation order
    order = [decision.rep_id, *(r.rep_id for r in decision.explanation.runners_up)]
    frame_order = [view.ids[i] for i in np.argsort(view.rotation_rank())]
    assert order == frame_order[: len(order)]


def test_tie_skips_ineligible_reps_after_the_cursor():
    reps = [make_rep(rep_id="a"), make_rep(rep_id="b", availability="away"), make_rep(rep_id="c")]
    assert _decide(make_view(reps, cursor="a")).rep_id == "c"


def test_rotation_only_breaks_ties_it_never_beats_a_lower_load():
    reps = [make_rep(rep_id="a"), make_rep(rep_id="b"), make_rep(rep_id="c")]
    # cursor says "b" is next, but "a" has strictly more room
    assert _decide(make_view(reps, {"a": 0, "b": 1, "c": 1}, cursor="a")).rep_id == "a"


def test_cursor_round_robin_over_successive_decisions():
    reps = [make_rep(rep_id=r) for r in ("a", "b", "c")]
    cursor = None
    chosen = []
    for _ in range(7):
        rep_id = _decide(make_view(reps, cursor=cursor)).rep_id
        chosen.append(rep_id)
        cursor = rep_id
    assert chosen == ["a", "b", "c", "a", "b", "c", "a"]


# --- no decision ---------------------------------------------------------------------------------


def test_nobody_eligible_gives_no_eligible_rep():
    reps = [make_rep(rep_id="a", active=False), make_rep(rep_id="b", capacity=1)]
    decision = _decide(make_view(reps, {"b": 1}))
    assert decision.rep_id is None
    assert decision.reason == "no_eligible_rep"
    assert decision.explanation.chosen is None
    assert decision.explanation.runners_up == []
    assert decision.explanation.eligible == 0
    assert decision.explanation.excluded == {"at_capacity": 1, "inactive": 1}
    assert decision.explanation.summary == (
        "no eligible rep (0 eligible, excluded: at_capacity 1, inactive 1); strategy default"
    )


def test_empty_pool():
    decision = _decide(make_view([], pool="emea"))
    assert decision.rep_id is None
    assert decision.reason == "empty_pool"
    assert decision.pool == "emea"
    assert decision.explanation.chosen is None
    assert decision.explanation.eligible == 0
    assert decision.explanation.excluded == {}
    assert decision.explanation.summary == "no rep in this pool"


def test_no_decision_outcome_changes_nothing():
    outcome = evaluate(make_lead(), make_view([make_rep(active=False)]), DEFAULT_POLICY, now=NOW)
    assert outcome.index is None
    assert outcome.decision.reason == "no_eligible_rep"
    assert (outcome.vpass, outcome.premium) == (0.0, False)


# --- runners-up ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("limit", "eligible", "expected"), [(3, 6, 3), (0, 6, 0), (3, 2, 1), (10, 6, 5), (3, 1, 0)])
def test_runners_up_bounded_and_sorted_by_score(limit, eligible, expected):
    reps = [make_rep(rep_id=f"r{i}") for i in range(eligible)]
    loads = {f"r{i}": (i * 7) % 10 for i in range(eligible)}  # mixed loads, not sorted by id
    decision = _decide(make_view(reps, loads), policy=Policy(runners_up=limit))
    runners = decision.explanation.runners_up
    assert len(runners) == expected
    scores = [decision.explanation.chosen.score, *(r.score for r in runners)]
    assert scores == sorted(scores, reverse=True)
    assert decision.rep_id not in {r.rep_id for r in runners}
    assert len({r.rep_id for r in runners}) == len(runners)


def test_policy_identity_is_recorded():
    decision = _decide(make_view([make_rep()]), policy=Policy(id="p-emea", version=7, runners_up=1))
    assert (decision.policy_id, decision.policy_version, decision.explanation.strategy) == ("p-emea", 7, "default")
    assert (decision.variant, decision.experiment, decision.shadow) == (None, None, [])
    assert (decision.explanation.rule, decision.explanation.value_tier) == (None, None)
    assert decision.explanation.growth_channel is False
    assert decision.explanation.relaxed == []


# --- route(): how a lead is handled before any rep is looked at --------------------------------------


def test_route_picks_the_first_matching_rule_else_the_default():
    policy = make_policy(
        strategies={"default": {}, "a": {}, "b": {}},
        rules=[
            {"name": "web-de", "when": {"match": {"source": ["web"], "country": ["DE"]}}, "strategy": "a"},
            {"name": "web", "when": {"match": {"source": ["web"]}}, "strategy": "b"},
            {"name": "de", "when": {"match": {"country": ["DE"]}}, "strategy": "a"},
        ],
    )
    cases = [({"source": "web", "country": "DE"}, "a", "web-de"), ({"source": "web"}, "b", "web")]
    cases += [({"country": "DE"}, "a", "de"), ({"source": "event"}, "default", None)]
    for lead_kwargs, strategy, rule in cases:
        r = route(make_lead(**lead_kwargs), policy)
        assert (r.strategy_name, r.rule) == (strategy, rule)
        assert r.strategy is policy.strategies[strategy]
        assert r.variant is None


@pytest.mark.parametrize(
    ("value", "expected"), [(None, "t0"), (0, "t0"), (99.99, "t0"), (100, "t100"), (5000, "t1000"), (1e9, "t1000")]
)
def test_value_tier_is_the_highest_threshold_reached(value, expected):
    # listed out of order on purpose
    policy = make_policy(
        value_tiers=[{"name": "t1000", "min_value": 1000}, {"name": "t0"}, {"name": "t100", "min_value": 100}]
    )
    assert value_tier(policy, lead_value(make_lead(estimated_value=value), policy)).name == expected


def test_no_value_tiers_means_no_tier():
    assert value_tier(DEFAULT_POLICY, 1e6) is None
    policy = make_policy(value_tiers=[{"name": "big", "min_value": 10}])
    assert value_tier(policy, 5) is None


@pytest.mark.parametrize(
    ("attributes", "expected"), [({"score": 87}, 87.0), ({"score": 2.5}, 2.5), ({"score": True}, 0.0), ({}, 0.0)]
)
def test_lead_value_can_come_from_the_score_attribute(attributes, expected):
    policy = make_policy(value_field="score")
    assert lead_value(make_lead(estimated_value=1e6, attributes=attributes), policy) == expected


# --- ids and determinism -------------------------------------------------------------------------


def test_decision_id_is_deterministic_per_lead_and_attempt():
    view = make_view([make_rep(rep_id="a"), make_rep(rep_id="b")])
    lead = make_lead(lead_id="L-42")
    first = _decide(view, lead=lead, attempt=1)
    again = _decide(view, lead=make_lead(lead_id="L-42"), attempt=1)
    retry = _decide(view, lead=lead, attempt=2)
    other = _decide(view, lead=make_lead(lead_id="L-43"), attempt=1)
    assert first.decision_id == again.decision_id == decision_id("L-42", 1)
    assert retry.decision_id == decision_id("L-42", 2)
    assert len({first.decision_id, retry.decision_id, other.decision_id}) == 3
    assert retry.attempt == 2


def test_decision_id_does_not_depend_on_the_view():
    lead = make_lead()
    a = _decide(make_view([make_rep(rep_id="a")]), lead=lead)
    b = _decide(make_view([]), lead=lead)
    assert a.decision_id == b.decision_id


def test_decide_is_deterministic():
    reps = [make_rep(rep_id=r, capacity=c) for r, c in (("a", 4), ("b", 10), ("c", 10), ("d", 10))]
    loads = {"a": 1, "b": 2, "c": 2, "d": 2}
    view = make_view(reps, loads, cursor="b")
    reversed_view = make_view(list(reversed(reps)), dict(reversed(loads.items())), cursor="b")
    first = _decide(view)
    assert first == _decide(view)
    assert first == _decide(reversed_view)
    assert first.model_dump_json() == _decide(reversed_view).model_dump_json()
    assert first.rep_id == "c"


def test_decide_does_not_change_the_frame():
    view = make_view([make_rep(rep_id="a"), make_rep(rep_id="b")], {"a": 1}, cursor="a")
    before = (view.state, list(view.loads), view.open.copy())
    _decide(view)
    assert (view.state, list(view.loads)) == before[:2]
    assert (view.open == before[2]).all()


def test_decision_carries_lead_and_times():
    lead = make_lead(lead_id="L-7")
    decision = decide(lead, make_view([make_rep()], pool="apac"), DEFAULT_POLICY, now=NOW)
    assert decision.lead_id == "L-7"
    assert decision.pool == "apac"
    assert decision.lead_created_at == lead.created_at
    assert decision.decided_at == NOW
    assert decision.attempt == 1


def test_unit_hash_is_stable_and_in_unit_interval():
    values = [unit_hash("lead", str(i)) for i in range(200)]
    assert all(0 <= v < 1 for v in values)
    assert values == [unit_hash("lead", str(i)) for i in range(200)]
    assert len(set(values)) == 200
    assert unit_hash("a", "b") != unit_hash("ab")


# --- model round trips ---------------------------------------------------------------------------


def test_rep_dict_round_trip_and_from_event():
    rep = Rep(
        "r1",
        tier="gold",
        tags={"de": 3},
        capacity=4,
        weight=2.5,
        availability="away",
        hired_at=date(2020, 1, 2),
        timezone="Europe/Berlin",
        working_hours={"mon": ["09:00-12:00", "13:00-17:00"]},
        out_of_office=((NOW, NOW + timedelta(days=2)),),
        daily_cap=5,
        weekly_cap=20,
    )
    data = rep.to_dict()
    assert data["hired_at"] == "2020-01-02"
    assert data["out_of_office"] == [[NOW.isoformat(), (NOW + timedelta(days=2)).isoformat()]]
    assert Rep.from_dict(data) == rep
    event = RepUpdated(
        rep_id="r1",
        pools=["p"],
        tier="gold",
        tags=["de"],
        capacity=4,
        availability="away",
        timezone="Asia/Tokyo",
        working_hours={"tue": ["08:00-16:00"]},
        out_of_office=[{"start": NOW, "end": NOW + timedelta(hours=1)}],
        daily_cap=3,
    )
    from_event = Rep.from_event(event)
    assert (from_event.rep_id, from_event.tags, from_event.capacity, from_event.availability) == (
        "r1",
        {"de": 1},
        4,
        "away",
    )
    assert (from_event.timezone, from_event.working_hours, from_event.daily_cap) == (
        "Asia/Tokyo",
        {"tue": ["08:00-16:00"]},
        3,
    )
    assert from_event.out_of_office == ((NOW, NOW + timedelta(hours=1)),)
    assert Rep.from_dict(from_event.to_dict()) == from_event
    assert Rep.from_dict({"rep_id": "x"}) == Rep("x")


def test_rep_capacity_may_be_split_per_pool():
    event = RepUpdated(rep_id="r1", pools=["a", "b", "c"], capacity=10, pool_capacity={"a": 3, "b": 0})
    assert [Rep.from_event(event, pool).capacity for pool in ("a", "b", "c")] == [3, 0, 10]
    assert Rep.from_event(event).capacity == 10  # no pool: the general capacity


def test_load_dict_round_trip():
    load = Load(open=2, assigned=5, value=12.5, premium=1, day=TODAY, day_count=2, week=WEEK, week_count=4, vpass=3.5)
    assert Load.from_dict(load.to_dict()) == load
    assert Load.from_dict(None) == Load()
    assert Load.from_dict({}) == Load()
    assert Load.from_dict({"open": 1, "unknown_old_field": 3}) == Load(open=1)


def test_pool_state_dict_round_trip():
    state = PoolState(members=("a", "b"), cursor="a", vtime=2.5, assigned=3, value=10.0, premium=1)
    data = state.to_dict()
    assert data["members"] == ["a", "b"]
    assert PoolState.from_dict(data) == state
    assert PoolState.from_dict(None) == PoolState()
    assert PoolState.from_dict({"members": None, "cursor": "x", "old": 1}) == PoolState(cursor="x")


def test_load_counters_roll_over_by_day_and_iso_week():
    load = Load(day="2024-06-01", day_count=3, day_value=30.0, week="2024-W22", week_count=7)
    assert load.counts_on("2024-06-01", "2024-W22") == (3, 30.0, 7)
    assert load.counts_on("2024-06-02", "2024-W22") == (0, 0.0, 7)
    assert load.counts_on("2024-06-03", "2024-W23") == (0, 0.0, 0)
    after = load.received(5.0, True, "2024-06-03", "2024-W23", vpass=9.0)
    assert after == Load(
        open=1,
        assigned=1,
        value=5.0,
        premium=1,
        day="2024-06-03",
        day_count=1,
        day_value=5.0,
        week="2024-W23",
        week_count=1,
        vpass=9.0,
    )


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2024, 6, 1, 12, tzinfo=UTC), ("2024-06-01", "2024-W22")),
        (datetime(2024, 6, 2, 23, 59, tzinfo=UTC), ("2024-06-02", "2024-W22")),  # Sunday closes the ISO week
        (datetime(2024, 6, 3, 0, 0, tzinfo=UTC), ("2024-06-03", "2024-W23")),
        (datetime.fromisoformat("2024-06-03T01:00:00+02:00"), ("2024-06-02", "2024-W22")),  # UTC day, not local
        (datetime(2020, 12, 31, tzinfo=UTC), ("2020-12-31", "2020-W53")),
        (datetime(2021, 1, 3, tzinfo=UTC), ("2021-01-03", "2020-W53")),
    ],
)
def test_day_keys_are_utc_days_and_iso_weeks(now, expected):
    assert day_keys(now)[:2] == expected


# --- the frame -----------------------------------------------------------------------------------


def test_frame_columns_follow_set_load_and_set_state():
    frame = make_view([make_rep(rep_id="b", capacity=5), make_rep(rep_id="a")], {"b": 2})
    assert frame.ids == ["a", "b"]
    assert frame.open.tolist() == [0, 2]
    assert frame.capacity.tolist() == [10, 5]
    frame.refresh(NOW, 30)
    frame.set_load("a", _today(open=4, day_count=1, day_value=9.0, week_count=3, vpass=2.0, value=9.0, premium=1))
    assert frame.open.tolist() == [4, 2]
    assert (frame.day_count[0], frame.day_value[0], frame.week_count[0]) == (1, 9.0, 3)
    assert (frame.vpass[0], frame.value[0], frame.premium[0]) == (2.0, 9.0, 1)
    frame.set_load("nobody", Load(open=99))  # not a member: ignored
    assert frame.open.tolist() == [4, 2]
    state = PoolState(members=("a", "b"), cursor="a", vtime=1.0)
    frame.set_state(state)
    assert frame.state is state
    assert frame.rotation_rank().tolist() == [1, 0]


def test_frame_day_counters_reset_on_a_new_utc_day():
    frame = make_view([make_rep(rep_id="a")], {"a": _today(day_count=3, day_value=5.0, week_count=3)})
    frame.refresh(NOW, 30)
    assert (frame.day_count[0], frame.week_count[0]) == (3, 3)
    frame.refresh(NOW + timedelta(days=1), 30)  # Sunday: same ISO week
    assert (frame.day_count[0], frame.day_value[0], frame.week_count[0]) == (0, 0.0, 3)
    frame.refresh(NOW + timedelta(days=2), 30)  # Monday: new week
    assert frame.week_count[0] == 0


def test_frame_performance_window_follows_set_buckets():
    frame = make_view([make_rep(rep_id="a")])
    frame.refresh(NOW, 7)
    assert (frame.won[0], frame.lost[0], frame.revenue[0]) == (0, 0, 0)
    frame.set_buckets("a", {TODAY: [2, 1, 300.0], (NOW - timedelta(days=10)).date().isoformat(): [5, 0, 1.0]})
    frame.refresh(NOW, 7)
    assert (frame.won[0], frame.lost[0], frame.revenue[0]) == (2, 1, 300.0)
    frame.refresh(NOW, 30)
    assert (frame.won[0], frame.revenue[0]) == (7, 301.0)


def test_frame_model_counts_follow_set_model():
    frame = make_view([make_rep(rep_id="a"), make_rep(rep_id="b")])
    assert frame.feature_counts("industry=saas")[0].tolist() == [0, 0]
    frame.set_model("b", {"n": [3, 1], "f": {"industry=saas": [2, 0]}})
    assert (frame.base_won.tolist(), frame.base_lost.tolist()) == ([0, 3], [0, 1])
    assert frame.feature_counts("industry=saas")[0].tolist() == [0, 2]
    assert frame.feature_counts("industry=retail")[0].tolist() == [0, 0]
    frame.set_model("nobody", {"n": [1, 1]})


def test_frame_tags_and_growth_members():
    frame = make_view(
        [
            make_rep(rep_id="a", tags={"de": 2}),
            make_rep(rep_id="b", tier="junior"),
            make_rep(rep_id="c", hired_at=NOW.date() - timedelta(days=10)),
            make_rep(rep_id="d", hired_at=NOW.date() - timedelta(days=90)),
        ]
    )
    assert frame.tag_levels("de").tolist() == [2, 0, 0, 0]
    assert frame.growth_members(NOW, ["junior"], 90).tolist() == [False, True, True, False]
    assert frame.growth_members(NOW, [], 91).tolist() == [False, False, True, True]


def test_frame_of_a_pool_without_reps():
    frame = PoolFrame("p", {})
    assert (frame.n, frame.ids, frame.rotation_rank().tolist()) == (0, [], [])
    frame.refresh(NOW, 30)


# --- tie-breaks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [10, 1000, 100_000, None])
def test_rotation_as_a_small_weight_loses_to_one_lead_only_as_a_tie_break(capacity):
    """b holds one lead more but is far behind in rotation: as a weight, rotation wins once capacity is
    large; as a tie-break it never does."""
    reps = [make_rep(rep_id="a", capacity=capacity), make_rep(rep_id="b", capacity=capacity)]
    loads = {"a": Load(open=1, vpass=5.0), "b": Load(open=2, vpass=0.0)}
    tie_break = make_policy({"scorers": {"load": 1}, "tie_break": ["rotation"]})
    assert _decide(make_view(reps, loads), policy=tie_break).rep_id == "a"
    weighted = make_policy({"scorers": {"load": 1, "rotation": 0.01}})
    assert _decide(make_view(reps, loads), policy=weighted).rep_id == ("a" if capacity in (10, None) else "b")


def test_tie_breaks_order_only_equal_scores_in_turn_then_rotation():
    reps = [make_rep(rep_id=r) for r in "abcd"]
    # a: most room; b, c, d tied on load; c and d tied on rotation too (both furthest behind)
    loads = {"a": Load(open=0, vpass=9.0), "b": Load(open=1, vpass=3.0), "c": Load(open=1), "d": Load(open=1)}
    policy = make_policy({"scorers": {"load": 1}, "tie_break": ["rotation"]}, runners_up=3)
    decision = _decide(make_view(reps, loads, cursor="c"), policy=policy)
    assert decision.rep_id == "a"
    # runners-up: the load tie goes to c and d (behind in rotation) before b; c and d by rotation order
    # after the cursor c (d first)
    assert [r.rep_id for r in decision.explanation.runners_up] == ["d", "c", "b"]
    assert decision.explanation.weights == {"load": 1.0}
    assert decision.explanation.chosen is not None and set(decision.explanation.chosen.components) == {
        "load",
        "rotation",
    }
