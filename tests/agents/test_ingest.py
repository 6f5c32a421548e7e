"""ingest_leads, ingest_deals, ingest_roster: validation, re-keying, dead letters, roster fan-out."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tests.agents.conftest import MAX_PAYLOAD, POOL_EVENTS, Kit

pytestmark = pytest.mark.asyncio

EMAIL = b"jane.roe@example.com"
TS = 1_717_243_200.25  # 2024-06-01T12:00:00.25Z, the record's Kafka timestamp


def assert_dead_letter(
    kit: Kit,
    *,
    reason: str,
    value: bytes,
    key: bytes | None,
    source: str,
    offset: int,
    field: str | None = None,
    partition: int = 0,
) -> None:
    [dl] = kit.sent("dlq")
    assert dl.key == key
    assert dl.value == value
    assert dl.header("x-leadrelay-reason") == reason
    assert dl.header("x-leadrelay-source-topic") == source
    assert dl.header("x-leadrelay-source-partition") == str(partition)
    assert dl.header("x-leadrelay-source-offset") == str(offset)
    assert dl.header("x-leadrelay-error-message")
    if field is None:
        assert "x-leadrelay-error-field" not in dl.headers
    else:
        assert dl.header("x-leadrelay-error-field") == field


# ---------------------------------------------------------------------------------------------
# ingest_leads


@pytest.mark.parametrize(
    ("overrides", "pool"),
    [
        pytest.param({"pool": "sales-x", "region": "EMEA"}, "sales-x", id="explicit-pool-beats-rules"),
        pytest.param({"region": "EMEA"}, "emea", id="territory-rule"),
        pytest.param({"region": "APAC"}, "default", id="default-pool"),
    ],
)
async def test_lead_is_forwarded_to_its_pool_without_contact(kit: Kit, overrides: dict, pool: str) -> None:
    lead = kit.lead(lead_id="lead-42", company_size=250, **overrides)
    async with kit.agent("ingest_leads").test_context() as agent:
        event = await agent.put(value=kit.raw(lead), key=b"lead-42", timestamp=TS)
        assert agent.results == {0: True}

    assert (event.message.topic, event.message.partition, event.message.offset) == ("leads.new", 0, 0)
    # Keyed by lead onto the lead log, which fixes the lead's pool (match_deals) before it reaches route.
    [out] = kit.sent("lead_events")
    assert out.key == b"lead-42"
    assert kit.sent("dlq") == []
    assert kit.sent("pool_events") == []
    assert kit.sent("assignments") == []

    body = out.json()
    assert body["kind"] == "lead"
    assert body["pool"] == pool
    assert body["lead"]["lead_id"] == "lead-42"
    assert body["lead"]["company_size"] == 250
    assert body["lead"]["estimated_value"] == 1200.0
    assert body["origin"] == {"topic": "leads.new", "partition": 0, "offset": 0}
    assert datetime.fromisoformat(body["received_at"]) == datetime.fromtimestamp(TS, UTC)
    # Personal data is accepted on input but never forwarded.
    assert "contact" not in body["lead"]
    assert EMAIL not in out.value
    assert b"Jane Roe" not in out.value
    assert b"555" not in out.value


def _oversized(kit: Kit) -> bytes:
    data = kit.raw(kit.lead())
    return data + b" " * (MAX_PAYLOAD + 1 - len(data))  # valid JSON: only the size refuses it


BAD_LEADS = [
    pytest.param(lambda kit: b'{"lead_id": "lead-1", "created_at": ', "invalid_json", None, id="invalid-json"),
    pytest.param(lambda kit: b"[1, 2", "invalid_json", None, id="truncated-json"),
    pytest.param(
        lambda kit: kit.raw({k: v for k, v in kit.lead().items() if k != "lead_id"}),
        "schema_violation",
        "lead_id",
        id="missing-field",
    ),
    pytest.param(
        lambda kit: kit.raw(kit.lead(company_size="many")), "schema_violation", "company_size", id="wrong-type"
    ),
    pytest.param(lambda kit: kit.raw(kit.lead(lead_id="a|b")), "schema_violation", "lead_id", id="separator-in-id"),
    pytest.param(lambda kit: kit.raw(kit.lead(colour="red")), "schema_violation", "colour", id="unknown-field"),
    pytest.param(lambda kit: kit.raw([kit.lead()]), "schema_violation", None, id="not-an-object"),
    pytest.param(_oversized, "payload_too_large", None, id="oversized"),
]


@pytest.mark.parametrize(("make", "reason", "field"), BAD_LEADS)
async def test_bad_lead_is_dead_lettered_and_the_next_one_still_flows(kit: Kit, make, reason, field) -> None:
    bad = make(kit)
    async with kit.agent("ingest_leads").test_context() as agent:
        await agent.put(value=bad, key=b"lead-1")
        await agent.put(value=kit.raw(kit.lead(lead_id="lead-2")), key=b"lead-2")
        assert agent.results == {0: False, 1: True}

    assert_dead_letter(kit, reason=reason, value=bad, key=b"lead-1", source="leads.new", offset=0, field=field)
    [out] = kit.sent("lead_events")
    assert out.json()["lead"]["lead_id"] == "lead-2"
    assert out.json()["origin"]["offset"] == 1


async def test_bad_lead_counts_a_dead_letter_metric(kit: Kit) -> None:
    registry = kit.ctx.metrics.registry
    labels = {"source": "leads.new", "reason": "invalid_json"}
    before = registry.get_sample_value("leadrelay_dead_letters_total", labels) or 0.0
    async with kit.agent("ingest_leads").test_context() as agent:
        await agent.put(value=b"nope", key=b"lead-1")
    assert registry.get_sample_value("leadrelay_dead_letters_total", labels) == before + 1


async def test_dead_letter_headers_never_carry_contact_data(kit: Kit) -> None:
    bad = kit.raw(kit.lead(contact={"email": "x" * 250 + "@example.com", "name": "Jane Roe"}))
    async with kit.agent("ingest_leads").test_context() as agent:
        await agent.put(value=bad, key=b"lead-1")
    [dl] = kit.sent("dlq")
    assert dl.header("x-leadrelay-reason") == "schema_violation"
    assert dl.header("x-leadrelay-error-field") == "contact.email"
    for name, value in dl.headers.items():
        assert b"example.com" not in value, name
        assert b"Jane" not in value, name


async def test_lead_tombstone_is_dead_lettered_with_an_empty_value(kit: Kit) -> None:
    async with kit.agent("ingest_leads").test_context() as agent:
        await agent.put(value=None, key=b"lead-1")
        assert agent.results == {0: False}
    assert_dead_letter(kit, reason="invalid_json", value=b"", key=b"lead-1", source="leads.new", offset=0)


async def test_lead_of_exactly_max_payload_bytes_is_accepted(kit: Kit) -> None:
    data = kit.raw(kit.lead())
    exact = data + b" " * (MAX_PAYLOAD - len(data))
    assert len(exact) == MAX_PAYLOAD
    async with kit.agent("ingest_leads").test_context() as agent:
        await agent.put(value=exact, key=b"lead-1")
        assert agent.results == {0: True}
    assert len(kit.sent("lead_events")) == 1
    assert kit.sent("dlq") == []


async def test_dead_letter_offset_and_partition_are_the_records_own(kit: Kit) -> None:
    async with kit.agent("ingest_leads").test_context() as agent:
        for n in range(3):
            await agent.put(value=kit.raw(kit.lead(lead_id=f"lead-{n}")), key=f"lead-{n}".encode())
        await agent.put(value=b"{", key=b"lead-x", partition=2)
    assert_dead_letter(kit, reason="invalid_json", value=b"{", key=b"lead-x", source="leads.new", offset=3, partition=2)
    assert [s.json()["origin"]["offset"] for s in kit.sent("lead_events")] == [0, 1, 2]


# ---------------------------------------------------------------------------------------------
# ingest_deals


async def test_deal_naming_its_pool_still_goes_through_the_lead_index(kit: Kit) -> None:
    """It may have overtaken its lead's decision: the index (keyed by lead) is the one place that knows."""
    async with kit.agent("ingest_deals").test_context() as agent:
        deal = kit.deal(lead_id="lead-9", pool="emea", rep_id="rep-a")
        await agent.put(value=kit.raw(deal), key=b"lead-9", timestamp=TS)
        assert agent.results == {0: True}

    assert kit.sent("pool_events") == []
    [out] = kit.sent("lead_events")
    assert out.key == b"lead-9"
    body = out.json()
    assert body["kind"] == "deal"
    assert body["deal"]["lead_id"] == "lead-9"
    assert body["deal"]["pool"] == "emea"
    assert body["deal"]["rep_id"] == "rep-a"
    assert body["origin"] == {"topic": "deals.closed", "partition": 0, "offset": 0}
    assert datetime.fromisoformat(body["first_seen_at"]) == datetime.fromtimestamp(TS, UTC)


