"""The input topics: leads.new and deals.closed (leads stage), reps.roster (roster stage): validation,
re-keying, dead letters, roster fan-out."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from tests.agents.conftest import MAX_PAYLOAD, Harness, deal, home, lead, partition_of, raw, rep

pytestmark = pytest.mark.asyncio

EMAIL = b"jane.roe@example.com"
TS = datetime.fromtimestamp(1_717_243_200.25, UTC)  # 2024-06-01T12:00:00.25Z, the record's Kafka timestamp


def assert_dead_letter(
    h: Harness,
    *,
    reason: str,
    value: bytes,
    key: bytes | None,
    source: str,
    offset: int,
    partition: int,
    field: str | None = None,
) -> None:
    [dl] = h.sent("dlq")
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
# leads.new


@pytest.mark.parametrize(
    ("overrides", "pool"),
    [
        pytest.param({"pool": "sales-x", "region": "EMEA"}, "sales-x", id="explicit-pool-beats-rules"),
        pytest.param({"region": "EMEA"}, "emea", id="territory-rule"),
        pytest.param({"region": "APAC"}, "default", id="default-pool"),
    ],
)
async def test_lead_is_forwarded_to_its_pool_without_contact(h: Harness, overrides: dict, pool: str) -> None:
    p = home("lead-42")
    record = raw(lead(lead_id="lead-42", company_size=250, **overrides))
    await h.feed("leads", "leads.new", p, record, key=b"lead-42", at=TS)

    # On its own partition the lead index fixes the pool at once: straight to the pool log, keyed by pool.
    [out] = h.sent("pool_events")
    assert out.key == pool.encode()
    assert h.sent_total() == {"assignments": 0, "dlq": 0, "pool_events": 1, "lead_events": 0}

    body = out.json()
    assert body["kind"] == "lead"
    assert body["pool"] == pool
    assert body["lead"]["lead_id"] == "lead-42"
    assert body["lead"]["company_size"] == 250
    assert body["lead"]["estimated_value"] == 1200.0
    assert body["origin"] == {"topic": "leads.new", "partition": p, "offset": 0}
    assert datetime.fromisoformat(body["received_at"]) == TS
    # Personal data is accepted on input but never forwarded.
    assert "contact" not in body["lead"]
    assert out.value is not None
    assert EMAIL not in out.value
    assert b"Jane Roe" not in out.value
    assert b"555" not in out.value
    assert h.table("lead-index")["lead-42"]["pool"] == pool


def _oversized() -> bytes:
    data = raw(lead())
    return data + b" " * (MAX_PAYLOAD + 1 - len(data))  # valid JSON: only the size refuses it


BAD_LEADS = [
    pytest.param(lambda: b'{"lead_id": "lead-1", "created_at": ', "invalid_json", None, id="invalid-json"),
    pytest.param(lambda: b"[1, 2", "invalid_json", None, id="truncated-json"),
    pytest.param(
        lambda: raw({k: v for k, v in lead().items() if k != "lead_id"}),
        "schema_violation",
        "lead_id",
        id="missing-field",
    ),
    pytest.param(lambda: raw(lead(company_size="many")), "schema_violation", "company_size", id="wrong-type"),
    pytest.param(lambda: raw(lead(lead_id="a|b")), "schema_violation", "lead_id", id="separator-in-id"),
    pytest.param(lambda: raw(lead(colour="red")), "schema_violation", "colour", id="unknown-field"),
    pytest.param(lambda: raw([lead()]), "schema_violation", None, id="not-an-object"),
    pytest.param(_oversized, "payload_too_large", None, id="oversized"),
]


@pytest.mark.parametrize(("make", "reason", "field"), BAD_LEADS)
async def test_bad_lead_is_dead_lettered_and_the_next_one_still_flows(
    h: Harness, make: Callable[[], bytes], reason: str, field: str | None
) -> None:
    bad = make()
    p = home("lead-2")
    await h.feed("leads", "leads.new", p, bad, key=b"lead-1")
    await h.feed("leads", "leads.new", p, raw(lead(lead_id="lead-2")), key=b"lead-2")

    assert_dead_letter(
        h, reason=reason, value=bad, key=b"lead-1", source="leads.new", offset=0, partition=p, field=field
    )
    [out] = h.sent("pool_events")
    assert out.json()["lead"]["lead_id"] == "lead-2"
    assert out.json()["origin"]["offset"] == 1
    assert set(h.table("lead-index")) == {"lead-2"}


async def test_bad_lead_counts_a_dead_letter_metric(h: Harness) -> None:
    labels = {"source": "leads.new", "reason": "invalid_json"}
    assert not h.registry.get_sample_value("leadrelay_dead_letters_total", labels)
    await h.feed("leads", "leads.new", 0, b"nope", key=b"lead-1")
    assert h.registry.get_sample_value("leadrelay_dead_letters_total", labels) == 1


async def test_dead_letter_headers_never_carry_contact_data(h: Harness) -> None:
    bad = raw(lead(contact={"email": "x" * 250 + "@example.com", "name": "Jane Roe"}))
    await h.feed("leads", "leads.new", home("lead-1"), bad, key=b"lead-1")
    [dl] = h.sent("dlq")
    assert dl.header("x-leadrelay-reason") == "schema_violation"
    assert dl.header("x-leadrelay-error-field") == "contact.email"
    for name, value in dl.headers.items():
        assert b"example.com" not in value, name
        assert b"Jane" not in value, name


async def test_lead_tombstone_is_dead_lettered_with_an_empty_value(h: Harness) -> None:
    p = home("lead-1")
    await h.feed("leads", "leads.new", p, None, key=b"lead-1")
    assert_dead_letter(h, reason="invalid_json", value=b"", key=b"lead-1", source="leads.new", offset=0, partition=p)
    assert h.rows("leads", p) == {}


async def test_lead_of_exactly_max_payload_bytes_is_accepted(h: Harness) -> None:
    data = raw(lead())
    exact = data + b" " * (MAX_PAYLOAD - len(data))
    assert len(exact) == MAX_PAYLOAD
    await h.feed("leads", "leads.new", home("lead-1"), exact, key=b"lead-1")
    assert len(h.sent("pool_events")) == 1
    assert h.sent("dlq") == []


async def test_dead_letter_offset_and_partition_are_the_records_own(h: Harness) -> None:
    await h.feed("leads", "leads.new", 1, raw(lead(lead_id="lead-x")), key=b"lead-x")
    for n in range(3):
        await h.feed("leads", "leads.new", 2, raw(lead(lead_id=f"lead-{n}")), key=f"lead-{n}".encode())
    await h.feed("leads", "leads.new", 2, b"{", key=b"lead-x")
    assert_dead_letter(h, reason="invalid_json", value=b"{", key=b"lead-x", source="leads.new", offset=3, partition=2)
    # whether handled on partition 2 or passed on to their own, the leads keep their origin
    origins = [s.json()["origin"] for s in h.sent("pool_events", "lead_events")]
    assert origins == [
        {"topic": "leads.new", "partition": 1, "offset": 0},
        *({"topic": "leads.new", "partition": 2, "offset": n} for n in range(3)),
    ]


# ---------------------------------------------------------------------------------------------
# deals.closed


async def test_deal_naming_its_pool_still_goes_through_the_lead_index(h: Harness) -> None:
    """It may have overtaken its lead's decision: the index (keyed by lead) is the one place that knows."""
    p = home("lead-9")
    record = raw(deal(lead_id="lead-9", pool="emea", rep_id="rep-a"))
    await h.feed("leads", "deals.closed", p, record, key=b"lead-9", at=TS)

    assert h.sent_total() == dict.fromkeys(h.topics, 0)  # no lead yet: it waits, whatever pool it names
    [parked] = h.table("parked-deals")["lead-9"]
    assert parked["deal"]["lead_id"] == "lead-9"
    assert parked["deal"]["pool"] == "emea"
    assert parked["deal"]["rep_id"] == "rep-a"
    assert parked["origin"] == {"topic": "deals.closed", "partition": p, "offset": 0}


