"""streams.codecs + streams.errors: untrusted bytes -> models or classified InvalidInput; metrics label limiter."""

from __future__ import annotations

import json

import pytest

from schemas.events import DealClosed, LeadCreated, RepUpdated
from schemas.internal import POOL_EVENT, LedgerExpired
from streams.codecs import dump, parse, parse_internal
from streams.errors import (
    InvalidInput,
    InvalidJson,
    KeyMismatch,
    LeadRelayError,
    PayloadTooLarge,
    SchemaViolation,
    UnknownLead,
)
from streams.web.metrics import OTHER, LabelLimiter

EMAIL = "jane.doe@example.com"
LIMIT = 65536
VALID = {"lead_id": "L-1", "created_at": "2024-06-01T00:00:00Z", "estimated_value": 10.0}


def _raw(**changes) -> bytes:
    return json.dumps({**VALID, **changes}).encode()


def test_valid_bytes_parse():
    lead = parse(LeadCreated, _raw(contact={"email": EMAIL}), max_bytes=LIMIT)
    assert lead.lead_id == "L-1"
    assert lead.contact.email == EMAIL
    assert parse(LeadCreated, dump(lead), max_bytes=LIMIT) == lead.model_copy(update={"contact": None})
    assert EMAIL.encode() not in dump(lead)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"{",
        b"",
        b"\xff\xfe\x00",
        b'{"lead_id": "L-1",}',
        b"{'lead_id': 'L-1'}",
        b'{"lead_id": "L-1"} trailing',
    ],
)
def test_non_json_is_invalid_json(raw):
    with pytest.raises(InvalidJson) as info:
        parse(LeadCreated, raw, max_bytes=LIMIT)
    assert info.value.reason == "invalid_json"
    assert info.value.field is None


def test_none_is_invalid_json():
    with pytest.raises(InvalidJson, match="tombstone"):
        parse(LeadCreated, None, max_bytes=LIMIT)


@pytest.mark.parametrize(
    ("model", "raw", "field"),
    [
        (LeadCreated, _raw(estimated_value="a lot"), "estimated_value"),
        (LeadCreated, _raw(estimated_value=-5), "estimated_value"),
        (LeadCreated, _raw(company_size=[1]), "company_size"),
        (LeadCreated, _raw(country="Germany"), "country"),
        (LeadCreated, _raw(lead_id=None), "lead_id"),
        (LeadCreated, json.dumps({"created_at": "2024-06-01T00:00:00Z"}).encode(), "lead_id"),
        (LeadCreated, _raw(contact={"email": 5}), "contact.email"),
        (LeadCreated, _raw(unexpected=1), "unexpected"),
        (
            DealClosed,
            b'{"lead_id": "L", "outcome": "won", "closed_at": "2024-01-01T00:00:00Z", "amount": "12k"}',
            "amount",
        ),
        (RepUpdated, b'{"rep_id": "r", "pools": ["p"], "tags": {"x": 9}}', "tags.x"),
    ],
)
def test_contract_violation_names_the_field(model, raw, field):
    with pytest.raises(SchemaViolation) as info:
        parse(model, raw, max_bytes=LIMIT)
    assert info.value.field == field
    assert info.value.reason == "schema_violation"
    assert str(info.value).startswith(f"{field}: ")


def test_violation_inside_attributes_names_the_mapping_not_the_senders_key():
    """Attribute keys are chosen by the sender and may be personal data: the path stops at "attributes"."""
    with pytest.raises(SchemaViolation) as info:
        parse(LeadCreated, _raw(attributes={"jane.doe@example.com": {"deep": 1}}), max_bytes=LIMIT)
    assert info.value.field == "attributes"
    assert str(info.value).startswith("attributes: ")
    assert "jane.doe" not in str(info.value)


def test_violation_inside_contact_names_known_fields_only():
    with pytest.raises(SchemaViolation) as info:
        parse(LeadCreated, _raw(contact={"email": 5}), max_bytes=LIMIT)
    assert info.value.field == "contact.email"
    with pytest.raises(SchemaViolation) as info:
        parse(LeadCreated, _raw(contact={"jane.doe@example.com": "x"}), max_bytes=LIMIT)
    assert info.value.field == "contact"


@pytest.mark.parametrize("raw", [b"[]", b"42", b'"a string"', b"null", b"true"])
def test_wrong_top_level_type_is_a_schema_violation(raw):
    with pytest.raises(SchemaViolation) as info:
        parse(LeadCreated, raw, max_bytes=LIMIT)
    assert info.value.field is None
    assert str(info.value).startswith("record: ")


def test_violation_counts_further_errors():
    with pytest.raises(SchemaViolation, match=r"\(\+2 more\)"):
        parse(LeadCreated, b'{"lead_id": "", "created_at": "x", "country": "x"}', max_bytes=LIMIT)


