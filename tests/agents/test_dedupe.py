"""Duplicates through the stages: the leads stage turns the contact into keyed hashes, route sends a lead
whose key an open lead of the pool holds to that lead's holder (trigger duplicate_of, no load), within the
policy's horizon; the contact itself reaches no table and no internal topic."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agents import route
from routing import dedupe
from schemas.events import Contact
from tests.agents.conftest import NOW, Harness, deal, home, lead, policy, policy_changed, raw, rep_changed, rep_left

pytestmark = pytest.mark.asyncio
POOL = "p"
SECRET = "a-test-secret-of-32-characters!!"
JANE = {"name": "Jane Roe", "email": "Jane.Roe@Acme.example", "phone": "+1 (555) 010-0100"}
RAW_CONTACT = ("Jane", "Roe", "jane.roe", "acme.example", "555", "0100")  # none of it anywhere


@pytest.fixture
def hd(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path, dedupe_secret=SECRET)
    yield harness
    harness.close()


async def dedupe_pool(h: Harness, horizon: str = "30d", reps: str = "ab") -> None:
    """Reps with room for one lead each: a duplicate that added load would overfill its holder."""
    await h.route(policy_changed(POOL, policy(dedupe={"keys": ["email", "phone"], "horizon": horizon})))
    for r in reps:
        await h.route(rep_changed(POOL, f"rep-{r}", capacity=1))


async def decide(h: Harness, lead_id: str, contact: Any = None, at: datetime = NOW) -> dict[str, Any]:
    await h.lead(raw(lead(lead_id=lead_id, pool=POOL, contact=contact or JANE)), lead_id.encode(), at=at)
    return h.decisions(lead_id)[-1]


def counted(h: Harness, key: str) -> float:
    value = h.registry.get_sample_value("leadrelay_contact_duplicates_total", {"pool": POOL, "key": key})
    return value or 0.0


async def test_a_duplicate_goes_to_the_holder_and_adds_no_load(hd: Harness) -> None:
    await dedupe_pool(hd)
    first = await decide(hd, "lead-1")
    holder = first["rep_id"]
    assert first["trigger"] is None and holder is not None
    later = NOW + timedelta(days=3)
    # Another spelling of the same e-mail and phone: the same keys.
    again = await decide(hd, "lead-2", {"email": " jane.roe@acme.EXAMPLE ", "phone": "+1 555 010 0100"}, later)
    assert (again["rep_id"], again["reason"], again["trigger"], again["attempt"]) == (
        holder,
        "assigned",
        "duplicate_of",
        1,
    )
    assert datetime.fromisoformat(again["decided_at"]) == later, "the log time, not the wall clock"
    summary = again["explanation"]["summary"]
    assert "lead-1" in summary and "email" in summary
    assert hd.entry(POOL, "lead-2")["duplicate_of"] == {"lead_id": "lead-1", "kind": "email"}
    assert hd.open_leads(POOL)[holder] == 1, "the holder was full: the duplicate joined its lead, it adds nothing"
    assert counted(hd, "email") == 1
    other = await decide(hd, "lead-3", {"email": "someone@else.example"})
    assert other["rep_id"] not in (None, holder) and other["trigger"] is None
    # Hashes only: the row keys and the explanation never carry the key or the contact.
    keys = hd.table("dedupe")
    assert sorted(k.split("|")[1] for k in keys) == ["email", "email", "phone"]
    for k in keys:
        assert k.split("|")[2] not in summary


async def test_a_re_sent_duplicate_gets_its_decision_again(hd: Harness) -> None:
    await dedupe_pool(hd)
    await decide(hd, "lead-1")
    d = await decide(hd, "lead-2")
    assert await decide(hd, "lead-2") == d
    assert counted(hd, "email") == 1


async def test_after_the_horizon_the_lead_is_decided_on_its_own(hd: Harness) -> None:
    await dedupe_pool(hd, horizon="2d")
    holder = (await decide(hd, "lead-1"))["rep_id"]
    late = await decide(hd, "lead-2", at=NOW + timedelta(days=2, seconds=1))
    assert late["trigger"] is None and late["rep_id"] not in (None, holder)
    assert hd.entry(POOL, "lead-2").get("duplicate_of") is None
    # lead-2 took over the rows: the next duplicate joins it
    third = await decide(hd, "lead-3", at=NOW + timedelta(days=3))
    assert (third["rep_id"], third["trigger"]) == (late["rep_id"], "duplicate_of")
    assert "lead-2" in third["explanation"]["summary"]


async def test_after_the_original_closed_the_lead_is_decided_on_its_own(hd: Harness) -> None:
    await dedupe_pool(hd)
    await decide(hd, "lead-1")
    at = NOW + timedelta(hours=1)
    await hd.deal(raw(deal(lead_id="lead-1", closed_at=at.isoformat())), b"lead-1", at=at)
    d = await decide(hd, "lead-2", at=at + timedelta(minutes=1))
    assert d["trigger"] is None and d["rep_id"] is not None
    assert counted(hd, "email") == 0


async def test_a_holder_that_left_the_pool_gets_no_duplicates(hd: Harness) -> None:
    """The original follows the policy's on_leave: reassigned (the default), its next duplicate goes to the
    new holder; kept by the departed rep, the next lead of the contact is decided on its own."""
    await dedupe_pool(hd, reps="abc")
    holder = (await decide(hd, "lead-1"))["rep_id"]
    await hd.route(rep_left(POOL, holder))
    successor = hd.decisions("lead-1")[-1]["rep_id"]
    assert successor not in (None, holder)
    d = await decide(hd, "lead-2")
    assert (d["rep_id"], d["trigger"]) == (successor, "duplicate_of")
    keep = {"keys": ["email"], "horizon": "30d"}
    await hd.route(policy_changed(POOL, policy(version=3, dedupe=keep, availability={"on_leave": "keep"})))
    await hd.route(rep_left(POOL, successor))
    d = await decide(hd, "lead-3")
    assert d["trigger"] is None and d["rep_id"] not in (None, holder, successor)


async def test_a_departed_holders_duplicate_is_handed_back_as_a_lead_of_its_own(hd: Harness) -> None:
    await dedupe_pool(hd, reps="abc")
    holder = (await decide(hd, "lead-1"))["rep_id"]
    await decide(hd, "lead-2")
    assert hd.open_leads(POOL)[holder] == 1
    await hd.route(rep_left(POOL, holder), at=NOW + timedelta(minutes=5))
    handed = {lid: hd.decisions(lid)[-1] for lid in ("lead-1", "lead-2")}
    assert all((d["attempt"], d["trigger"]) == (2, "rep_left") for d in handed.values())
    assert hd.entry(POOL, "lead-2").get("duplicate_of") is None, "now a lead of its own"
    loads = hd.open_leads(POOL)
    assert loads[holder] == 0, "one release: the original's; the duplicate never counted"
    assert sum(loads.values()) == 2 and all(loads[d["rep_id"]] == 1 for d in handed.values())


async def test_an_away_holder_gets_no_duplicates(hd: Harness) -> None:
    await dedupe_pool(hd)
    holder = (await decide(hd, "lead-1"))["rep_id"]
    await hd.route(rep_changed(POOL, holder, capacity=1, availability="away"))
    d = await decide(hd, "lead-2")
    assert d["trigger"] is None and d["rep_id"] != holder


async def test_a_deal_on_a_duplicate_credits_the_rep_and_releases_nothing(hd: Harness) -> None:
    await dedupe_pool(hd)
    holder = (await decide(hd, "lead-1"))["rep_id"]
    await decide(hd, "lead-2")
    at = NOW + timedelta(hours=1)
    await hd.deal(raw(deal(lead_id="lead-2", closed_at=at.isoformat())), b"lead-2", at=at)
    assert hd.entry(POOL, "lead-2")["status"] == "won"
    assert hd.open_leads(POOL)[holder] == 1, "the original is still open"
    assert hd.table("performance").get(f"{POOL}|{holder}"), "the won deal counts for the holder"
    value = raw({"lead_id": "lead-1", "kind": "disqualified", "occurred_at": at.isoformat()})
    await hd.deliver(await hd.feed("leads", hd.settings.topic_lead_activity, home("lead-1"), value, b"lead-1"))
    assert hd.open_leads(POOL)[holder] == 0


async def test_no_duplicates_without_the_policy_section(hd: Harness) -> None:
    await hd.route(rep_changed(POOL, "rep-a"), rep_changed(POOL, "rep-b"))
    await decide(hd, "lead-1")
    d = await decide(hd, "lead-2")
    assert d["trigger"] is None and hd.table("dedupe") == {}


async def test_without_a_secret_leads_carry_no_keys_and_one_warning_is_logged(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    route.unkeyed.cache_clear()
    await dedupe_pool(h)
    with caplog.at_level(logging.WARNING, logger="leadrelay.route"):
        await decide(h, "lead-1")
        d = await decide(h, "lead-2")
    assert d["trigger"] is None and h.table("dedupe") == {}
    assert [r.getMessage() for r in caplog.records].count(
        f"pool {POOL} has a dedupe policy but dedupe_secret is unset: no duplicates are found"
    ) == 1
    assert all(b"dedupe_keys" not in (s.value or b"") for s in h.sent("pool_events")), "what older workers read"


async def test_housekeeping_removes_keys_past_the_horizon(hd: Harness) -> None:
    await dedupe_pool(hd, horizon="1d")
    await decide(hd, "lead-1")
    partition = hd.pool_partition(POOL)
    await hd.housekeep("route", partition, NOW + timedelta(hours=23))
    assert len(hd.table("dedupe")) == 2
    await hd.housekeep("route", partition, NOW + timedelta(days=1, seconds=1))
    assert hd.table("dedupe") == {}


async def test_the_contact_reaches_no_table_and_no_internal_topic(hd: Harness) -> None:
    await dedupe_pool(hd)
    await decide(hd, "lead-1")
    await decide(hd, "lead-2")
    stored = str(hd.snapshot())
    sent = b" ".join(s.value or b"" for s in hd.log).decode()
    for part in RAW_CONTACT:
        assert part.lower() not in stored.lower() and part.lower() not in sent.lower(), part
    arrived = [s.json() for s in hd.sent("pool_events") if s.json().get("kind") == "lead"]
    expected = dedupe.keys(Contact.model_validate(JANE), SECRET.encode())
    assert arrived and all(a["dedupe_keys"] == expected for a in arrived)


async def test_an_update_that_is_a_leads_first_sight_dedupes_like_a_new_lead(hd: Harness) -> None:
    """An update of a lead never seen is its first sight (an upsert): its contact's keys come along."""
    await dedupe_pool(hd)
    first = await decide(hd, "lead-1")
    value = raw(lead(lead_id="lead-2", pool=POOL, contact=JANE))
    sent = await hd.feed("leads", hd.settings.topic_leads_updated, home("lead-2"), value, b"lead-2")
    await hd.deliver(sent)
    again = hd.decisions("lead-2")[-1]
    assert (again["rep_id"], again["trigger"]) == (first["rep_id"], "duplicate_of")
    assert not any(part.encode() in (s.value or b"") for s in hd.log for part in RAW_CONTACT)