async def test_deal_without_pool_goes_to_the_lead_index_keyed_by_lead(kit: Kit) -> None:
    async with kit.agent("ingest_deals").test_context() as agent:
        await agent.put(value=kit.raw(kit.deal(lead_id="lead-9")), key=b"whatever", timestamp=TS)

    assert kit.sent("pool_events") == []
    [out] = kit.sent("lead_events")
    assert out.key == b"lead-9"  # keyed by the lead, not by the input record's key
    body = out.json()
    assert body["kind"] == "deal"
    assert body["deal"]["lead_id"] == "lead-9"
    assert body["origin"] == {"topic": "deals.closed", "partition": 0, "offset": 0}
    assert datetime.fromisoformat(body["first_seen_at"]) == datetime.fromtimestamp(TS, UTC)


async def test_bad_deal_is_dead_lettered_and_the_next_one_still_flows(kit: Kit) -> None:
    bad = kit.raw(kit.deal(outcome="maybe"))
    async with kit.agent("ingest_deals").test_context() as agent:
        await agent.put(value=bad, key=b"lead-1")
        await agent.put(value=kit.raw(kit.deal(pool="p")), key=b"lead-1")
        assert agent.results == {0: False, 1: True}
    assert_dead_letter(
        kit, reason="schema_violation", value=bad, key=b"lead-1", source="deals.closed", offset=0, field="outcome"
    )
    [ok] = kit.sent("lead_events")
    assert ok.json()["origin"]["offset"] == 1
    assert kit.sent("pool_events") == []


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"amount": -1}, "amount"),
        ({"closed_at": "yesterday"}, "closed_at"),
        ({"pool": "Not A Pool"}, "pool"),
        ({"rep_id": "a|b"}, "rep_id"),
        ({"note": "x"}, "note"),
    ],
)
async def test_deal_contract_violations_name_the_field(kit: Kit, overrides: dict, field: str) -> None:
    bad = kit.raw(kit.deal(**overrides))
    async with kit.agent("ingest_deals").test_context() as agent:
        await agent.put(value=bad, key=b"lead-1")
        assert agent.results == {0: False}
    assert_dead_letter(
        kit, reason="schema_violation", value=bad, key=b"lead-1", source="deals.closed", offset=0, field=field
    )
    assert kit.sent("lead_events") == []