async def test_deal_off_its_partition_goes_to_the_lead_index_keyed_by_lead(h: Harness) -> None:
    p = home("lead-9")
    other = (p + 1) % h.settings.partitions
    await h.feed("leads", "deals.closed", other, raw(deal(lead_id="lead-9")), key=b"whatever", at=TS)

    assert h.sent("pool_events") == []
    [out] = h.sent("lead_events")
    assert (out.key, out.partition) == (b"lead-9", p)  # keyed by the lead, not by the input record's key
    body = out.json()
    assert body["kind"] == "deal"
    assert body["deal"]["lead_id"] == "lead-9"
    assert body["origin"] == {"topic": "deals.closed", "partition": other, "offset": 0}
    assert datetime.fromisoformat(body["first_seen_at"]) == TS
    assert h.rows("leads", other) == {}


async def test_bad_deal_is_dead_lettered_and_the_next_one_still_flows(h: Harness) -> None:
    p = home("lead-1")
    await h.feed("leads", "leads.new", p, raw(lead(pool="p")), key=b"lead-1")
    h.forget()
    bad = raw(deal(outcome="maybe"))
    await h.feed("leads", "deals.closed", p, bad, key=b"lead-1")
    await h.feed("leads", "deals.closed", p, raw(deal()), key=b"lead-1")
    assert_dead_letter(
        h,
        reason="schema_violation",
        value=bad,
        key=b"lead-1",
        source="deals.closed",
        offset=0,
        partition=p,
        field="outcome",
    )
    [ok] = h.sent("pool_events")
    assert (ok.key, ok.json()["kind"], ok.json()["origin"]["offset"]) == (b"p", "deal", 1)


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
async def test_deal_contract_violations_name_the_field(h: Harness, overrides: dict, field: str) -> None:
    bad = raw(deal(**overrides))
    p = home("lead-1")
    await h.feed("leads", "deals.closed", p, bad, key=b"lead-1")
    assert_dead_letter(
        h,
        reason="schema_violation",
        value=bad,
        key=b"lead-1",
        source="deals.closed",
        offset=0,
        partition=p,
        field=field,
    )
    assert h.sent("lead_events", "pool_events") == []
    assert h.rows("leads", p) == {}


