"""routing.ledger: assign once, release on close once, credit performance, expire after retention."""

from __future__ import annotations

from datetime import timedelta

import pytest

from routing import learning
from routing.frame import day_keys
from routing.ledger import (
    CLAIMABLE,
    OPEN,
    UNASSIGNED,
    LedgerEntry,
    assign,
    close,
    cursor_after_leaving,
    expired,
    with_member,
)
from routing.model import Load, PoolState
from routing.performance import window
from routing.policy import DEFAULT_POLICY
from schemas.events import AssignmentDecision
from tests.factories import NOW, make_policy, make_view

TODAY, WEEK, _ = day_keys(NOW)


def _received(open_, assigned, value, *, day_count=1, day_value=None, week_count=1, vpass=1.0, premium=0) -> Load:
    """A load right after receiving a lead today."""
    return Load(
        open=open_,
        assigned=assigned,
        value=value,
        premium=premium,
        day=TODAY,
        day_count=day_count,
        day_value=value if day_value is None else day_value,
        week=WEEK,
        week_count=week_count,
        vpass=vpass,
    )


def _view(make_rep, loads=None):
    return make_view([make_rep(rep_id="a"), make_rep(rep_id="b")], loads)


# --- assign --------------------------------------------------------------------------------------


def test_first_assign_increments_the_chosen_reps_load(make_lead, make_rep):
    view = _view(make_rep, {"a": Load(open=3, assigned=9, value=50.0), "b": Load(open=1, assigned=4, value=10.0)})
    result = assign(make_lead(estimated_value=1200.0), view, DEFAULT_POLICY, None, now=NOW)
    assert not result.duplicate
    assert result.decision.rep_id == "b"
    # today's counters start at this lead (the earlier ones carry no day); one rotation pass at weight 1
    assert result.load == _received(2, 5, 1210.0, day_value=1200.0)
    assert result.entry.status == OPEN
    assert result.entry.rep_id == "b"
    assert result.entry.value == 1200.0
    assert result.entry.closed is False
    assert AssignmentDecision.model_validate(result.entry.decision) == result.decision


def test_assign_without_estimated_value_adds_no_value(make_lead, make_rep):
    result = assign(make_lead(), _view(make_rep), DEFAULT_POLICY, None, now=NOW)
    assert result.load == _received(1, 1, 0.0)
    assert result.entry.value == 0.0


def test_assign_moves_the_pool_state(make_lead, make_rep):
    view = _view(make_rep)
    view.set_state(PoolState(members=("a", "b"), cursor="a", vtime=0.0, assigned=4, value=10.0, premium=0))
    result = assign(make_lead(estimated_value=50.0), view, DEFAULT_POLICY, None, now=NOW)
    assert result.decision.rep_id == "b"  # after the cursor
    assert result.state == PoolState(members=("a", "b"), cursor="b", vtime=0.0, assigned=5, value=60.0, premium=0)
    assert result.load.vpass == 1.0
    assert view.state.cursor == "a"  # assign() returns new values; the caller writes them


def test_assign_counts_premium_leads_when_the_policy_caps_them(make_lead, make_rep):
    policy = make_policy(value_tiers=[{"name": "vip", "min_value": 1000}], premium_cap={"tier": "vip"})
    view = _view(make_rep)
    vip = assign(make_lead(estimated_value=1000.0), view, policy, None, now=NOW)
    assert (vip.load.premium, vip.state.premium) == (1, 1)
    small = assign(make_lead(lead_id="lead-2", estimated_value=999.0), view, policy, None, now=NOW)
    assert (small.load.premium, small.state.premium) == (0, 0)
    # without a premium cap nothing is premium
    uncapped = assign(make_lead(estimated_value=5000.0), view, DEFAULT_POLICY, None, now=NOW)
    assert (uncapped.load.premium, uncapped.state.premium) == (0, 0)


def test_assign_keeps_the_leads_features_for_learning(make_lead, make_rep):
    policy = make_policy(value_tiers=[{"name": "vip", "min_value": 1000}])
    lead = make_lead(industry="saas", country="DE", estimated_value=2000.0)
    entry = assign(lead, _view(make_rep), policy, None, now=NOW).entry
    assert entry.features == ("industry=saas", "country=DE", "tier=vip")
    assert "lead-1" not in "".join(entry.features)


