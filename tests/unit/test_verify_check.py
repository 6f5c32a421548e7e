"""streams.tools.verify.check on hand-made topic contents: healthy logs pass, each injected fault is reported.

The broker-backed counterpart is tests/integration/test_verify.py (and the demo run in test_demo.py);
these cases pin what a real run rarely produces: a lead decided in two pools, a pool_capacity split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from routing.model import Rep
from schemas.events import (
    AssignmentDecision,
    ClaimResult,
    DealClosed,
    Explanation,
    LeadActivity,
    LeadClaim,
    LeadCreated,
    RepUpdated,
    ScoredRep,
)
from schemas.internal import ActivityArrived, DealArrived, LeadArrived, LeadUpdated, Origin, RepChanged
from streams.kafka.topics import home_partition
from streams.settings import Settings
from streams.tools.verify import Report, check

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SETTINGS = Settings()


@dataclass
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 1_764_579_600_000
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def records(values: Iterable[tuple[bytes | None, bytes | None]], partition: int = 0) -> list[Record]:
    return [Record(partition, offset, key, value) for offset, (key, value) in enumerate(values)]


def lead(lead_id: str, pool: str | None = None) -> LeadCreated:
    return LeadCreated(lead_id=lead_id, created_at=T0, pool=pool)


def decision(lead_id: str, pool: str, rep_id: str, *, open_: int = 0, capacity: float = 10) -> AssignmentDecision:
    facts = {"open": float(open_), "capacity": float(capacity)}
    return AssignmentDecision(
        decision_id=f"id-{lead_id}#1",  # derived from (lead_id, attempt), like the worker's
        lead_id=lead_id,
        pool=pool,
        rep_id=rep_id,
        reason="assigned",
        policy_id="default",
        policy_version=1,
        explanation=Explanation(
            strategy="default", summary="test", chosen=ScoredRep(rep_id=rep_id, score=1, facts=facts)
        ),
        lead_created_at=T0,
        decided_at=T0,
    )


def topics(
    leads: list[LeadCreated],
    decisions: list[AssignmentDecision],
    roster: list[RepUpdated],
    pool_log: list[LeadArrived | RepChanged],
    route: dict[str, Any] | None = None,
) -> dict[str, list[Any]]:
    return {
        "leads": records((x.lead_id.encode(), x.model_dump_json().encode()) for x in leads),
        "deals": [],
        "roster": records((r.rep_id.encode(), r.model_dump_json().encode()) for r in roster),
        "decisions": records((d.lead_id.encode(), d.model_dump_json().encode()) for d in decisions),
        "dlq": [],
        "route": records((k.encode(), orjson.dumps(v)) for k, v in (route or {}).items()),
        "pool_events": records((ev.pool.encode(), ev.model_dump_json().encode()) for ev in pool_log),
    }


def arrived(x: LeadCreated, pool: str) -> LeadArrived:
    return LeadArrived(pool=pool, lead=x, received_at=T0)


def run(contents: dict[str, list[Any]], *, state: bool = True) -> Report:
    return check(contents, SETTINGS, check_state=state)


# --- I1: one lead id, one effective decision per attempt -------------------------------------------


def test_a_lead_decided_again_in_another_pool_under_the_same_id_is_a_conflict() -> None:
    rep = RepUpdated(rep_id="r1", pools=["a", "b"])
    first, again = lead("L1", pool="a"), lead("L1", pool="b")
    log = [RepChanged(pool="a", rep_id="r1", profile=rep), RepChanged(pool="b", rep_id="r1", profile=rep)]
    # The same rep in both pools: the decision "looks" the same but holds two loads.
    contents = topics(
        [first, again],
        [decision("L1", "a", "r1"), decision("L1", "b", "r1")],
        [rep],
        [*log, arrived(first, "a"), arrived(again, "b")],
    )
    report = run(contents, state=False)
    assert [c.split(":")[0] for c in report.conflicting_decisions] == ["L1"]
    assert not report.ok


def test_the_same_decision_re_emitted_is_a_duplicate_not_a_conflict() -> None:
    rep = RepUpdated(rep_id="r1", pools=["a"])
    x = lead("L1", pool="a")
    contents = topics(
        [x, x],
        [decision("L1", "a", "r1"), decision("L1", "a", "r1")],
        [rep],
        [RepChanged(pool="a", rep_id="r1", profile=rep), arrived(x, "a"), arrived(x, "a")],
        route={"loads|a|r1": {"open": 1}, "reps|a|r1": Rep.from_event(rep, "a").to_dict()},
    )
    report = run(contents)
    assert report.ok, report.problems()
    assert report.duplicate_decisions == 1


# --- I2/I3 with a rep split across pools (pool_capacity) -------------------------------------------

SPLIT = RepUpdated(rep_id="r1", pools=["a", "b"], capacity=10, pool_capacity={"a": 2})


def split_run(n_leads: int) -> dict[str, list[Any]]:
    leads = [lead(f"L{i}", pool="a") for i in range(n_leads)]
    log: list[LeadArrived | RepChanged] = [RepChanged(pool="a", rep_id="r1", profile=SPLIT)]
    log += [arrived(x, "a") for x in leads]
    # Each decision's own facts as the worker records them: capacity in this pool.
    decisions = [decision(x.lead_id, "a", "r1", open_=i, capacity=2) for i, x in enumerate(leads)]
    route = {"loads|a|r1": {"open": n_leads}, "reps|a|r1": Rep.from_event(SPLIT, "a").to_dict()}
    return topics(leads, decisions, [SPLIT], log, route)


def test_a_healthy_run_with_pool_capacity_passes_i2_and_i3() -> None:
    report = run(split_run(2))
    assert report.ok, report.problems()
    assert report.checked_in_pool_log == 2


def test_a_capacity_overrun_within_the_pool_capacity_is_caught_by_the_replay() -> None:
    contents = split_run(3)
    # Forge the third decision's facts as a worker with a wrong view would: the replay must not trust them.
    forged = AssignmentDecision.model_validate_json(contents["decisions"][2].value)
    chosen = forged.explanation.chosen
    assert chosen is not None
    facts = {"open": 0.0, "capacity": 10.0}
    explanation = forged.explanation.model_copy(update={"chosen": chosen.model_copy(update={"facts": facts})})
    contents["decisions"][2].value = forged.model_copy(update={"explanation": explanation}).model_dump_json().encode()
    report = run(contents)
    assert report.capacity_violations == ["L2 -> r1: 3 open > capacity 2 (pool log replay)"]


def test_the_reps_table_is_compared_with_the_rep_as_its_pool_sees_it() -> None:
    contents = split_run(1)
    wrong = Rep.from_event(SPLIT.model_copy(update={"pool_capacity": {}}), "a").to_dict()  # capacity 10
    contents["route"] = records([(b"loads|a|r1", b'{"open": 1}'), (b"reps|a|r1", orjson.dumps(wrong))])
    report = run(contents)
    assert report.state_mismatches == ["reps a|r1: table (10, 'available', True) != pool log (2, 'available', True)"]


# --- the lifecycle: reassignments and closing activity (issue 12) -------------------------------------

HOUR_MS = 3_600_000


def attempt(d: AssignmentDecision, n: int, rep_id: str | None, held: list[str], at_ms: int) -> AssignmentDecision:
    """Attempt n of a decision, as a follow-up timer makes it at `at_ms`."""
    return d.model_copy(
        update={
            "attempt": n,
            "decision_id": f"id-{d.lead_id}#{n}",
            "rep_id": rep_id,
            "trigger": "sla_expired",
            "previous_holders": held,
            "decided_at": datetime.fromtimestamp(at_ms / 1000, UTC),
        }
    )


def lifecycle_run(second_to: str = "r2", open_r1: int = 1) -> dict[str, list[Any]]:
    """r1 and r2 hold one lead each at most. L1 goes to r1; its timer gives it to `second_to` an hour
    later; L2 arrives two hours later and goes to r1 again (free since the reassignment)."""
    reps = [RepUpdated(rep_id=r, pools=["a"], capacity=1) for r in ("r1", "r2")]
    l1, l2 = lead("L1", pool="a"), lead("L2", pool="a")
    t = Record(0, 0, None, None).timestamp
    d1 = decision("L1", "a", "r1", capacity=1)
    d2 = decision("L2", "a", "r1", capacity=1)
    decisions = [d1, attempt(d1, 2, second_to, ["r1"], t + HOUR_MS), d2]
    contents = topics([l1, l2], decisions, reps, [])
    p = home_partition("a", SETTINGS.partitions)
    log = [*(RepChanged(pool="a", rep_id=r.rep_id, profile=r) for r in reps), arrived(l1, "a"), arrived(l2, "a")]
    stamps = [t, t, t, t + 2 * HOUR_MS]
    contents["pool_events"] = [
        Record(p, i, b"a", ev.model_dump_json().encode(), ts)
        for i, (ev, ts) in enumerate(zip(log, stamps, strict=True))
    ]
    contents["route"] = route_rows(open_r1, 1 if second_to == "r2" else 0)
    return contents


def route_rows(open_r1: int, open_r2: int) -> list[Record]:
    reps = {
        f"reps|a|{r}": Rep.from_event(RepUpdated(rep_id=r, pools=["a"], capacity=1), "a").to_dict()
        for r in ("r1", "r2")
    }
    loads = {"loads|a|r1": {"open": open_r1}, "loads|a|r2": {"open": open_r2}}
    return records((k.encode(), orjson.dumps(v)) for k, v in {**reps, **loads}.items())


def test_a_reassignment_releases_its_silent_holder_in_the_replays() -> None:
    report = run(lifecycle_run())
    assert report.ok, report.problems()
    assert report.reassignments == 1 and report.checked_in_pool_log == 2


def test_an_attempt_given_to_a_previous_holder_is_reported() -> None:
    report = run(lifecycle_run(second_to="r1", open_r1=2), state=False)
    assert report.repeated_holders == ["L1: attempt 2 -> r1, held before: ['r1']"]
    assert not report.ok


def test_loads_that_missed_a_reassignments_release_are_reported() -> None:
    report = run(lifecycle_run(open_r1=2))
    assert report.state_mismatches == ["a|r1: table 2 != replay 1"]


def with_activity(contents: dict[str, list[Any]], kind: str, *, routed: bool = True) -> dict[str, list[Any]]:
    """An activity for L2 on leads.activity and (when routed) in pool a's log, after L2."""
    act = LeadActivity(lead_id="L2", kind=kind, occurred_at=T0)  # type: ignore[arg-type]
    contents["activity"] = records([(b"L2", act.model_dump_json().encode())])
    if routed:
        origin = Origin(topic=SETTINGS.topic_lead_activity, partition=0, offset=0)
        ev = ActivityArrived(pool="a", activity=act, origin=origin)
        last = contents["pool_events"][-1]
        contents["pool_events"].append(
            Record(last.partition, last.offset + 1, b"a", ev.model_dump_json().encode(), last.timestamp)
        )
    return contents


