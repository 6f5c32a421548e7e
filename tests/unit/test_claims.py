"""Claims on the open pool (routing/claims.py): the first valid claim takes the lead as attempt n+1;
every other claim is refused with its reason."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from routing import sla
from routing.claims import claim, window_closed
from routing.frame import PoolFrame
from routing.ids import decision_id
from routing.ledger import CLAIMABLE, OPEN, LedgerEntry, assign, release
from routing.model import Load
from routing.policy import Policy
from tests.factories import NOW, apply, make_lead, make_policy, make_rep, make_view

GRAB = {"strategies": {"default": {"selector": {"type": "claim_pool"}, "scorers": {"load": 1.0}}}}


def claimable(frame: PoolFrame, policy: Policy, **lead: Any) -> LedgerEntry:
    result = assign(make_lead(**lead), frame, policy, None, now=NOW)
    apply(frame, result)
    assert result.entry.status == CLAIMABLE and result.entry.lead is not None
    return result.entry


def try_claim(frame: PoolFrame, policy: Policy, entry: LedgerEntry, rep_id: str, at: datetime = NOW, **lead: Any):  # type: ignore[no-untyped-def]
    i = frame.index.get(rep_id)
    load = frame.loads[i] if i is not None else None
    return claim(make_lead(**lead), frame, policy, entry, rep_id, load, now=at)


def test_a_valid_claim_takes_the_lead_as_a_new_attempt() -> None:
    frame = make_view([make_rep(rep_id="a"), make_rep(rep_id="b")])
    policy = make_policy(**GRAB)
    entry = claimable(frame, policy)
    answer = try_claim(frame, policy, entry, "b", NOW + timedelta(minutes=3))
    assert answer.accepted and answer.reason == "claimed"
    new = answer.assigned
    assert new is not None
    d = new.decision
    assert (d.rep_id, d.reason, d.attempt, d.trigger) == ("b", "assigned", 2, "claim")
    assert d.decision_id == decision_id("lead-1", 2) and d.decided_at == NOW + timedelta(minutes=3)
    assert d.explanation.chosen is not None and d.explanation.chosen.rep_id == "b"
    assert new.entry.status == OPEN and new.entry.rep_id == "b" and new.entry.claimed
    assert new.load is not None and (new.load.open, new.load.claimed) == (1, 1)
    assert release(new.load, new.entry) == replace(new.load, open=0, claimed=0), "its release frees the limit"


def test_the_second_claim_finds_the_lead_taken() -> None:
    frame = make_view([make_rep(rep_id="a"), make_rep(rep_id="b")])
    policy = make_policy(**GRAB)
    entry = claimable(frame, policy)
    first = try_claim(frame, policy, entry, "a")
    assert first.assigned is not None
    second = try_claim(frame, policy, first.assigned.entry, "b")
    assert (second.accepted, second.reason, second.detail) == (False, "not_claimable", "the lead is open (a)")


@pytest.mark.parametrize(
    ("rep", "policy_extra", "load", "reason"),
    [
        (make_rep(rep_id="b", availability="away"), {}, 0, "not_eligible"),
        (make_rep(rep_id="b", capacity=2), {}, 2, "not_eligible"),
        (make_rep(rep_id="b", tags={"lang:fr": 1}), {"must_have": [{"tag": "lang:{language}"}]}, 0, "not_eligible"),
        (make_rep(rep_id="b"), {"claims": {"holding_limit": 1}}, 1, "holding_limit"),
    ],
)
def test_an_invalid_claim_is_refused_with_its_reason(
    rep: Any, policy_extra: dict[str, Any], load: int, reason: str
) -> None:
    must = policy_extra.pop("must_have", None)
    strategy = {**GRAB["strategies"]["default"], **({"must_have": must} if must else {})}
    policy = make_policy(strategy, **policy_extra)
    a = make_rep(rep_id="a", tags={"lang:de": 1})  # someone is eligible: the lead is claimable
    frame = make_view([a, rep], {"b": Load(open=load, assigned=load, claimed=load)})
    entry = claimable(frame, policy, language="de")
    answer = try_claim(frame, policy, entry, "b", language="de")
    assert (answer.accepted, answer.reason) == (False, reason), answer.detail


def test_a_claimant_outside_the_pool_is_refused() -> None:
    frame = make_view([make_rep(rep_id="a")])
    policy = make_policy(**GRAB)
    answer = try_claim(frame, policy, claimable(frame, policy), "zed")
    assert answer.reason == "not_in_pool"


def test_a_previous_holder_waits_out_the_cooldown() -> None:
    frame = make_view([make_rep(rep_id="a"), make_rep(rep_id="b")])
    policy = make_policy(**GRAB, claims={"cooldown": "1h"})
    entry = replace(claimable(frame, policy), holders=("a",))
    early = try_claim(frame, policy, entry, "a", NOW + timedelta(minutes=59))
    assert early.reason == "cooldown" and "from " in early.detail
    assert try_claim(frame, policy, entry, "b", NOW + timedelta(minutes=1)).accepted, "others need not wait"
    late = try_claim(frame, policy, entry, "a", NOW + timedelta(hours=1))
    assert late.accepted and late.assigned is not None
    assert late.assigned.decision.previous_holders == ["a"]


def test_the_holding_limit_counts_only_claimed_leads() -> None:
    frame = make_view([make_rep(rep_id="b")], {"b": Load(open=5, assigned=5, claimed=0)})
    policy = make_policy(**GRAB, claims={"holding_limit": 1})
    assert try_claim(frame, policy, claimable(frame, policy), "b").accepted


# --- the claim window --------------------------------------------------------------------------------


def test_a_claimable_lead_gets_its_claim_window() -> None:
    frame = make_view([make_rep(rep_id="a")])
    entry = claimable(frame, make_policy(**GRAB, claims={"window": "30m"}))
    assert entry.sla_due is not None and sla.parse_stamp(entry.sla_due) == NOW + timedelta(minutes=30)
    assert claimable(make_view([make_rep(rep_id="a")]), make_policy(**GRAB)).sla_due is None, "no window asked"


def test_after_the_window_the_pools_policy_assigns_previous_holders_excluded() -> None:
    frame = make_view([make_rep(rep_id=r) for r in "abc"], {"b": 3, "c": 5})
    policy = make_policy(**GRAB, claims={"window": "30m"})
    entry = replace(claimable(frame, policy), holders=("a",))
    at = NOW + timedelta(minutes=31)
    new = window_closed(make_lead(), frame, policy, entry, now=at)
    assert new is not None
    d = new.decision
    assert (d.rep_id, d.reason, d.attempt, d.trigger) == ("b", "assigned", 2, "claim_window"), "least loaded, not a"
    assert d.previous_holders == ["a"] and d.decided_at == at
    assert new.entry.status == OPEN and new.entry.holders == ("a",) and new.entry.lead is None


def test_after_the_window_with_nobody_eligible_the_lead_stays() -> None:
    frame = make_view([make_rep(rep_id="a"), make_rep(rep_id="b")])
    policy = make_policy(**GRAB, claims={"window": "30m"})
    entry = replace(claimable(frame, policy), holders=("a", "b"))
    assert window_closed(make_lead(), frame, policy, entry, now=NOW + timedelta(hours=1)) is None