# ---------------------------------------------------------------------------------------------
# reps.roster


def _changes(h: Harness) -> list[tuple[bytes | None, str, str, dict | None]]:
    out = []
    for s in h.sent("pool_events"):
        body = s.json()
        assert body["kind"] == "rep"
        out.append((s.key, body["pool"], body["rep_id"], body["profile"]))
    return out


def rep_pools(h: Harness, rep_id: str = "rep-a") -> dict:
    return h.rows("roster", partition_of(rep_id.encode()))


async def test_rep_in_two_pools_fans_out_one_change_per_pool(h: Harness) -> None:
    await h.roster(raw(rep("rep-a", ["b-pool", "a-pool"], capacity=7)), b"rep-a")

    changes = _changes(h)
    assert [(k, p, r) for k, p, r, _ in changes] == [(b"a-pool", "a-pool", "rep-a"), (b"b-pool", "b-pool", "rep-a")]
    for *_, profile in changes:
        assert profile is not None
        assert profile["rep_id"] == "rep-a"
        assert profile["capacity"] == 7
    assert rep_pools(h) == {"rep-a": ["a-pool", "b-pool"]}
    assert h.sent("dlq") == []


async def test_rep_moving_pools_leaves_the_old_one_and_joins_the_new_one(h: Harness) -> None:
    await h.roster(raw(rep("rep-a", ["a"])), b"rep-a")
    h.forget()
    await h.roster(raw(rep("rep-a", ["b"], tier="senior")), b"rep-a")

    changes = _changes(h)
    assert [(k, p, r) for k, p, r, _ in changes] == [(b"a", "a", "rep-a"), (b"b", "b", "rep-a")]
    assert changes[0][3] is None  # left pool a
    assert changes[1][3] is not None
    assert changes[1][3]["tier"] == "senior"
    assert rep_pools(h) == {"rep-a": ["b"]}