def test_a_closing_activity_releases_the_holder_in_the_replay() -> None:
    contents = with_activity(lifecycle_run(), "duplicate")
    assert run(contents).state_mismatches == ["a|r1: table 1 != replay 0"]
    contents["route"] = route_rows(0, 1)
    assert run(contents).ok
    touching = with_activity(lifecycle_run(), "first_contact")
    assert run(touching).ok, "only closing kinds release"


def test_activity_neither_routed_nor_dead_lettered_is_a_skipped_offset() -> None:
    report = run(with_activity(lifecycle_run(), "follow_up", routed=False))
    assert report.skipped_activity == [f"{SETTINGS.topic_lead_activity}[0]@0"]


def test_every_claim_is_answered_exactly_once() -> None:
    contents = lifecycle_run()
    claims = [LeadClaim(claim_id=c, lead_id="L9", rep_id="r1", requested_at=T0) for c in ("c1", "c2")]
    contents["claims"] = records((b"L9", c.model_dump_json().encode()) for c in claims)

    def result(claim_id: str) -> bytes:
        answer = ClaimResult(
            claim_id=claim_id,
            lead_id="L9",
            rep_id="r1",
            pool=None,
            accepted=False,
            reason="unknown_lead",
            decision_id=None,
            attempt=None,
            answered_at=T0,
        )
        return answer.model_dump_json().encode()

    contents["claim_results"] = records([(b"L9", result("c1")), (b"L9", result("c1"))])
    report = run(contents)
    assert report.claims_in == 2
    assert report.claim_answers == ["L9 claim c1: 1 claim(s), 2 answer(s)", "L9 claim c2: 1 claim(s), 0 answer(s)"]
    contents["claim_results"] = records([(b"L9", result("c1")), (b"L9", result("c2"))])
    assert run(contents).ok


