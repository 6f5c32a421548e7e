"""Lead updates in the pure core (routing/updates.py): a new version keeps its holder, is decided again
as attempt n+1 without its previous holders, or moves to another pool (released once)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routing.frame import PoolFrame
from routing.ids import decision_id
from routing.ledger import CLAIMABLE, MOVED, OPEN, UNASSIGNED, LedgerEntry, assign, expired
from routing.model import Load
from routing.policy import Policy
from routing.updates import OUTCOMES, apply, holder_misfit, moved_in
from tests.factories import NOW, make_lead, make_policy, make_rep, make_view
from tests.factories import apply as feed

TAGGED = {"must_have": [{"tag": "ind:{industry}"}], "scorers": {"load": 1}}
REPS = [make_rep(rep_id="a", tags={"ind:it": 1}), make_rep(rep_id="b", tags={"ind:bank": 1}), make_rep(rep_id="c")]


def first(frame: PoolFrame, policy: Policy, **lead: Any) -> LedgerEntry:
    result = assign(make_lead(**lead), frame, policy, None, now=NOW)
    feed(frame, result)
    return result.entry


def load_of(frame: PoolFrame, rep_id: str | None) -> Load | None:
    return frame.loads[frame.index[rep_id]] if rep_id else None


# --- holder_misfit --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "tiers", "lead", "rep", "misfit"),
    [
        (TAGGED, None, {"industry": "it"}, "a", None),
        (TAGGED, None, {"industry": "bank"}, "a", "missing_tag"),
        (TAGGED, None, {}, "a", None),  # no industry: the tag does not apply
        (
            {**TAGGED, "relax": [{"drop_must_have": "all"}]},
            None,
            {"industry": "bank"},
            "a",
            None,
        ),  # a fallback allows it
        ({"scorers": {"load": 1}}, ["senior"], {"estimated_value": 50_000}, "a", "tier_not_allowed"),
        ({"scorers": {"load": 1}}, ["senior"], {"estimated_value": 5}, "a", None),
        ({"scorers": {"load": 1}}, ["senior"], {"estimated_value": 50_000}, "s", None),
        (TAGGED, None, {"industry": "bank"}, "gone", None),  # left the pool: not this check's business
    ],
)
def test_holder_misfit(strategy, tiers, lead, rep, misfit) -> None:
    value_tiers = [{"name": "big", "min_value": 10_000, "allowed_rep_tiers": tiers}] if tiers else []
    policy = make_policy(strategy, value_tiers=value_tiers)
    frame = make_view([*REPS, make_rep(rep_id="s", tier="senior")])
    assert holder_misfit(make_lead(**lead), frame, policy, rep, now=NOW) == misfit


# --- apply ----------------------------------------------------------------------------------------


def test_an_open_lead_that_still_fits_keeps_its_holder() -> None:
    frame, policy = make_view(REPS), make_policy(TAGGED)
    entry = first(frame, policy, industry="it")
    u = apply(make_lead(industry="it", estimated_value=9.0), "default", frame, policy, entry, None, now=NOW)
    assert u.outcome == "kept" and u.assigned is None and u.released is None and u.moved is None
    assert u.entry is not None and u.entry.rep_id == entry.rep_id and u.entry.updated_at == NOW.isoformat()


def test_an_open_lead_its_holder_no_longer_fits_is_decided_again_without_it() -> None:
    frame, policy = make_view(REPS), make_policy(TAGGED)
    entry = first(frame, policy, industry="it")
    assert entry.rep_id == "a"
    u = apply(make_lead(industry="bank"), "default", frame, policy, entry, load_of(frame, "a"), now=NOW)
    assert u.outcome == "redecided" and u.assigned is not None
    d = u.assigned.decision
    assert (d.rep_id, d.attempt, d.trigger, d.previous_holders) == ("b", 2, "updated", ["a"])
    assert d.decision_id == decision_id("lead-1", 2)
    assert u.released is not None and u.released[0] == "a" and u.released[1].open == 0
    assert u.assigned.entry.holders == ("a",)


def test_holder_must_fit_off_keeps_every_open_lead() -> None:
    frame = make_view(REPS)
    policy = make_policy(TAGGED, updates={"holder_must_fit": False})
    entry = first(frame, policy, industry="it")
    assert apply(make_lead(industry="bank"), "default", frame, policy, entry, None, now=NOW).outcome == "kept"


def test_a_move_closes_the_entry_releases_the_holder_once_and_names_the_next_attempt() -> None:
    frame, policy = make_view(REPS), make_policy(follow_up={"within": "1h"})
    entry = first(frame, policy)
    assert entry.sla_due is not None
    u = apply(make_lead(), "other", frame, policy, entry, load_of(frame, entry.rep_id), now=NOW)
    assert u.outcome == "moved" and u.entry is not None and u.moved is not None
    assert (u.entry.status, u.entry.moved_to, u.entry.sla_due) == (MOVED, "other", None)
    assert u.entry.closed and u.stopped == entry.sla_due
    assert u.released is not None and u.released[1].open == 0
    assert (u.moved.to_pool, u.moved.attempt, u.moved.holders) == ("other", 2, (entry.rep_id,))
    # a second update reaching the moved entry goes on; retention counts from the move
    assert apply(make_lead(), "other", frame, policy, u.entry, None, now=NOW).outcome == "forwarded"
    assert expired(u.entry, now=NOW + timedelta(days=31), retention=timedelta(days=30))


def test_an_unassigned_lead_moves_without_releasing_anyone() -> None:
    frame, policy = make_view([]), make_policy()
    entry = first(frame, policy)
    assert entry.status == UNASSIGNED
    u = apply(make_lead(), "other", frame, policy, entry, None, now=NOW)
    assert u.outcome == "moved" and u.released is None and u.moved is not None and u.moved.holders == ()


@pytest.mark.parametrize("status", ["won", "lost", "disqualified", "cancelled"])
def test_a_closed_lead_ignores_updates(status: str) -> None:
    frame, policy = make_view(REPS), make_policy()
    entry = replace(first(frame, policy), status=status)
    assert apply(make_lead(), "other", frame, policy, entry, None, now=NOW).outcome == "ignored"


def test_a_claimable_lead_stores_the_new_version() -> None:
    frame, policy = make_view(REPS), make_policy({"selector": {"type": "claim_pool"}, "scorers": {"load": 1}})
    entry = first(frame, policy)
    assert entry.status == CLAIMABLE
    u = apply(make_lead(estimated_value=42.0), "default", frame, policy, entry, None, now=NOW)
    assert u.outcome == "stored" and u.entry is not None and u.entry.lead is not None
    assert u.entry.lead["estimated_value"] == 42.0 and "contact" not in u.entry.lead


def test_moved_in_decides_the_next_attempt_without_the_previous_holders() -> None:
    frame, policy = make_view(REPS, pool="other"), make_policy()
    result = moved_in(make_lead(), frame, policy, 3, ("a", "b"), "default", now=NOW)
    d = result.decision
    assert (d.rep_id, d.attempt, d.trigger, d.pool) == ("c", 3, "moved", "other")
    assert d.previous_holders == ["a", "b"] and result.entry.holders == ("a", "b")
    assert result.entry.status == OPEN and any("from pool default" in n for n in d.explanation.notes)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["it", "bank", None]), st.sampled_from(["default", "other"])), max_size=6))
def test_any_sequence_of_updates_keeps_one_holder_and_never_gives_an_attempt_to_a_previous_holder(steps) -> None:
    """Each pool's open count stays the number of leads its reps hold (one here), attempts only grow,
    and an attempt's rep never held the lead before."""
    policy = make_policy(TAGGED)
    frames = {p: make_view(REPS, pool=p) for p in ("default", "other")}
    pool, entry = "default", first(frames["default"], policy, industry="it")
    held: list[str] = [entry.rep_id] if entry.rep_id else []
    for industry, to_pool in steps:
        frame = frames[pool]
        lead = make_lead(industry=industry) if industry else make_lead()
        u = apply(lead, to_pool, frame, policy, entry, load_of(frame, entry.rep_id), now=NOW)
        assert u.outcome in OUTCOMES
        if u.released is not None:
            frame.set_load(*u.released)
        if u.moved is not None:
            pool = u.moved.to_pool
            result = moved_in(lead, frames[pool], policy, u.moved.attempt, u.moved.holders, "x", now=NOW)
        elif u.assigned is not None:
            result = u.assigned
        else:
            assert u.entry is not None
            entry = u.entry
            continue
        feed(frames[pool], result)
        assert result.decision.attempt == entry.attempt + 1
        if result.decision.rep_id is not None:
            assert result.decision.rep_id not in held
            held.append(result.decision.rep_id)
        entry = result.entry
    opened = sum(int(f.open.sum()) for f in frames.values())
    assert opened == (1 if entry.status == OPEN else 0)


def test_a_moved_duplicate_releases_nothing_it_never_counted() -> None:
    frame, policy = make_view(REPS), make_policy()
    entry = replace(first(frame, policy), duplicate_of={"lead_id": "lead-0", "kind": "email"})
    u = apply(make_lead(), "other", frame, policy, entry, load_of(frame, entry.rep_id), now=NOW)
    assert u.outcome == "moved" and u.released is None
    assert u.moved is not None and u.moved.holders == (entry.rep_id,), "it still held the lead: not again"
