"""Lead updates through the stages: leads.updated reaches the pool that holds the lead, which keeps its
holder, decides it again, or moves it to another pool (released once there, decided as the next attempt
in the new pool, the index moved after); records that still find the old pool follow the lead."""

from __future__ import annotations

from typing import Any

import pytest

from routing import sla
from schemas.events import LeadActivity, LeadCreated
from schemas.internal import ActivityArrived, LeadUpdated
from tests.agents.conftest import NOW, Harness, encode, home, lead, policy, policy_changed, raw, rep_changed

pytestmark = pytest.mark.asyncio
A, B = "pa", "pb"  # two pools, on the same or different route partitions


async def update(h: Harness, lead_id: str = "lead-1", **fields: Any) -> list[Any]:
    """A leads.updated record all the way (leads stage, the pool log, and whatever a move sends on)."""
    value = raw(lead(lead_id=lead_id, **fields))
    return await h.deliver(
        await h.feed("leads", h.settings.topic_leads_updated, home(lead_id), value, lead_id.encode())
    )


async def pools(h: Harness, doc: dict[str, Any] | None = None) -> None:
    for pool, reps in ((A, "abc"), (B, "xyz")):
        if doc is not None:
            await h.route(policy_changed(pool, doc), pool=pool)
        for r in reps:
            await h.route(rep_changed(pool, f"rep-{r}"), pool=pool)


async def decide(h: Harness, pool: str = A, lead_id: str = "lead-1", **fields: Any) -> dict[str, Any]:
    await h.lead(raw(lead(lead_id=lead_id, pool=pool, **fields)), lead_id.encode())
    return decisions(h, lead_id)[-1]


def decisions(h: Harness, lead_id: str = "lead-1") -> list[dict[str, Any]]:
    return [s.json() for s in h.sent("assignments") if s.key == lead_id.encode()]


def loads(h: Harness) -> dict[str, int]:
    return {k: v["open"] for k, v in h.table("loads").items()}


def ledger(h: Harness, pool: str, lead_id: str = "lead-1") -> dict[str, Any]:
    entry: dict[str, Any] = h.table("ledger")[f"{pool}|{lead_id}"]
    return entry


def updates(h: Harness, outcome: str) -> float:
    return h.registry.get_sample_value("leadrelay_lead_updates_total", {"outcome": outcome}) or 0.0


# --- moves ---------------------------------------------------------------------------------------


async def test_a_moved_lead_releases_its_old_load_and_is_decided_again_in_its_new_pool(h: Harness) -> None:
    await pools(h, policy(follow_up={"within": "1h"}))
    first = await decide(h)
    holder = first["rep_id"]
    assert loads(h)[f"{A}|{holder}"] == 1 and len(h.table("sla")) == 1
    sent = await update(h, pool=B, estimated_value=5000.0)
    [d] = [s.json() for s in sent if s.topic == h.topics["assignments"]]
    assert (d["pool"], d["attempt"], d["trigger"], d["previous_holders"]) == (B, 2, "moved", [holder])
    assert d["rep_id"] in ("rep-x", "rep-y", "rep-z") and d["decision_id"] != first["decision_id"]
    assert any(f"from pool {A}" in n for n in d["explanation"]["notes"]), "the decision explains the move"
    assert loads(h)[f"{A}|{holder}"] == 0, "the old holder's load is released"
    assert loads(h)[f"{B}|{d['rep_id']}"] == 1
    old = ledger(h, A)
    assert (old["status"], old["moved_to"], old["closure"]["reason"]) == ("moved", B, "moved")
    assert [k for k in h.table("sla") if f"|{A}|" in k] == [], "the old holder's timer stops"
    assert ledger(h, B)["holders"] == [holder] and ledger(h, B)["decision"]["attempt"] == 2
    # the new pool's log has the lead before the index names it
    kinds = [(s.topic, s.json()["kind"]) for s in sent if s.topic != h.topics["assignments"]]
    assert kinds[-2:] == [(h.topics["pool_events"], "lead"), (h.topics["lead_events"], "indexed")]
    assert h.table("lead-index")["lead-1"]["pool"] == B
    assert updates(h, "moved") == 1
    assert "jane.roe" not in str(h.snapshot()) and not any(b"jane.roe" in (s.value or b"") for s in h.log)
    # a deal afterwards is credited in the new pool
    await h.deal(raw({"lead_id": "lead-1", "outcome": "won", "amount": 1.0, "closed_at": NOW.isoformat()}), b"lead-1")
    assert ledger(h, B)["status"] == "won" and loads(h)[f"{B}|{d['rep_id']}"] == 0
    assert ledger(h, A)["status"] == "moved"