def test_a_previous_holder_claiming_the_lead_back_is_no_repeat() -> None:
    contents = lifecycle_run(second_to="r1", open_r1=2)
    d = AssignmentDecision.model_validate_json(contents["decisions"][1].value)
    contents["decisions"][1].value = d.model_copy(update={"trigger": "claim"}).model_dump_json().encode()
    assert run(contents, state=False).repeated_holders == []


def waiting_run(third_open: int | None = None) -> dict[str, list[Any]]:
    """r1 holds one lead at most. L1 goes to r1; L2 waits (nobody had room); a deal for L1 an hour later
    frees r1 and L2 takes it (attempt 2, capacity_freed). With `third_open`, L3 arrives two hours later and
    is given to r1 as well, its own facts forged to `third_open` open."""
    r1 = RepUpdated(rep_id="r1", pools=["a"], capacity=1)
    l1, l2, l3 = lead("L1", pool="a"), lead("L2", pool="a"), lead("L3", pool="a")
    t = Record(0, 0, None, None).timestamp
    d1 = decision("L1", "a", "r1", capacity=1)
    w = decision("L2", "a", "r1", capacity=1).model_copy(
        update={
            "rep_id": None,
            "reason": "no_eligible_rep",
            "explanation": Explanation(strategy="default", summary="x"),
        }
    )
    freed = attempt(w, 2, "r1", [], t + HOUR_MS).model_copy(
        update={"trigger": "capacity_freed", "previous_holders": None}
    )
    decisions = [d1, w, freed]
    leads = [l1, l2]
    log: list[Any] = [RepChanged(pool="a", rep_id="r1", profile=r1), arrived(l1, "a"), arrived(l2, "a")]
    stamps = [t, t, t]
    closed = DealClosed(lead_id="L1", outcome="lost", closed_at=T0)
    contents = topics([], [], [r1], [])
    contents["deals"] = records([(b"L1", closed.model_dump_json().encode())])
    origin = Origin(topic=SETTINGS.topic_deals_closed, partition=0, offset=0)
    log.append(DealArrived(pool="a", deal=closed, origin=origin))
    stamps.append(t + HOUR_MS)
    if third_open is not None:
        leads.append(l3)
        decisions.append(decision("L3", "a", "r1", open_=third_open, capacity=1))
        log.append(arrived(l3, "a"))
        stamps.append(t + 2 * HOUR_MS)
    fresh = topics(leads, decisions, [r1], [])
    contents |= {"leads": fresh["leads"], "decisions": fresh["decisions"]}
    p = home_partition("a", SETTINGS.partitions)
    contents["pool_events"] = [
        Record(p, i, b"a", ev.model_dump_json().encode(), ts)
        for i, (ev, ts) in enumerate(zip(log, stamps, strict=True))
    ]
    reps = {"reps|a|r1": Rep.from_event(r1, "a").to_dict(), "loads|a|r1": {"open": 1 if third_open is None else 2}}
    contents["route"] = records((k.encode(), orjson.dumps(v)) for k, v in reps.items())
    return contents


