"""The lead's lifecycle on the real broker: activity closes a lead and frees its rep; activity for a lead
that never comes dead-letters as unknown_lead; an update that moves a lead releases its old load; follow-up
timers reassign exactly once per expiry and never to a previous holder, with two workers and rebalances
while the timers run."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from schemas.events import (
    AssignmentDecision,
    ClaimResult,
    DealClosed,
    LeadActivity,
    LeadClaim,
    LeadCreated,
    RepUpdated,
)
from streams.kafka.topics import home_partition
from streams.tools.verify import verify

pytestmark = pytest.mark.integration
T0 = datetime.now(UTC).replace(microsecond=0)
FAST = {"LEADRELAY_HOUSEKEEPING_INTERVAL_SECONDS": "1"}


def pools_on_every_partition(partitions: int = 4) -> list[str]:
    found: dict[int, str] = {}
    i = 0
    while len(found) < partitions:
        found.setdefault(home_partition(f"sla{i}", partitions), f"sla{i}")
        i += 1
    return [found[p] for p in sorted(found)]


def lead(lead_id: str, pool: str) -> LeadCreated:
    return LeadCreated(lead_id=lead_id, created_at=T0, pool=pool)


def activity(lead_id: str, kind: str, rep_id: str | None = None) -> tuple[bytes, bytes]:
    record = LeadActivity(lead_id=lead_id, kind=kind, rep_id=rep_id, occurred_at=datetime.now(UTC))  # type: ignore[arg-type]
    return lead_id.encode(), record.model_dump_json().encode()


def policy(**follow_up: Any) -> bytes:
    return orjson.dumps({"id": "sla", "version": 1, "follow_up": follow_up})


def wait_for(check: Any, what: str, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_a_closing_activity_closes_the_lead_and_releases_its_reps_load(deployment: Any) -> None:
    dep = deployment
    dep.worker()
    dep.send_roster([RepUpdated(rep_id=r, pools=["p"], capacity=5) for r in ("ann", "bob")])
    dep.settle(2)
    dep.send_leads([lead("A1", "p"), lead("A2", "p")])
    decided = {d.lead_id: d for d in dep.decisions(at_least=2)}
    holder = decided["A1"].rep_id
    assert holder is not None
    touched, closing = activity("A1", "first_contact", holder), activity("A1", "disqualified")
    dep.send(dep.settings.topic_lead_activity, [touched, closing])

    def closed() -> dict[str, Any] | None:
        entry = dep.table("ledger").get("p|A1")
        return entry if entry and entry["status"] == "disqualified" else None

    entry = wait_for(closed, "the lead to close")
    assert entry["closure"]["holder"] == holder and entry["last_activity"]["kind"] == "disqualified"
    loads = dep.table("loads")
    assert loads[f"p|{holder}"]["open"] == 0
    other = decided["A2"].rep_id
    assert loads[f"p|{other}"]["open"] == 1, "the other lead still holds its rep"
    report = verify(dep.settings)
    assert report.ok, report.problems()


def test_activity_for_a_lead_that_never_comes_dead_letters_as_unknown_lead(deployment_factory: Any) -> None:
    dep = deployment_factory(extra={**FAST, "LEADRELAY_UNKNOWN_LEAD_WAIT_SECONDS": "2"})
    dep.worker()
    dep.send(dep.settings.topic_lead_activity, [activity("GHOST-1", "follow_up"), (b"X", b"{not json")])
    dlq = dep.records(dep.settings.topic_dlq, at_least=2, timeout=90)
    reasons = {dict(r.headers)["x-leadrelay-reason"].decode(): r for r in dlq}
    assert set(reasons) == {"unknown_lead", "invalid_json"}
    ghost = dict(reasons["unknown_lead"].headers)
    assert ghost["x-leadrelay-source-topic"].decode() == dep.settings.topic_lead_activity
    assert reasons["unknown_lead"].key == b"GHOST-1"
    assert orjson.loads(reasons["unknown_lead"].value)["kind"] == "follow_up"
    assert dep.table("parked-activity") == {}
    report = verify(dep.settings)
    assert report.ok, report.problems()


def test_a_moved_lead_releases_its_old_load(deployment: Any) -> None:
    """An update that places a lead in another pool (on another partition): the old holder's load is
    released once, the new pool decides attempt 2 with a rep of its own, the index follows, and a deal
    afterwards is credited in the new pool."""
    dep = deployment
    old, new = "west", "east"
    assert home_partition(old, dep.partitions) != home_partition(new, dep.partitions)
    dep.worker()
    dep.send_roster(
        [RepUpdated(rep_id="ann", pools=[old], capacity=5), RepUpdated(rep_id="bob", pools=[new], capacity=5)]
    )
    dep.settle(2)
    dep.send_leads([lead("M1", old), lead("M2", old)])
    first = {d.lead_id: d for d in dep.decisions(at_least=2)}
    assert first["M1"].rep_id == first["M2"].rep_id == "ann"
    moved = LeadCreated(lead_id="M1", created_at=T0, pool=new, estimated_value=900.0)
    dep.send(dep.settings.topic_leads_updated, [(b"M1", moved.model_dump_json().encode())])
    second = next(d for d in dep.decisions(at_least=3) if d.attempt == 2)
    assert (second.lead_id, second.pool, second.rep_id, second.trigger) == ("M1", new, "bob", "moved")
    assert second.previous_holders == ["ann"]

    def settled() -> dict[str, Any] | None:
        loads, index = dep.table("loads"), dep.table("lead-index")
        done = loads.get(f"{old}|ann", {}).get("open") == 1 and index.get("M1", {}).get("pool") == new
        return loads if done else None

    loads = wait_for(settled, "the old load released and the index moved")
    assert loads[f"{new}|bob"]["open"] == 1, "the new holder holds it"
    ledger = dep.table("ledger")
    assert (ledger[f"{old}|M1"]["status"], ledger[f"{old}|M1"]["moved_to"]) == ("moved", new)
    dep.send_deals([DealClosed(lead_id="M1", outcome="won", amount=900.0, closed_at=datetime.now(UTC))])

    def won() -> dict[str, Any] | None:
        entry = dep.table("ledger").get(f"{new}|M1")
        return entry if entry and entry["status"] == "won" else None

    wait_for(won, "the deal to close the lead in its new pool")
    loads = dep.table("loads")
    assert loads[f"{new}|bob"]["open"] == 0 and loads[f"{old}|ann"]["open"] == 1
    assert dep.table("performance").get(f"{new}|bob"), "the deal counts for the new holder in the new pool"
    report = verify(dep.settings)
    assert report.ok, report.problems()
    assert report.updates_in == 1 and report.reassignments == 1


def test_sla_expiry_reassigns_exactly_once_never_to_a_previous_holder_across_rebalances(
    deployment_factory: Any,
) -> None:
    """Timers of 10 s, five attempts. Once the first worker has reassigned, a second one joins (a
    rebalance) and the first leaves (another): later timers fire on the second worker, from the rows
    the first one committed. Every lead still gets exactly one decision per attempt."""
    dep = deployment_factory(extra={**FAST, "LEADRELAY_SESSION_TIMEOUT_SECONDS": "6"})
    pools = pools_on_every_partition(dep.partitions)
    w1 = dep.worker("w1")
    dep.send_roster([RepUpdated(rep_id=f"r{i}", pools=pools, capacity=50) for i in range(7)])
    dep.send(dep.settings.topic_policies, [(p.encode(), policy(within="10s", max_attempts=5)) for p in pools])
    dep.settle(3)
    leads = [lead(f"S{p}-{i}", pool) for p, pool in enumerate(pools) for i in range(3)]
    dep.send_leads(leads)
    first = dep.decisions(at_least=len(leads))
    assert {d.attempt for d in first} == {1} and all(d.rep_id for d in first)
    wait_for(lambda: any(d.attempt == 2 for d in dep.decisions(at_least=1)), "a first reassignment on w1")
    w2 = dep.worker("w2")  # a rebalance while timers run
    w1.stop()  # and another: w2 owns every partition from here
    # every lead: attempts 1-5 with reps, then 6 back to the open pool
    final = dep.decisions(at_least=6 * len(leads), timeout=300)

    by_lead: dict[str, list[AssignmentDecision]] = defaultdict(list)
    for d in final:
        by_lead[d.lead_id].append(d)
    for lead_id, items in by_lead.items():
        attempts = sorted(d.attempt for d in items)
        assert attempts == [1, 2, 3, 4, 5, 6], f"{lead_id}: exactly one decision per attempt, got {attempts}"
        chain = sorted(items, key=lambda d: d.attempt)
        assert len({d.decision_id for d in chain}) == 6
        holders: list[str] = []
        for d in chain:
            assert d.rep_id is None or d.rep_id not in holders, f"{lead_id}: attempt {d.attempt} to a previous holder"
            if d.attempt > 1:
                assert d.trigger == "sla_expired" and d.previous_holders == holders
                assert d.decided_at >= chain[d.attempt - 2].decided_at + timedelta(seconds=10)
            if d.rep_id:
                holders.append(d.rep_id)
        assert chain[-1].reason == "sent_to_claim_pool" and chain[-1].rep_id is None
    assert len(final) == 6 * len(leads), "no decision twice"
    fired = {name: (dep.root / name / "worker.log").read_text().count("follow-up SLA") for name in ("w1", "w2")}
    assert fired["w1"] > 0 and fired["w2"] > 0, f"timers fired on both sides of the rebalances: {fired}"
    assert w2.alive()
    assert all(v["open"] == 0 for v in dep.table("loads").values()), "every silent holder was released"
    assert dep.table("sla") == {}
    report = verify(dep.settings)
    assert report.ok, report.problems()
    assert report.reassignments == 5 * len(leads)


def test_two_claims_for_one_lead_in_flight_give_one_winner_and_one_rejection(deployment: Any) -> None:
    dep = deployment
    dep.worker()
    dep.send_roster([RepUpdated(rep_id=r, pools=["grab"], capacity=5) for r in ("ann", "bob")])
    grab = {"id": "grab", "version": 1, "strategies": {"default": {"selector": {"type": "claim_pool"}}}}
    dep.send(dep.settings.topic_policies, [(b"grab", orjson.dumps(grab))])
    dep.settle(3)
    dep.send_leads([lead("G1", "grab")])
    [first] = dep.decisions(at_least=1)
    assert first.reason == "sent_to_claim_pool"
    claims = [
        LeadClaim(claim_id=f"c-{rep}", lead_id="G1", rep_id=rep, requested_at=datetime.now(UTC))
        for rep in ("bob", "ann")
    ]
    dep.send(dep.settings.topic_claims, [(b"G1", c.model_dump_json().encode()) for c in claims])  # one batch
    answers = [
        ClaimResult.model_validate_json(r.value) for r in dep.records(dep.settings.topic_claim_results, at_least=2)
    ]
    assert sorted(a.claim_id for a in answers) == ["c-ann", "c-bob"], "each claim answered once"
    [won] = [a for a in answers if a.accepted]
    [lost] = [a for a in answers if not a.accepted]
    assert won.reason == "claimed" and lost.reason == "not_claimable"
    decisions = dep.decisions(at_least=2)
    assert [(d.attempt, d.rep_id, d.trigger) for d in sorted(decisions, key=lambda d: d.attempt)] == [
        (1, None, None),
        (2, won.rep_id, "claim"),
    ]
    assert dep.table("loads")[f"grab|{won.rep_id}"]["open"] == 1
    report = verify(dep.settings)
    assert report.ok, report.problems()
    assert report.claims_in == 2


def test_leadrelay_pool_lists_what_is_claimable_and_claim_answers(
    deployment: Any, monkeypatch: Any, capsys: Any
) -> None:
    from streams.tools.cli import main

    dep = deployment
    for name, value in dep.env.items():
        monkeypatch.setenv(name, value)
    dep.worker()
    dep.send_roster([RepUpdated(rep_id=r, pools=["grab"], capacity=5) for r in ("ann", "bob")])
    grab = {"id": "grab", "version": 1, "strategies": {"default": {"selector": {"type": "claim_pool"}}}}
    dep.send(dep.settings.topic_policies, [(b"grab", orjson.dumps(grab))])
    dep.settle(3)
    dep.send_leads([lead("G2", "grab")])
    dep.decisions(at_least=1)
    wait_for(lambda: dep.table("ledger").get("grab|G2"), "the ledger row")
    capsys.readouterr()
    assert main(["pool", "--json"]) == 0
    [listed] = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (listed["lead_id"], listed["pool"], listed["attempt"]) == ("G2", "grab", 1)
    assert main(["claim", "G2", "--rep", "ann", "--timeout", "60"]) == 0
    assert "won (attempt 2)" in capsys.readouterr().out
    assert main(["claim", "G2", "--rep", "bob", "--timeout", "60"]) == 1
    assert "refused: not_claimable" in capsys.readouterr().out
    wait_for(lambda: dep.table("ledger")["grab|G2"]["status"] == "open", "the claim in the table")
    assert main(["pool", "--json"]) == 0 and capsys.readouterr().out == ""


def test_a_full_pools_waiting_leads_are_assigned_in_order_as_deals_free_capacity(deployment: Any) -> None:
    """Two reps with room for one lead each; three more leads wait (highest value first, then the oldest)
    and each deal that frees a rep gives it the next one, as attempt 2 with trigger capacity_freed."""
    dep = deployment
    dep.worker()
    dep.send_roster([RepUpdated(rep_id=r, pools=["w"], capacity=1) for r in ("ann", "bob")])
    dep.send(dep.settings.topic_policies, [(b"w", orjson.dumps({"id": "wait", "version": 1, "waiting": {}}))])
    dep.settle(2)
    dep.send_leads([lead("F1", "w"), lead("F2", "w")])
    dep.decisions(at_least=2)
    waiting = [
        LeadCreated(lead_id="small-old", created_at=T0 - timedelta(hours=2), pool="w", estimated_value=100),
        LeadCreated(lead_id="big", created_at=T0, pool="w", estimated_value=9000),
        LeadCreated(lead_id="small-new", created_at=T0, pool="w", estimated_value=100),
    ]
    dep.send_leads(waiting)
    first = dep.decisions(at_least=5)
    reasons = {d.lead_id: d.reason for d in first}
    assert [reasons[x.lead_id] for x in waiting] == ["no_eligible_rep"] * 3
    wait_for(lambda: len(dep.table("wait")) == 3, "three waiting rows")
    taken: list[str] = []
    for n, holder in enumerate(["F1", "F2", "big"], start=1):
        dep.send_deals([DealClosed(lead_id=holder, outcome="lost", closed_at=datetime.now(UTC))])
        later = [d for d in dep.decisions(at_least=5 + n, timeout=90) if d.attempt == 2]
        assert len(later) == n, f"one waiting lead per freed rep, got {[d.lead_id for d in later]}"
        d = next(d for d in later if d.lead_id not in taken)
        assert d.trigger == "capacity_freed" and d.rep_id is not None
        assert any("waited" in note for note in d.explanation.notes)
        taken.append(d.lead_id)
    assert taken == ["big", "small-old", "small-new"]
    wait_for(lambda: dep.table("wait") == {}, "an empty queue")
    dep.settle(2)
    report = verify(dep.settings)
    assert report.ok, report.problems()


def test_an_offline_reps_untouched_leads_are_reassigned_per_policy(deployment: Any) -> None:
    """Issue 12 item 5 on the broker: the pool's policy hands back at `offline`. ann holds three leads
    and works one; she goes offline: the two untouched ones go to bob as attempt 2 (trigger
    rep_unavailable), the worked one stays, loads follow, and verify's invariants hold. Then bob leaves
    the pool: his leads go to cid (trigger rep_left)."""
    dep = deployment
    dep.worker()
    doc = {"id": "avail", "version": 1, "availability": {"hand_back": ["offline"]}}
    dep.send(dep.settings.topic_policies, [(b"av", orjson.dumps(doc))])
    dep.send_roster([RepUpdated(rep_id="ann", pools=["av"], capacity=5)])
    dep.settle(2)
    dep.send_leads([lead(f"H{i}", "av") for i in range(3)])
    first = dep.decisions(at_least=3)
    assert {d.rep_id for d in first} == {"ann"}
    dep.send(dep.settings.topic_lead_activity, [activity("H0", "first_contact", "ann")])
    wait_for(lambda: (dep.table("ledger").get("av|H0") or {}).get("touched_at"), "ann's touch")
    # The roster topic is keyed by rep: records of different reps are not ordered, so ann goes offline
    # only once bob and cid are in the pool.
    dep.send_roster(
        [
            RepUpdated(rep_id="bob", pools=["av"], capacity=5),
            RepUpdated(rep_id="cid", pools=["av"], capacity=5, availability="away"),
        ]
    )
    wait_for(lambda: {"av|bob", "av|cid"} <= set(dep.table("reps")), "bob and cid in the pool")
    dep.send_roster([RepUpdated(rep_id="ann", pools=["av"], capacity=5, availability="offline")])
    handed = [d for d in dep.decisions(at_least=5) if d.attempt == 2]
    assert sorted(d.lead_id for d in handed) == ["H1", "H2"]
    assert all(d.rep_id == "bob" and d.trigger == "rep_unavailable" and d.previous_holders == ["ann"] for d in handed)
    loads = dep.table("loads")
    assert (loads["av|ann"]["open"], loads["av|bob"]["open"]) == (1, 2)

    dep.send_roster([RepUpdated(rep_id="cid", pools=["av"], capacity=5)])
    wait_for(lambda: dep.table("reps")["av|cid"]["availability"] == "available", "cid available")
    dep.send_roster([RepUpdated(rep_id="bob", pools=["other"], capacity=5)])  # bob moves to another pool
    third = [d for d in dep.decisions(at_least=7) if d.attempt == 3]
    assert sorted(d.lead_id for d in third) == ["H1", "H2"]
    assert all(d.rep_id == "cid" and d.trigger == "rep_left" for d in third)
    wait_for(lambda: dep.table("loads").get("av|cid", {}).get("open") == 2, "cid's load")
    assert dep.table("loads")["av|bob"]["open"] == 0
    report = verify(dep.settings)
    assert report.ok, report.problems()


def test_waiting_leads_are_listed_in_order_and_go_to_the_open_pool_once_after_max_wait(
    deployment_factory: Any, monkeypatch: Any, capsys: Any
) -> None:
    """One rep with room for one lead; two more leads wait (`leadrelay pool --waiting` shows them in the
    order they would be taken), and after `max_wait` each goes to the open pool exactly once (trigger
    max_wait), where `leadrelay pool` lists it as claimable."""
    from streams.tools.cli import main

    dep = deployment_factory(extra=FAST)
    for name, value in dep.env.items():
        monkeypatch.setenv(name, value)
    dep.worker()
    dep.send_roster([RepUpdated(rep_id="ann", pools=["mw"], capacity=1)])
    doc = {"id": "max-wait", "version": 1, "waiting": {"max_wait": "8s"}}
    dep.send(dep.settings.topic_policies, [(b"mw", orjson.dumps(doc))])
    dep.settle(2)
    dep.send_leads([lead("M0", "mw")])
    dep.decisions(at_least=1)
    small = LeadCreated(lead_id="M-small", created_at=T0, pool="mw", estimated_value=10)
    big = LeadCreated(lead_id="M-big", created_at=T0, pool="mw", estimated_value=5000)
    dep.send_leads([small, big])
    dep.decisions(at_least=3)
    wait_for(lambda: len(dep.table("wait")) == 2, "two waiting rows")
    capsys.readouterr()
    assert main(["pool", "--waiting", "--json"]) == 0
    listed = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(x["lead_id"], x["position"]) for x in listed] == [("M-big", 1), ("M-small", 2)]
    assert all(x["due"] for x in listed), "each shows when max_wait ends"

    wait_for(lambda: [d for d in dep.decisions(at_least=3) if d.attempt == 2], "max_wait", 90)
    dep.settle(4)  # a second firing, if there were one, would have come by now
    later = [d for d in dep.decisions(at_least=5) if d.attempt == 2]
    assert sorted(d.lead_id for d in later) == ["M-big", "M-small"], "each exactly once"
    assert all(d.trigger == "max_wait" and d.reason == "sent_to_claim_pool" and d.rep_id is None for d in later)
    assert dep.table("wait") == {}
    assert main(["pool", "--json"]) == 0
    assert sorted(orjson.loads(x)["lead_id"] for x in capsys.readouterr().out.splitlines()) == ["M-big", "M-small"]


def test_a_lead_repeating_an_open_leads_contact_goes_to_its_holder(deployment_factory: Any) -> None:
    """Dedupe on the broker: two leads with one e-mail (spelt two ways) in a pool whose reps take one lead
    each. The second goes to the first one's holder (trigger duplicate_of) without load, so a third lead
    still finds the other rep free, and verify's replay agrees with the loads table."""
    dep = deployment_factory(extra={"LEADRELAY_DEDUPE_SECRET": "integration-dedupe-secret-0123"})
    dep.worker()
    dep.send_roster([RepUpdated(rep_id=r, pools=["d"], capacity=1) for r in ("ann", "bob")])
    dedupe = {"id": "dedupe", "version": 1, "dedupe": {"keys": ["email", "phone"], "horizon": "1d"}}
    dep.send(dep.settings.topic_policies, [(b"d", orjson.dumps(dedupe))])
    dep.settle(2)

    def raw(lead_id: str, email: str) -> tuple[bytes, bytes]:
        body = {"lead_id": lead_id, "created_at": T0.isoformat(), "pool": "d", "contact": {"email": email}}
        return lead_id.encode(), orjson.dumps(body)

    dep.send(dep.settings.topic_leads_new, [raw("D1", "Sam.Lee@Acme.example")])
    [first] = dep.decisions(at_least=1)
    dep.send(dep.settings.topic_leads_new, [raw("D2", " sam.lee@acme.example"), raw("D3", "kim@other.example")])
    decided = {d.lead_id: d for d in dep.decisions(at_least=3)}
    holder, again, other = first.rep_id, decided["D2"], decided["D3"]
    assert holder is not None
    assert (again.rep_id, again.reason, again.trigger) == (holder, "assigned", "duplicate_of")
    assert "D1" in again.explanation.summary and "email" in again.explanation.summary
    assert other.trigger is None and other.rep_id not in (None, holder), "the duplicate left the other rep free"
    dep.settle(2)
    loads = dep.table("loads")
    assert loads[f"d|{holder}"]["open"] == 1 and loads[f"d|{other.rep_id}"]["open"] == 1
    assert dep.table("ledger")["d|D2"]["duplicate_of"] == {"lead_id": "D1", "kind": "email"}
    assert sorted(k.split("|")[1] for k in dep.table("dedupe")) == ["email", "email"]
    report = verify(dep.settings)
    assert report.ok, report.problems()