def test_claim_pool_lead_is_claimable_and_takes_no_load(make_lead, make_rep):
    policy = make_policy({"scorers": {}, "selector": {"type": "claim_pool"}})
    result = assign(make_lead(estimated_value=70.0), _view(make_rep), policy, None, now=NOW)
    assert result.decision.reason == "sent_to_claim_pool"
    assert result.decision.rep_id is None
    assert (result.load, result.state) == (None, None)
    assert result.entry.status == CLAIMABLE
    assert result.entry.closed is False
    assert result.entry.value == 70.0


def test_second_assign_is_a_duplicate_with_the_same_decision(make_lead, make_rep):
    lead = make_lead(estimated_value=10.0)
    first = assign(lead, _view(make_rep), DEFAULT_POLICY, None, now=NOW)
    # the world changed in between: another rep is now less loaded, time moved on
    later_view = _view(make_rep, {first.decision.rep_id: first.load, "b": 0})
    stored = LedgerEntry.from_dict(first.entry.to_dict())
    second = assign(lead, later_view, DEFAULT_POLICY, stored, now=NOW + timedelta(hours=1))
    assert second.duplicate
    assert second.load is None
    assert second.state is None
    assert second.entry == stored
    assert second.decision == first.decision
    assert second.decision.model_dump_json() == first.decision.model_dump_json()


def test_unassigned_lead_entry(make_lead, make_rep):
    view = make_view([make_rep(rep_id="a", availability="offline")])
    result = assign(make_lead(estimated_value=5.0), view, DEFAULT_POLICY, None, now=NOW)
    assert result.decision.rep_id is None
    assert result.decision.reason == "no_eligible_rep"
    assert result.load is None
    assert result.entry.status == UNASSIGNED
    assert result.entry.rep_id is None
    assert result.entry.closed is False


def test_assign_in_empty_pool_is_unassigned(make_lead):
    result = assign(make_lead(), make_view([]), DEFAULT_POLICY, None, now=NOW)
    assert result.decision.reason == "empty_pool"
    assert result.entry.status == UNASSIGNED
    assert result.load is None


def test_ledger_entry_dict_round_trip(make_lead, make_rep):
    entry = assign(make_lead(industry="saas"), _view(make_rep), DEFAULT_POLICY, None, now=NOW).entry
    assert entry.features == ("industry=saas",)
    assert LedgerEntry.from_dict(entry.to_dict()) == entry
    minimal = LedgerEntry.from_dict({"decision": {}, "status": "won"})
    assert (minimal.rep_id, minimal.value, minimal.closed_at, minimal.closed, minimal.features) == (
        None,
        0.0,
        None,
        True,
        (),
    )
    assert minimal.released_at is None


# --- close ---------------------------------------------------------------------------------------


def _open_entry(make_lead, make_rep, rep_id="a"):
    view = make_view([make_rep(rep_id=rep_id)])
    return assign(make_lead(), view, DEFAULT_POLICY, None, now=NOW)


def test_close_releases_the_holder_once(make_lead, make_rep, make_deal):
    assigned = _open_entry(make_lead, make_rep)
    deal = make_deal(outcome="won", amount=250.0)
    first = close(deal, assigned.entry, assigned.load, None)
    assert not first.duplicate
    assert first.released == ("a", _received(0, 1, 0.0))  # only the open count goes down
    assert first.credited == "a"
    assert first.entry.status == "won"
    assert first.entry.closed
    assert first.entry.closed_at == deal.closed_at.isoformat()
    assert window(first.buckets, 7, NOW) == window({deal.closed_at.date().isoformat(): [1, 0, 250.0]}, 7, NOW)

    second = close(deal, first.entry, first.released[1], first.buckets, first.model)
    assert second.duplicate
    assert second.released is None
    assert second.credited is None
    assert second.buckets is None  # performance is not counted twice
    assert second.model is None  # nor learned twice
    assert second.entry == first.entry


def test_close_teaches_the_credited_reps_model(make_lead, make_rep, make_deal):
    view = make_view([make_rep(rep_id="a")])
    assigned = assign(make_lead(industry="saas", source="web"), view, DEFAULT_POLICY, None, now=NOW)
    won = close(make_deal(outcome="won"), assigned.entry, assigned.load, None, None)
    assert won.model == learning.update(None, ["industry=saas", "source=web"], won=True)
    assert won.model == {"n": [1, 0], "f": {"industry=saas": [1, 0], "source=web": [1, 0]}}
    other = assign(make_lead(lead_id="lead-2", industry="saas"), view, DEFAULT_POLICY, None, now=NOW)
    lost = close(make_deal(lead_id="lead-2", outcome="lost"), other.entry, None, None, won.model)
    assert lost.model == {"n": [1, 1], "f": {"industry=saas": [1, 1], "source=web": [1, 0]}}