def test_a_waiting_lead_taken_when_capacity_freed_counts_in_the_replay() -> None:
    report = run(waiting_run())
    assert report.ok, report.problems()
    assert report.reassignments == 1
    overrun = run(waiting_run(third_open=0), state=False)
    assert overrun.capacity_violations == ["L3 -> r1: 2 open > capacity 1 (pool log replay)"]


# --- I4 with availability tiers (issue 12 item 5) ----------------------------------------------------


def away_run(relaxed: list[str]) -> dict[str, list[Any]]:
    away = RepUpdated(rep_id="r1", pools=["a"], availability="away")
    x = lead("L1", pool="a")
    d = decision("L1", "a", "r1")
    d = d.model_copy(update={"explanation": d.explanation.model_copy(update={"relaxed": relaxed})})
    route = {"loads|a|r1": {"open": 1}, "reps|a|r1": Rep.from_event(away, "a").to_dict()}
    return topics([x], [d], [away], [RepChanged(pool="a", rep_id="r1", profile=away), arrived(x, "a")], route)


def test_a_decision_to_an_away_rep_is_fine_only_when_its_policy_accepted_away_reps() -> None:
    assert run(away_run(["accepted away reps"])).ok
    report = run(away_run([]))
    assert report.unavailable_assignments == ["L1 -> r1"]
    assert run(away_run(["accepted offline reps"])).unavailable_assignments == ["L1 -> r1"]