# ---------------------------------------------------------------------------------------------
# ingest_roster


def _changes(kit: Kit) -> list[tuple[bytes | None, str, str, dict | None]]:
    out = []
    for s in kit.sent("pool_events"):
        body = s.json()
        assert body["kind"] == "rep"
        out.append((s.key, body["pool"], body["rep_id"], body["profile"]))
    return out


async def test_rep_in_two_pools_fans_out_one_change_per_pool(kit: Kit) -> None:
    async with kit.agent("ingest_roster").test_context() as agent:
        await agent.put(value=kit.raw(kit.rep("rep-a", ["b-pool", "a-pool"], capacity=7)), key=b"rep-a")
        assert agent.results == {0: True}

    changes = _changes(kit)
    assert [(k, p, r) for k, p, r, _ in changes] == [(b"a-pool", "a-pool", "rep-a"), (b"b-pool", "b-pool", "rep-a")]
    for *_, profile in changes:
        assert profile is not None
        assert profile["rep_id"] == "rep-a"
        assert profile["capacity"] == 7
    assert kit.table("rep_pools") == {"rep-a": ["a-pool", "b-pool"]}
    assert kit.sent("dlq") == []


async def test_rep_moving_pools_leaves_the_old_one_and_joins_the_new_one(kit: Kit) -> None:
    async with kit.agent("ingest_roster").test_context() as agent:
        await agent.put(value=kit.raw(kit.rep("rep-a", ["a"])), key=b"rep-a")
        kit.forget_sent()
        await agent.put(value=kit.raw(kit.rep("rep-a", ["b"], tier="senior")), key=b"rep-a")

    changes = _changes(kit)
    assert [(k, p, r) for k, p, r, _ in changes] == [(b"a", "a", "rep-a"), (b"b", "b", "rep-a")]
    assert changes[0][3] is None  # left pool a
    assert changes[1][3] is not None
    assert changes[1][3]["tier"] == "senior"
    assert kit.table("rep_pools") == {"rep-a": ["b"]}


async def test_rep_tombstone_removes_it_from_every_pool(kit: Kit) -> None:
    async with kit.agent("ingest_roster").test_context() as agent:
        await agent.put(value=kit.raw(kit.rep("rep-a", ["a", "b"])), key=b"rep-a")
        await agent.put(value=kit.raw(kit.rep("rep-b", ["a"])), key=b"rep-b")
        kit.forget_sent()
        await agent.put(value=None, key=b"rep-a")
        assert agent.results == {0: True, 1: True, 2: True}

    assert _changes(kit) == [(b"a", "a", "rep-a", None), (b"b", "b", "rep-a", None)]
    assert kit.table("rep_pools") == {"rep-b": ["a"]}
    assert kit.sent("dlq") == []