def test_close_of_unknown_lead_learns_nothing(make_deal):
    """Without the ledger entry the lead's features are unknown: performance counts, the model does not."""
    result = close(make_deal(rep_id="z"), None, None, None, {"n": [1, 1], "f": {}})
    assert result.credited == "z"
    assert result.buckets is not None
    assert result.model is None


def test_duplicate_close_with_other_outcome_keeps_the_first(make_lead, make_rep, make_deal):
    assigned = _open_entry(make_lead, make_rep)
    first = close(make_deal(outcome="lost"), assigned.entry, assigned.load, None)
    second = close(make_deal(outcome="won"), first.entry, Load(), first.buckets)
    assert second.duplicate
    assert second.entry.status == "lost"


def test_close_credits_deal_rep_but_releases_the_holder(make_lead, make_rep, make_deal):
    assigned = _open_entry(make_lead, make_rep, rep_id="a")
    result = close(make_deal(rep_id="b", amount=10.0), assigned.entry, Load(open=4, assigned=6), {})
    assert result.released == ("a", Load(open=3, assigned=6))
    assert result.credited == "b"
    assert result.model == {"n": [1, 0], "f": {}}  # b's model, from a lead without features
    assert window(result.buckets, 1, NOW).won == 1


def test_close_of_unknown_lead_counts_performance_without_release(make_deal):
    result = close(make_deal(rep_id="z", outcome="won", amount=99.0), None, None, None)
    assert not result.duplicate
    assert result.entry is None
    assert result.released is None
    assert result.credited == "z"
    assert window(result.buckets, 1, NOW).revenue == 99.0


def test_close_of_unknown_lead_without_rep_counts_nothing(make_deal):
    result = close(make_deal(), None, None, None)
    assert (result.entry, result.released, result.credited, result.buckets, result.model, result.duplicate) == (
        None,
        None,
        None,
        None,
        None,
        False,
    )


def test_close_of_unassigned_entry_releases_nothing(make_lead, make_rep, make_deal):
    assigned = assign(make_lead(), make_view([]), DEFAULT_POLICY, None, now=NOW)
    result = close(make_deal(outcome="lost"), assigned.entry, None, None)
    assert result.released is None
    assert result.credited is None
    assert result.buckets is None
    assert result.entry.status == "lost"
    # and it is closed now: a redelivery is a duplicate
    assert close(make_deal(outcome="lost"), result.entry, None, None).duplicate


def test_close_of_claimable_entry_credits_the_claiming_rep(make_lead, make_rep, make_deal):
    policy = make_policy({"scorers": {}, "selector": {"type": "claim_pool"}})
    assigned = assign(make_lead(), make_view([make_rep(rep_id="a")]), policy, None, now=NOW)
    result = close(make_deal(rep_id="a", amount=40.0), assigned.entry, None, None)
    assert result.released is None  # a claim pool lead never counted as open for anybody
    assert result.credited == "a"
    assert window(result.buckets, 1, NOW).revenue == 40.0
    assert result.entry.status == "won"


@pytest.mark.parametrize("load", [None, Load(), Load(open=0, assigned=3, value=7.0)])
def test_open_count_never_goes_below_zero(make_lead, make_rep, make_deal, load):
    assigned = _open_entry(make_lead, make_rep)
    result = close(make_deal(), assigned.entry, load, None)
    rep_id, new_load = result.released
    assert rep_id == "a"
    assert new_load.open == 0
    assert new_load.assigned == (load.assigned if load else 0)


def test_close_adds_to_existing_buckets(make_lead, make_rep, make_deal):
    assigned = _open_entry(make_lead, make_rep)
    day = NOW.date().isoformat()
    result = close(make_deal(outcome="won", amount=5.0), assigned.entry, assigned.load, {day: [2, 1, 100.0]})
    assert result.buckets[day] == [3, 1, 105.0]


# --- expiry --------------------------------------------------------------------------------------


def _closed_entry(make_lead, make_rep, make_deal, closed_at):
    assigned = _open_entry(make_lead, make_rep)
    return close(make_deal(closed_at=closed_at), assigned.entry, assigned.load, None).entry


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (timedelta(days=31), True),
        (timedelta(days=30, seconds=1), True),
        (timedelta(days=30), False),
        (timedelta(days=29), False),
        (timedelta(0), False),
    ],
)
def test_expired_only_after_retention(make_lead, make_rep, make_deal, age, expected):
    entry = _closed_entry(make_lead, make_rep, make_deal, NOW - age)
    assert expired(entry, now=NOW, retention=timedelta(days=30)) is expected