async def test_records_that_still_find_the_old_pool_follow_the_lead(h: Harness) -> None:
    await pools(h)
    await decide(h)
    await update(h, pool=B)
    holder = ledger(h, B)["rep_id"]
    # an activity the index had routed to the old pool before it moved
    closing = LeadActivity.model_validate({"lead_id": "lead-1", "kind": "cancelled", "occurred_at": NOW.isoformat()})
    sent = await h.deliver(await h.route(encode(ActivityArrived(pool=A, activity=closing)), pool=A))
    assert (sent[0].topic, sent[0].key) == (h.topics["pool_events"], B.encode())
    assert ledger(h, B)["status"] == "cancelled" and loads(h)[f"{B}|{holder}"] == 0
    # and an update that still finds the old pool goes on as an update of the new one
    new = LeadCreated.model_validate(lead(pool=B, estimated_value=3.0))
    late = LeadUpdated(pool=A, to_pool=B, lead=new, received_at=NOW)
    sent = await h.deliver(await h.route(encode(late), pool=A))
    assert (sent[0].topic, sent[0].json()["kind"], sent[0].json()["pool"]) == (h.topics["pool_events"], "update", B)
    assert ledger(h, A)["status"] == "moved" and updates(h, "forwarded") == 1
    assert updates(h, "ignored") == 1, "the new pool's lead is closed (cancelled)"


async def test_a_lead_moved_back_is_its_next_attempt_in_the_first_pool(h: Harness) -> None:
    await pools(h)
    first = await decide(h)
    await update(h, pool=B)
    second = decisions(h)[-1]
    await update(h, pool=A)
    third = decisions(h)[-1]
    assert (third["pool"], third["attempt"], third["trigger"]) == (A, 3, "moved")
    assert third["previous_holders"] == [first["rep_id"], second["rep_id"]]
    assert third["rep_id"] not in (first["rep_id"], second["rep_id"])
    assert ledger(h, B)["status"] == "moved" and ledger(h, A)["status"] == "open"
    assert sum(loads(h).values()) == 1, "one lead, one load"


async def test_a_re_send_on_leads_new_never_re_routes(h: Harness) -> None:
    await pools(h)
    first = await decide(h)
    await h.lead(raw(lead(pool=B)), b"lead-1")
    assert decisions(h)[-1] == first and f"{B}|lead-1" not in h.table("ledger")
    assert h.table("lead-index")["lead-1"]["pool"] == A


# --- staying in the pool ---------------------------------------------------------------------------

MUST_FIT = policy(strategies={"default": {"must_have": [{"tag": "ind:{industry}"}], "scorers": {"load": 1}}})


async def tagged(h: Harness, doc: dict[str, Any] = MUST_FIT) -> None:
    await h.route(policy_changed(A, doc), pool=A)
    for r, tags in (("a", ["ind:it"]), ("b", ["ind:bank"]), ("c", ["ind:it", "ind:bank"])):
        await h.route(rep_changed(A, f"rep-{r}", tags=tags), pool=A)


async def test_an_update_the_holder_still_fits_keeps_it(h: Harness) -> None:
    await tagged(h, policy(follow_up={"within": "1h"}, **{k: v for k, v in MUST_FIT.items() if k == "strategies"}))
    first = await decide(h, industry="it")
    sent = await update(h, pool=A, industry="it", estimated_value=99.0)
    assert [s for s in sent if s.topic == h.topics["assignments"]] == [], "no new decision"
    entry = ledger(h, A)
    assert (entry["status"], entry["rep_id"], entry["decision"]["attempt"]) == ("open", first["rep_id"], 1)
    [row] = h.table("sla").values()
    assert row["lead"]["estimated_value"] == 99.0, "the timer row holds the new version for the next attempt"
    assert sla.timer_key(entry["sla_due"], A, "lead-1") in h.table("sla")
    assert updates(h, "kept") == 1