# --- duplicates (trigger duplicate_of) hold no open lead -------------------------------------------


def duplicate_run(holder_available: bool = True, open_r1: int = 1) -> dict[str, list[Any]]:
    """r1 holds one lead at most and takes L1; L2 repeats L1's contact and joins it at r1 (no load)."""
    rep = RepUpdated(rep_id="r1", pools=["a"], capacity=1)
    l1, l2 = lead("L1", pool="a"), lead("L2", pool="a")
    d1 = decision("L1", "a", "r1", capacity=1)
    d2 = decision("L2", "a", "r1").model_copy(update={"trigger": "duplicate_of"})
    away = rep.model_copy(update={"availability": "away"})
    log: list[LeadArrived | RepChanged] = [RepChanged(pool="a", rep_id="r1", profile=rep), arrived(l1, "a")]
    if not holder_available:
        log.append(RepChanged(pool="a", rep_id="r1", profile=away))
    log.append(arrived(l2, "a"))
    profile = away if not holder_available else rep
    route = {"loads|a|r1": {"open": open_r1}, "reps|a|r1": Rep.from_event(profile, "a").to_dict()}
    contents = topics([l1, l2], [d1, d2], [rep], [], route)
    p = home_partition("a", SETTINGS.partitions)
    contents["pool_events"] = [Record(p, i, b"a", ev.model_dump_json().encode()) for i, ev in enumerate(log)]
    return contents


def test_a_duplicate_at_a_full_holder_is_no_overload_and_holds_no_load() -> None:
    report = run(duplicate_run())
    assert report.ok, report.problems()
    assert report.checked_in_pool_log == 2 and report.contact_duplicates == 1
    assert "| duplicates (trigger duplicate_of)  |        1 |" in report.table()


def test_loads_that_counted_a_duplicate_are_reported() -> None:
    assert run(duplicate_run(open_r1=2)).state_mismatches == ["a|r1: table 2 != replay 1"]


def test_a_duplicate_given_to_an_unavailable_holder_is_reported() -> None:
    assert run(duplicate_run(holder_available=False)).unavailable_assignments == ["L2 -> r1"]


def test_a_deal_on_a_duplicate_releases_nothing_in_the_replay() -> None:
    contents = duplicate_run()
    won = DealClosed(lead_id="L2", outcome="won", closed_at=T0)
    contents["deals"] = records([(b"L2", won.model_dump_json().encode())])
    origin = Origin(topic=SETTINGS.topic_deals_closed, partition=0, offset=0)
    last = contents["pool_events"][-1]
    ev = DealArrived(pool="a", deal=won, origin=origin)
    contents["pool_events"].append(Record(last.partition, last.offset + 1, b"a", ev.model_dump_json().encode()))
    report = run(contents)
    assert report.ok, report.problems()