def test_retention_counts_from_when_the_worker_closed_the_entry(make_lead, make_rep, make_deal):
    """A backfill of year-old deals must not empty the dedupe horizon at once."""
    assigned = _open_entry(make_lead, make_rep)
    deal = make_deal(closed_at=NOW - timedelta(days=365))
    entry = close(deal, assigned.entry, assigned.load, None, now=NOW).entry
    assert entry.closed_at == deal.closed_at.isoformat()  # the deal's own time is kept
    assert entry.released_at == NOW.isoformat()
    retention = timedelta(days=30)
    assert not expired(entry, now=NOW + timedelta(days=30), retention=retention)
    assert expired(entry, now=NOW + timedelta(days=30, seconds=1), retention=retention)
    assert LedgerEntry.from_dict(entry.to_dict()) == entry


def test_without_a_clock_the_deals_time_is_the_release_time(make_lead, make_rep, make_deal):
    assigned = _open_entry(make_lead, make_rep)
    entry = close(make_deal(closed_at=NOW - timedelta(days=31)), assigned.entry, assigned.load, None).entry
    assert entry.released_at == entry.closed_at
    assert expired(entry, now=NOW, retention=timedelta(days=30))


def test_entry_stored_before_released_at_existed_expires_by_closed_at():
    old = LedgerEntry.from_dict({"decision": {}, "status": "lost", "closed_at": (NOW - timedelta(days=40)).isoformat()})
    assert old.released_at is None
    assert expired(old, now=NOW, retention=timedelta(days=30))
    assert not expired(old, now=NOW, retention=timedelta(days=41))


def test_open_unassigned_and_claimable_entries_never_expire(make_lead, make_rep):
    open_entry = _open_entry(make_lead, make_rep).entry
    unassigned = assign(make_lead(), make_view([]), DEFAULT_POLICY, None, now=NOW).entry
    claim = make_policy({"scorers": {}, "selector": {"type": "claim_pool"}})
    claimable = assign(make_lead(), make_view([make_rep()]), claim, None, now=NOW).entry
    far = NOW + timedelta(days=10_000)
    for entry in (open_entry, unassigned, claimable):
        assert not expired(entry, now=far, retention=timedelta(days=1))


def test_closed_entry_without_timestamp_does_not_expire():
    entry = LedgerEntry(decision={}, status="won", rep_id="a", closed_at=None)
    assert not expired(entry, now=NOW, retention=timedelta(seconds=1))


# --- members -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "rep_id", "present", "expected"),
    [
        ([], "b", True, ["b"]),
        (["a", "c"], "b", True, ["a", "c", "b"]),  # join order: a newcomer goes to the end
        (["a", "b", "c"], "b", True, ["a", "b", "c"]),  # already there: keeps its place, no duplicate
        (["c", "a"], "0", True, ["c", "a", "0"]),  # never sorted
        (["a", "b", "c"], "b", False, ["a", "c"]),
        (["a", "c"], "b", False, ["a", "c"]),  # absent and removed: no change
        ([], "b", False, []),
    ],
)
def test_with_member(members, rep_id, present, expected):
    before = list(members)
    assert with_member(members, rep_id, present) == expected
    assert members == before  # the input list is not mutated


@pytest.mark.parametrize(
    ("rotation", "cursor", "leaving", "expected"),
    [
        (["a", "b", "c"], "b", "b", "a"),  # the rep after b (c) is still next
        (["a", "b", "c"], "a", "a", "c"),  # wraps: b is still next
        (["a", "b", "c"], "c", "c", "b"),
        (["a"], "a", "a", None),
        (["a", "b", "c"], "a", "b", "a"),  # somebody else left: the cursor stays
        (["a", "b"], "z", "z", "z"),  # not a member (state from before): unchanged
        ([], None, "a", None),
    ],
)
def test_cursor_after_leaving(rotation, cursor, leaving, expected):
    assert cursor_after_leaving(rotation, cursor, leaving) == expected


def test_a_rep_leaving_and_coming_back_goes_to_the_end():
    members = with_member(with_member(["a", "b", "c"], "a", False), "a", True)
    assert members == ["b", "c", "a"]