def test_oversized_payload_is_rejected_before_parsing():
    raw = b"x" * 1001  # not even JSON: size is checked first
    with pytest.raises(PayloadTooLarge, match="1001 bytes > limit 1000") as info:
        parse(LeadCreated, raw, max_bytes=1000)
    assert info.value.reason == "payload_too_large"


def test_payload_exactly_at_the_limit_is_parsed():
    raw = _raw()
    assert parse(LeadCreated, raw, max_bytes=len(raw)).lead_id == "L-1"
    with pytest.raises(PayloadTooLarge):
        parse(LeadCreated, raw, max_bytes=len(raw) - 1)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 10_000 + b"]" * 10_000,
        b'{"lead_id": "L", "created_at": "2024-01-01T00:00:00Z", "attributes": {"a": '
        + b"[" * 10_000
        + b"]" * 10_000
        + b"}}",
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b"[" * 100_000,
    ],
)
def test_deeply_nested_json_is_invalid_input_not_a_crash(raw):
    with pytest.raises(InvalidInput) as info:
        parse(LeadCreated, raw, max_bytes=1 << 20)
    assert isinstance(info.value, InvalidJson | SchemaViolation)


@pytest.mark.parametrize(
    "raw",
    [
        _raw(contact={"email": EMAIL}, estimated_value="oops"),
        _raw(contact={"email": EMAIL}, lead_id=""),
        _raw(contact={"email": EMAIL + "x" * 300}),
        _raw(contact={"email": [EMAIL]}),
        _raw(contact={"email": {"address": EMAIL}}),
        _raw(contact=EMAIL),
        _raw(contact={"email": EMAIL, "name": 7}),
        _raw(contact={"email": EMAIL}, country=EMAIL),
        _raw(contact={"email": EMAIL}, pool=EMAIL),
        json.dumps({"contact": {"email": EMAIL}}).encode(),
        b'{"contact": {"email": "' + EMAIL.encode() + b'"',
        b'{"lead_id": "L-1", "contact": {"email": "' + EMAIL.encode() + b'"}, oops}',
    ],
)
def test_errors_never_contain_the_contact_email(raw):
    with pytest.raises(InvalidInput) as info:
        parse(LeadCreated, raw, max_bytes=LIMIT)
    for text in (str(info.value), repr(info.value), str(info.value.field), str(info.value.args)):
        assert EMAIL not in text
        assert "jane.doe" not in text
    assert info.value.__cause__ is None  # `from None`: pydantic's error (which echoes input) is not chained
    assert info.value.__suppress_context__


def test_error_hierarchy_and_reasons():
    reasons = {
        PayloadTooLarge: "payload_too_large",
        InvalidJson: "invalid_json",
        SchemaViolation: "schema_violation",
        KeyMismatch: "key_mismatch",
        UnknownLead: "unknown_lead",
    }
    for cls, reason in reasons.items():
        error = cls("msg", field="f")
        assert isinstance(error, InvalidInput)
        assert isinstance(error, LeadRelayError)
        assert error.reason == reason
        assert error.field == "f"
        assert str(error) == "msg"
    assert InvalidInput("x").reason == "invalid_input"


def test_parse_internal():
    event = LedgerExpired(pool="p", lead_ids=["a"])
    assert parse_internal(POOL_EVENT, dump(event)) == event
    with pytest.raises(SchemaViolation) as info:
        parse_internal(POOL_EVENT, b'{"kind": "expire", "pool": "p", "lead_ids": [""]}')
    assert info.value.field == "expire.lead_ids.0"
    with pytest.raises(InvalidJson):
        parse_internal(POOL_EVENT, None)
    with pytest.raises(InvalidJson):
        parse_internal(POOL_EVENT, b"[" * 10_000)
    with pytest.raises(PayloadTooLarge):
        parse_internal(POOL_EVENT, b" " * ((1 << 20) + 1))


# --- metrics label limiter -----------------------------------------------------------------------


def test_label_limiter_bounds_cardinality():
    limit = LabelLimiter(3)
    assert [limit(v) for v in ("a", "b", "a", "c")] == ["a", "b", "a", "c"]
    assert limit("d") == OTHER
    assert limit("e") == OTHER
    # values seen before the limit keep their label
    assert [limit(v) for v in ("a", "b", "c")] == ["a", "b", "c"]
    assert limit("d") == OTHER
    assert limit.seen == {"a", "b", "c"}


def test_label_limiter_many_values():
    limit = LabelLimiter(50)
    labels = {limit(f"pool-{i}") for i in range(10_000)}
    assert len(labels) == 51
    assert OTHER in labels


def test_label_limiter_zero():
    limit = LabelLimiter(0)
    assert limit("a") == OTHER
    assert limit.seen == set()