async def test_empty_value_is_a_tombstone_too(kit: Kit) -> None:
    async with kit.agent("ingest_roster").test_context() as agent:
        await agent.put(value=kit.raw(kit.rep("rep-a", ["a"])), key=b"rep-a")
        await agent.put(value=b"", key=b"rep-a")
    assert _changes(kit)[-1] == (b"a", "a", "rep-a", None)
    assert kit.table("rep_pools") == {}


async def test_tombstone_of_an_unknown_rep_sends_nothing(kit: Kit) -> None:
    async with kit.agent("ingest_roster").test_context() as agent:
        await agent.put(value=None, key=b"rep-z")
        assert agent.results == {0: True}
    assert kit.sent_total() == dict.fromkeys(kit.sent_total(), 0)


async def test_roster_key_must_be_the_rep_id(kit: Kit) -> None:
    record = kit.raw(kit.rep("rep-a", ["a"]))
    async with kit.agent("ingest_roster").test_context() as agent:
        await agent.put(value=record, key=b"rep-b")
        assert agent.results == {0: False}
    assert_dead_letter(
        kit, reason="key_mismatch", value=record, key=b"rep-b", source="reps.roster", offset=0, field="rep_id"
    )
    assert kit.sent("pool_events") == []
    assert kit.table("rep_pools") == {}


async def test_roster_tombstone_without_key_is_dead_lettered(kit: Kit) -> None:
    async with kit.agent("ingest_roster").test_context() as agent:
        await agent.put(value=None, key=None)
        assert agent.results == {0: False}
    assert_dead_letter(kit, reason="key_mismatch", value=b"", key=None, source="reps.roster", offset=0, field="key")


async def test_roster_output_is_what_route_understands(kit: Kit) -> None:
    """The roster's RepChanged bytes, fed to route, make the rep a pool member (wiring end to end)."""
    async with kit.agent("ingest_roster").test_context() as agent:
        await agent.put(value=kit.raw(kit.rep("rep-a", ["a"], capacity=3)), key=b"rep-a")
    [change] = kit.sent("pool_events")
    async with kit.agent("route").test_context() as route:
        await route.put(value=change.value, key=change.key)
        assert route.results == {0: True}
    assert kit.table("pools") == {
        "a": {"members": ["rep-a"], "cursor": None, "vtime": 0.0, "assigned": 0, "value": 0.0, "premium": 0}
    }
    assert kit.table("reps")["a|rep-a"]["capacity"] == 3
    assert json.loads(change.value)["profile"]["pools"] == ["a"]


async def test_split_capacity_reaches_each_pool(kit: Kit) -> None:
    record = kit.raw(kit.rep("rep-a", ["a", "b"], capacity=10, pool_capacity={"a": 4}))
    async with kit.agent("ingest_roster").test_context() as agent:
        await agent.put(value=record, key=b"rep-a")
    async with kit.agent("route").test_context() as route:
        for change in kit.sent("pool_events"):
            await route.put(value=change.value, key=change.key)
        assert route.results == {0: True, 1: True}
    assert (kit.table("reps")["a|rep-a"]["capacity"], kit.table("reps")["b|rep-a"]["capacity"]) == (4, 10)


async def test_lead_output_reaches_route_and_route_sees_the_pool_topic(kit: Kit) -> None:
    async with kit.agent("ingest_leads").test_context() as agent:
        await agent.put(value=kit.raw(kit.lead(pool="p")), key=b"lead-1")
    [lead_log] = kit.sent("lead_events")
    kit.forget_sent()
    async with kit.agent("match_deals").test_context() as match:
        await match.put(value=lead_log.value, key=lead_log.key)
    [arrived] = kit.sent("pool_events")
    assert arrived.key == b"p"
    kit.forget_sent()
    async with kit.agent("route").test_context() as route:
        event = await route.put(value=arrived.value, key=arrived.key)
    assert event.message.topic == POOL_EVENTS
    [decision] = kit.sent("assignments")
    assert decision.key == b"lead-1"
    assert decision.json()["reason"] == "empty_pool"  # nobody joined pool p
    assert EMAIL not in decision.value
    [indexed] = kit.sent("lead_events")
    assert indexed.json() == {
        "kind": "indexed",
        "lead_id": "lead-1",
        "pool": "p",
        "rep_id": None,
        "decision_id": decision.json()["decision_id"],
    }