async def test_rep_tombstone_removes_it_from_every_pool(h: Harness) -> None:
    await h.roster(raw(rep("rep-a", ["a", "b"])), b"rep-a")
    await h.roster(raw(rep("rep-b", ["a"])), b"rep-b")
    h.forget()
    await h.roster(None, b"rep-a")

    assert _changes(h) == [(b"a", "a", "rep-a", None), (b"b", "b", "rep-a", None)]
    assert "rep-a" not in rep_pools(h, "rep-a")
    assert rep_pools(h, "rep-b")["rep-b"] == ["a"]
    assert h.sent("dlq") == []


async def test_empty_value_is_a_tombstone_too(h: Harness) -> None:
    await h.roster(raw(rep("rep-a", ["a"])), b"rep-a")
    await h.roster(b"", b"rep-a")
    assert _changes(h)[-1] == (b"a", "a", "rep-a", None)
    assert rep_pools(h) == {}


async def test_tombstone_of_an_unknown_rep_sends_nothing(h: Harness) -> None:
    await h.roster(None, b"rep-z")
    assert h.nothing_sent()


async def test_roster_key_must_be_the_rep_id(h: Harness) -> None:
    record = raw(rep("rep-a", ["a"]))
    await h.roster(record, b"rep-b")
    assert_dead_letter(
        h,
        reason="key_mismatch",
        value=record,
        key=b"rep-b",
        source="reps.roster",
        offset=0,
        partition=partition_of(b"rep-b"),
        field="rep_id",
    )
    assert h.sent("pool_events") == []
    assert rep_pools(h, "rep-a") == rep_pools(h, "rep-b") == {}


async def test_roster_tombstone_without_key_is_dead_lettered(h: Harness) -> None:
    await h.roster(None, None)
    assert_dead_letter(
        h, reason="key_mismatch", value=b"", key=None, source="reps.roster", offset=0, partition=0, field="key"
    )


async def test_roster_output_is_what_route_understands(h: Harness) -> None:
    """The roster's RepChanged bytes, fed to route, make the rep a pool member (wiring end to end)."""
    [change] = await h.roster(raw(rep("rep-a", ["a"], capacity=3)), b"rep-a")
    await h.deliver([change])
    assert h.sent("dlq") == []
    assert h.table("pools") == {
        "a": {"members": ["rep-a"], "cursor": None, "vtime": 0.0, "assigned": 0, "value": 0.0, "premium": 0}
    }
    assert h.table("reps")["a|rep-a"]["capacity"] == 3
    assert change.value is not None
    assert json.loads(change.value)["profile"]["pools"] == ["a"]


async def test_split_capacity_reaches_each_pool(h: Harness) -> None:
    sent = await h.roster(raw(rep("rep-a", ["a", "b"], capacity=10, pool_capacity={"a": 4})), b"rep-a")
    await h.deliver(sent)
    assert h.sent("dlq") == []
    assert (h.table("reps")["a|rep-a"]["capacity"], h.table("reps")["b|rep-a"]["capacity"]) == (4, 10)


async def test_lead_output_reaches_route_and_nothing_comes_back_to_the_lead_log(h: Harness) -> None:
    sent = await h.lead(raw(lead(pool="p")), b"lead-1")
    arrived, decision = sent
    assert (arrived.topic, arrived.key) == (h.topics["pool_events"], b"p")
    assert (decision.topic, decision.key) == (h.settings.topic_assignments, b"lead-1")
    assert decision.json()["reason"] == "empty_pool"  # nobody joined pool p
    assert decision.value is not None
    assert EMAIL not in decision.value
    # The index was pinned when the lead arrived; route tells the lead log nothing (no LeadIndexed).
    assert h.sent("lead_events") == []
    entry = h.table("lead-index")["lead-1"]
    assert (entry["pool"], entry["rep_id"], entry["decision_id"]) == ("p", None, None)