async def test_an_update_the_holder_no_longer_fits_is_decided_again_without_it(h: Harness) -> None:
    await tagged(h)
    first = await decide(h, industry="it")
    assert first["rep_id"] in ("rep-a", "rep-c")
    await update(h, pool=A, industry="bank")
    d = decisions(h)[-1]
    assert (d["attempt"], d["trigger"], d["previous_holders"]) == (2, "updated", [first["rep_id"]])
    assert d["rep_id"] in ("rep-b", "rep-c") and d["rep_id"] != first["rep_id"]
    assert any("no longer fits" in n for n in d["explanation"]["notes"])
    assert loads(h)[f"{A}|{first['rep_id']}"] == 0 and loads(h)[f"{A}|{d['rep_id']}"] == 1
    assert updates(h, "redecided") == 1


async def test_a_policy_may_let_the_holder_keep_any_update(h: Harness) -> None:
    await tagged(h, {**MUST_FIT, "updates": {"holder_must_fit": False}})
    first = await decide(h, industry="it")
    await update(h, pool=A, industry="bank")
    assert decisions(h) == [first] and updates(h, "kept") == 1


async def test_an_unassigned_lead_is_decided_again_on_update(h: Harness) -> None:
    first = await decide(h, pool="empty")
    assert first["reason"] == "empty_pool"
    await h.route(rep_changed("empty", "rep-e"), pool="empty")
    await update(h, pool="empty")
    d = decisions(h)[-1]
    assert (d["attempt"], d["rep_id"], d["trigger"]) == (2, "rep-e", "updated")


async def test_a_claimable_lead_stays_claimable_with_the_new_version(h: Harness) -> None:
    doc = policy(strategies={"default": {"selector": {"type": "claim_pool"}, "scorers": {"load": 1}}})
    await h.route(policy_changed(A, doc), pool=A)
    await h.route(rep_changed(A, "rep-a"), pool=A)
    first = await decide(h)
    assert first["reason"] == "sent_to_claim_pool"
    await update(h, pool=A, estimated_value=77.0)
    assert decisions(h) == [first]
    entry = ledger(h, A)
    assert entry["status"] == "claimable" and entry["lead"]["estimated_value"] == 77.0
    assert "contact" not in entry["lead"]
    assert updates(h, "stored") == 1


async def test_an_update_of_a_closed_lead_is_ignored(h: Harness) -> None:
    await pools(h)
    await decide(h)
    await h.deal(raw({"lead_id": "lead-1", "outcome": "lost", "amount": 0.0, "closed_at": NOW.isoformat()}), b"lead-1")
    await update(h, pool=B)
    assert len(decisions(h)) == 1 and ledger(h, A)["status"] == "lost"
    assert updates(h, "ignored") == 1 and h.table("lead-index")["lead-1"]["pool"] == A


# --- first sight and bad input ---------------------------------------------------------------------


async def test_an_update_for_an_unknown_lead_is_its_first_sight(h: Harness) -> None:
    await pools(h)
    await update(h, pool=B)
    [d] = decisions(h)
    assert (d["pool"], d["attempt"], d["trigger"]) == (B, 1, None)
    await h.lead(raw(lead(pool=A)), b"lead-1")
    assert decisions(h) == [d, d], "a later leads.new is a duplicate"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (raw(lead(created_at="yesterday")), "schema_violation"),
        (b"{not json", "invalid_json"),
        (raw(lead(attributes={"x": "y" * 2000})), "payload_too_large"),
    ],
)
async def test_an_invalid_update_is_dead_lettered_with_its_reason(h: Harness, value: bytes, reason: str) -> None:
    await h.feed("leads", h.settings.topic_leads_updated, home("lead-1"), value, b"lead-1")
    [dl] = h.sent("dlq")
    assert (dl.header("x-leadrelay-reason"), dl.value) == (reason, value)
    assert dl.header("x-leadrelay-source-topic") == h.settings.topic_leads_updated