def test_a_duplicate_handed_back_becomes_a_lead_of_its_own_in_the_replays() -> None:
    """L2 joined L1 at r1 (no load); an hour later r1 hands it back and r2 takes it: from then on it holds
    one open lead of r2, and r1 released nothing for it."""
    reps = [RepUpdated(rep_id=r, pools=["a"], capacity=1) for r in ("r1", "r2")]
    l1, l2 = lead("L1", pool="a"), lead("L2", pool="a")
    t = Record(0, 0, None, None).timestamp
    d2 = decision("L2", "a", "r1").model_copy(update={"trigger": "duplicate_of"})
    decisions = [decision("L1", "a", "r1", capacity=1), d2, attempt(d2, 2, "r2", ["r1"], t + HOUR_MS)]
    log = [*(RepChanged(pool="a", rep_id=r.rep_id, profile=r) for r in reps), arrived(l1, "a"), arrived(l2, "a")]
    log.append(RepChanged(pool="a", rep_id="r1", profile=reps[0]))  # a later record: the replay places attempt 2
    p = home_partition("a", SETTINGS.partitions)
    stamps = [t, t, t, t, t + 2 * HOUR_MS]
    contents = topics([l1, l2], decisions, reps, [])
    contents["pool_events"] = [
        Record(p, i, b"a", ev.model_dump_json().encode(), ts)
        for i, (ev, ts) in enumerate(zip(log, stamps, strict=True))
    ]
    contents["route"] = route_rows(1, 1)
    report = run(contents)
    assert report.ok, report.problems()
    contents["route"] = route_rows(0, 1)  # r1 released a load it never had for the duplicate
    assert run(contents).state_mismatches == ["a|r1: table 0 != replay 1"]


def hand_back_run() -> dict[str, list[Any]]:
    """r1, r2, r3 hold one lead each at most. L goes to r1; r1 leaves (L to r2, attempt 2) and two seconds
    later r2 leaves (L to r3, attempt 3) and comes back; M arrives and goes to r2, free again. Hand-backs
    happen at their roster record: with the slack rule, attempt 3's release came before attempt 2's take
    and r2 looked overloaded."""
    reps = {r: RepUpdated(rep_id=r, pools=["a"], capacity=1) for r in ("r1", "r2", "r3")}
    lead_l, lead_m = lead("L", pool="a"), lead("M", pool="a")
    t = Record(0, 0, None, None).timestamp
    d = decision("L", "a", "r1", capacity=1)
    second = attempt(d, 2, "r2", ["r1"], t + 1000).model_copy(update={"trigger": "rep_left"})
    third = attempt(d, 3, "r3", ["r1", "r2"], t + 3000).model_copy(update={"trigger": "rep_left"})
    m = decision("M", "a", "r2", capacity=1)
    contents = topics([lead_l, lead_m], [d, second, third, m], list(reps.values()), [])
    log: list[tuple[Any, int]] = [(RepChanged(pool="a", rep_id=r, profile=p), t) for r, p in reps.items()]
    log += [
        (arrived(lead_l, "a"), t),
        (RepChanged(pool="a", rep_id="r1", profile=None), t + 1000),
        (RepChanged(pool="a", rep_id="r2", profile=None), t + 3000),
        (RepChanged(pool="a", rep_id="r2", profile=reps["r2"]), t + 4000),
        (arrived(lead_m, "a"), t + 10_000),
    ]
    p = home_partition("a", SETTINGS.partitions)
    contents["pool_events"] = [Record(p, i, b"a", ev.model_dump_json().encode(), ts) for i, (ev, ts) in enumerate(log)]
    return contents


def test_hand_backs_apply_at_their_roster_record_in_the_replay() -> None:
    report = run(hand_back_run(), state=False)
    assert report.capacity_violations == [], report.capacity_violations
    assert report.ok, report.problems()
    assert report.reassignments == 2


# --- updates: a move releases in the old pool and is the next attempt in the new one --------------------