async def test_an_update_off_its_partition_is_passed_on(h: Harness) -> None:
    other = (home("lead-1") + 1) % 4
    [out] = await h.feed("leads", h.settings.topic_leads_updated, other, raw(lead(pool=B)), key=b"crm-1")
    assert (out.topic, out.key, out.partition) == (h.topics["lead_events"], b"lead-1", home("lead-1"))
    assert out.json()["kind"] == "update" and out.json()["to_pool"] == B


async def test_a_waiting_lead_keeps_waiting_under_its_new_order_or_is_decided(h: Harness) -> None:
    await h.route(policy_changed(A, policy(waiting={"max_wait": "4h"})), pool=A)
    await h.route(rep_changed(A, "rep-a", capacity=1), pool=A)
    await decide(h, lead_id="lead-0")
    waiting = await decide(h, estimated_value=10.0)
    assert waiting["reason"] == "no_eligible_rep" and ledger(h, A)["status"] == "waiting"
    [before] = h.table("wait")
    max_wait_row = h.table("sla")[sla.timer_key(ledger(h, A)["sla_due"], A, "lead-1")]
    assert max_wait_row["kind"] == "max_wait"
    await update(h, pool=A, estimated_value=900.0)
    [after] = h.table("wait")
    assert after != before and after.endswith("|lead-1"), "a new place in line: the value changed"
    assert len(decisions(h)) == 1 and updates(h, "requeued") == 1
    assert h.table("sla")[sla.timer_key(ledger(h, A)["sla_due"], A, "lead-1")]["lead"]["estimated_value"] == 900.0
    await h.route(rep_changed(A, "rep-a", capacity=2), pool=A)  # capacity frees: the new version is assigned
    d = decisions(h)[-1]
    assert (d["rep_id"], d["attempt"], d["trigger"]) == ("rep-a", 2, "capacity_freed")
    assert h.table("wait") == {}


async def test_a_split_rule_keeps_an_updated_lead_in_its_pool(tmp_path: Any) -> None:
    """Territory rules may split a region between pools by weight; an update that still matches the rule
    resolves to the same pool (a hash of the lead id), so its holder keeps it."""
    rules = [{"name": "emea", "split": {A: 1, B: 1}, "match": {"region": ["EMEA"]}}]
    h = Harness(tmp_path, territory_rules=rules)
    try:
        await pools(h)
        for i in range(6):
            await h.lead(raw(lead(lead_id=f"lead-{i}", region="EMEA")), f"lead-{i}".encode())
        first = {i: decisions(h, f"lead-{i}")[-1] for i in range(6)}
        assert {d["pool"] for d in first.values()} == {A, B}, "both pools get leads"
        for i in range(6):
            await update(h, f"lead-{i}", region="EMEA", estimated_value=5.0 + i, industry="retail")
        assert all(decisions(h, f"lead-{i}")[-1] == first[i] for i in range(6)), "no lead moved"
        assert updates(h, "kept") == 6
        await update(h, "lead-0", region="APAC")  # the rule no longer matches: the default pool
        d = decisions(h, "lead-0")[-1]
        assert (d["pool"], d["attempt"], d["trigger"]) == (h.settings.default_pool, 2, "moved")
    finally:
        h.close()


async def test_a_lead_moved_to_a_full_pool_waits_there(h: Harness) -> None:
    await pools(h)
    await h.route(policy_changed(B, policy(waiting={})), pool=B)
    for r in "xyz":
        await h.route(rep_changed(B, f"rep-{r}", capacity=0), pool=B)
    first = await decide(h)
    await update(h, pool=B)
    d = decisions(h)[-1]
    assert (d["pool"], d["attempt"], d["reason"], d["trigger"]) == (B, 2, "no_eligible_rep", "moved")
    [queued] = h.table("wait")
    assert ledger(h, B)["status"] == "waiting" and queued.startswith(f"{B}|")
    assert loads(h)[f"{A}|{first['rep_id']}"] == 0
    await h.route(rep_changed(B, "rep-x", capacity=1), pool=B)  # capacity frees: attempt 3, still not rep-a
    d = decisions(h)[-1]
    assert (d["rep_id"], d["attempt"], d["trigger"], d["previous_holders"]) == (
        "rep-x",
        3,
        "capacity_freed",
        [first["rep_id"]],
    )