def move_run(*, to: str = "b", open_a: int = 1, open_b: int = 1, update_in_log: bool = True) -> dict[str, list[Any]]:
    """r1 (pool a) and r2 (pool `to`: b shares a's partition, c does not) hold one lead each at most.
    L1 goes to r1; an update moves it to `to` (attempt 2, r2); L2 then takes r1 in a; a deal closes L1
    in `to`, and L3 then takes r2."""
    r1, r2 = RepUpdated(rep_id="r1", pools=["a"], capacity=1), RepUpdated(rep_id="r2", pools=[to], capacity=1)
    l1, l2, l3 = lead("L1", pool="a"), lead("L2", pool="a"), lead("L3", pool=to)
    moved = lead("L1", pool=to)
    d1 = decision("L1", "a", "r1", capacity=1)
    d1b = d1.model_copy(
        update={"attempt": 2, "decision_id": "id-L1#2", "pool": to, "rep_id": "r2", "trigger": "moved"}
        | {"previous_holders": ["r1"]}
    )
    decisions = [d1, d1b, decision("L2", "a", "r1", capacity=1), decision("L3", to, "r2", capacity=1)]
    contents = topics([l1, l2, l3], decisions, [r1, r2], [])
    origin = Origin(topic=SETTINGS.topic_leads_updated, partition=0, offset=0)
    contents["updates"] = records([(b"L1", moved.model_dump_json().encode())])
    won = DealClosed(lead_id="L1", outcome="won", amount=1.0, closed_at=T0)
    contents["deals"] = records([(b"L1", won.model_dump_json().encode())])
    deal_origin = Origin(topic=SETTINGS.topic_deals_closed, partition=0, offset=0)
    log: list[Any] = [
        RepChanged(pool="a", rep_id="r1", profile=r1),
        RepChanged(pool=to, rep_id="r2", profile=r2),
        arrived(l1, "a"),
    ]
    if update_in_log:
        log.append(LeadUpdated(pool="a", to_pool=to, lead=moved, received_at=T0, origin=origin))
    log += [  # what the update sent on comes after it; the rest in any order the logs allow
        LeadArrived(pool=to, lead=moved, received_at=T0, attempt=2, previous_holders=["r1"], trigger="moved"),
        arrived(l2, "a"),
        DealArrived(pool=to, deal=won, origin=deal_origin),
        arrived(l3, to),
    ]
    offsets: Counter[int] = Counter()
    contents["pool_events"] = []
    for ev in log:
        p = home_partition(ev.pool, SETTINGS.partitions)
        contents["pool_events"].append(Record(p, offsets[p], ev.pool.encode(), ev.model_dump_json().encode()))
        offsets[p] += 1
    rows = {
        "reps|a|r1": Rep.from_event(r1, "a").to_dict(),
        f"reps|{to}|r2": Rep.from_event(r2, to).to_dict(),
        "loads|a|r1": {"open": open_a},
        f"loads|{to}|r2": {"open": open_b},
    }
    contents["route"] = records((k.encode(), orjson.dumps(v)) for k, v in rows.items())
    return contents


@pytest.mark.parametrize("to", ["b", "c"])
def test_a_move_releases_the_old_holder_and_holds_the_new_one_in_the_replay(to: str) -> None:
    assert (home_partition(to, SETTINGS.partitions) == home_partition("a", SETTINGS.partitions)) == (to == "b")
    report = run(move_run(to=to))
    assert report.ok, report.problems()
    assert report.reassignments == 1 and report.updates_in == 1 and report.checked_in_pool_log == 3


def test_loads_that_kept_the_moved_lead_in_its_old_pool_are_reported() -> None:
    assert run(move_run(open_a=2)).state_mismatches == ["a|r1: table 2 != replay 1"]


def test_a_move_the_old_pool_never_saw_leaves_its_holder_full_in_the_replay() -> None:
    report = run(move_run(update_in_log=False), state=False)
    assert report.capacity_violations == ["L2 -> r1: 2 open > capacity 1 (pool log replay)"]
    assert report.skipped_updates == [f"{SETTINGS.topic_leads_updated}[0]@0"], "nor did the update reach a pool"


def test_an_update_whose_lead_got_no_decision_is_a_lost_lead() -> None:
    contents = move_run()
    ghost = lead("L9", pool="a")
    contents["updates"] += [Record(0, 1, b"L9", ghost.model_dump_json().encode())]
    report = run(contents, state=False)
    assert report.lost_leads == ["L9"]
    assert report.skipped_updates == [f"{SETTINGS.topic_leads_updated}[0]@1"]


def test_an_invalid_update_must_be_dead_lettered() -> None:
    contents = move_run()
    contents["updates"] += [Record(0, 1, b"X", b"{not json")]
    assert run(contents).skipped_updates == [f"{SETTINGS.topic_leads_updated}[0]@1"]
    source = [
        ("x-leadrelay-source-topic", SETTINGS.topic_leads_updated.encode()),
        ("x-leadrelay-source-partition", b"0"),
        ("x-leadrelay-source-offset", b"1"),
        ("x-leadrelay-reason", b"invalid_json"),
    ]
    contents["dlq"] = [Record(0, 0, b"X", b"{not json", headers=source)]
    assert run(contents).ok
