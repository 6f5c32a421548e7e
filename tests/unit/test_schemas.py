"""schemas: public and internal contracts round-trip, reject bad input, and never carry contact data out."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from routing.decide import decide
from routing.policy import DEFAULT_POLICY
from schemas import SCHEMA_VERSION
from schemas.events import AssignmentDecision, Contact, DealClosed, LeadCreated, RepUpdated
from schemas.internal import (
    LEAD_EVENT,
    POOL_EVENT,
    DealArrived,
    DealUnrouted,
    LeadArrived,
    LeadIndexed,
    LedgerExpired,
    Origin,
    PendingExpired,
    RepChanged,
)
from tests.factories import NOW, make_rep, make_view

EMAIL = "jane.doe@example.com"
PHONE = "+49 30 1234567"

LEAD = {
    "lead_id": "crm:lead/0001",
    "created_at": "2024-05-31T10:15:00Z",
    "pool": "emea-smb",
    "source": "web",
    "region": "emea",
    "country": "DE",
    "industry": "software",
    "company_size": 120,
    "product": "crm",
    "language": "de-DE",
    "estimated_value": 15000.5,
    "currency": "EUR",
    "attributes": {"campaign": "spring", "score": 87, "ratio": 0.5, "partner": False},
}
DEAL = {
    "lead_id": "crm:lead/0001",
    "outcome": "won",
    "amount": 12000.0,
    "currency": "EUR",
    "closed_at": "2024-06-20T08:00:00+00:00",
    "rep_id": "rep-7",
    "pool": "emea-smb",
}
REP = {
    "rep_id": "rep-7",
    "pools": ["emea-smb", "emea-ent"],
    "tier": "senior",
    "tags": {"de": 3, "saas": 1},
    "capacity": 25,
    "weight": 1.5,
    "availability": "away",
    "hired_at": "2021-03-01",
    "active": True,
    "updated_at": "2024-06-01T00:00:00Z",
}


def _decision() -> AssignmentDecision:
    lead = LeadCreated.model_validate(LEAD)
    view = make_view([make_rep(rep_id="rep-1"), make_rep(rep_id="rep-2")], {"rep-1": 3}, pool="emea-smb")
    return decide(lead, view, DEFAULT_POLICY, now=NOW)


@pytest.mark.parametrize(("model", "data"), [(LeadCreated, LEAD), (DealClosed, DEAL), (RepUpdated, REP)])
def test_valid_examples_round_trip_through_json(model, data):
    event = model.model_validate_json(json.dumps(data))
    assert event.schema_version == SCHEMA_VERSION
    again = model.model_validate_json(event.model_dump_json())
    assert again == event
    assert again.model_dump_json() == event.model_dump_json()


def test_decision_round_trips_through_json():
    decision = _decision()
    assert decision.rep_id == "rep-2"
    again = AssignmentDecision.model_validate_json(decision.model_dump_json())
    assert again == decision
    assert AssignmentDecision.model_validate(decision.model_dump(mode="json")) == decision


def test_minimal_lead_defaults():
    lead = LeadCreated.model_validate({"lead_id": "x", "created_at": "2024-01-01T00:00:00Z"})
    assert (lead.pool, lead.contact, lead.attributes, lead.estimated_value) == (None, None, {}, None)


def test_whitespace_of_labels_is_stripped():
    lead = LeadCreated.model_validate({**LEAD, "source": "  web  ", "region": " emea"})
    assert (lead.source, lead.region) == ("web", "emea")


def _bad(data, **changes):
    out = {**data, **changes}
    return {k: v for k, v in out.items() if v is not _DROP}


_DROP = object()


@pytest.mark.parametrize(
    ("model", "data", "bad_field"),
    [
        (LeadCreated, _bad(LEAD, lead_id=_DROP), "lead_id"),
        (LeadCreated, _bad(LEAD, created_at=_DROP), "created_at"),
        (LeadCreated, _bad(LEAD, lead_id=""), "lead_id"),
        (LeadCreated, _bad(LEAD, lead_id="a|b"), "lead_id"),
        (LeadCreated, _bad(LEAD, lead_id="-starts-with-dash"), "lead_id"),
        (LeadCreated, _bad(LEAD, lead_id="x" * 129), "lead_id"),
        (LeadCreated, _bad(LEAD, lead_id=123), "lead_id"),
        (LeadCreated, _bad(LEAD, created_at="yesterday"), "created_at"),
        (LeadCreated, _bad(LEAD, company_size="big"), "company_size"),
        (LeadCreated, _bad(LEAD, company_size=-1), "company_size"),
        (LeadCreated, _bad(LEAD, company_size=1.5), "company_size"),
        (LeadCreated, _bad(LEAD, estimated_value="lots"), "estimated_value"),
        (LeadCreated, _bad(LEAD, estimated_value=-0.01), "estimated_value"),
        (LeadCreated, _bad(LEAD, estimated_value=1e13), "estimated_value"),
        (LeadCreated, _bad(LEAD, country="de"), "country"),
        (LeadCreated, _bad(LEAD, country="DEU"), "country"),
        (LeadCreated, _bad(LEAD, country="D1"), "country"),
        (LeadCreated, _bad(LEAD, language="deutsch"), "language"),
        (LeadCreated, _bad(LEAD, currency="eur"), "currency"),
        (LeadCreated, _bad(LEAD, pool="EMEA"), "pool"),
        (LeadCreated, _bad(LEAD, pool="emea smb"), "pool"),
        (LeadCreated, _bad(LEAD, pool="a|b"), "pool"),
        (LeadCreated, _bad(LEAD, pool="x" * 65), "pool"),
        (LeadCreated, _bad(LEAD, pool=""), "pool"),
        (LeadCreated, _bad(LEAD, schema_version=2), "schema_version"),
        (LeadCreated, _bad(LEAD, owner="someone"), "owner"),
        (LeadCreated, _bad(LEAD, attributes={"nested": {"a": 1}}), "attributes"),
        (LeadCreated, _bad(LEAD, attributes={f"k{i}": i for i in range(51)}), "attributes"),
        (LeadCreated, _bad(LEAD, contact={"email": EMAIL, "ssn": "123"}), "contact"),
        (LeadCreated, _bad(LEAD, source="x" * 65), "source"),
        (DealClosed, _bad(DEAL, lead_id=_DROP), "lead_id"),
        (DealClosed, _bad(DEAL, outcome="pending"), "outcome"),
        (DealClosed, _bad(DEAL, amount=-1), "amount"),
        (DealClosed, _bad(DEAL, amount="NaN"), "amount"),
        (DealClosed, _bad(DEAL, closed_at=_DROP), "closed_at"),
        (DealClosed, _bad(DEAL, pool="Sales"), "pool"),
        (DealClosed, _bad(DEAL, extra=True), "extra"),
        (RepUpdated, _bad(REP, pools=_DROP), "pools"),
        (RepUpdated, _bad(REP, pools=["OK"]), "pools"),
        (RepUpdated, _bad(REP, pools=[f"p{i}" for i in range(33)]), "pools"),
        (RepUpdated, _bad(REP, capacity=-1), "capacity"),
        (RepUpdated, _bad(REP, capacity="ten"), "capacity"),
        (RepUpdated, _bad(REP, position=-1), "position"),
        (RepUpdated, _bad(REP, position="first"), "position"),
        (RepUpdated, _bad(REP, weight=0), "weight"),
        (RepUpdated, _bad(REP, tags={"de": 6}), "tags"),
        (RepUpdated, _bad(REP, tags={"De": 1}), "tags"),
        (RepUpdated, _bad(REP, availability="busy"), "availability"),
        (RepUpdated, _bad(REP, hired_at="last year"), "hired_at"),
        (RepUpdated, _bad(REP, active="maybe"), "active"),
    ],
)
def test_invalid_examples_are_rejected(model, data, bad_field):
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(json.dumps(data))
    assert info.value.errors()[0]["loc"][0] == bad_field


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_rejected(value):
    with pytest.raises(ValidationError):
        LeadCreated.model_validate({**LEAD, "estimated_value": value})
    with pytest.raises(ValidationError):
        DealClosed.model_validate({**DEAL, "amount": value})


def test_decision_rejects_bad_fields():
    data = _decision().model_dump(mode="json")
    for change in ({"reason": "maybe"}, {"attempt": 0}, {"pool": "Bad"}, {"extra": 1}, {"rep_id": "a|b"}):
        with pytest.raises(ValidationError):
            AssignmentDecision.model_validate({**data, **change})


def test_events_are_frozen():
    lead = LeadCreated.model_validate(LEAD)
    with pytest.raises(ValidationError):
        lead.pool = "other"


# --- contact data --------------------------------------------------------------------------------


def _lead_with_contact() -> LeadCreated:
    return LeadCreated.model_validate({**LEAD, "contact": {"name": "Jane Doe", "email": EMAIL, "phone": PHONE}})


def test_contact_is_accepted_and_readable_in_process():
    lead = _lead_with_contact()
    assert lead.contact == Contact(name="Jane Doe", email=EMAIL, phone=PHONE)


@pytest.mark.parametrize(
    "render",
    [
        lambda lead: lead.model_dump_json(),
        lambda lead: json.dumps(lead.model_dump(mode="json")),
        lambda lead: str(lead.model_dump()),
        repr,
        str,
        lambda lead: repr(lead.contact),
        lambda lead: str(lead.contact),
        lambda lead: LeadArrived(pool="p", lead=lead, received_at=NOW).model_dump_json(),
        lambda lead: repr(LeadArrived(pool="p", lead=lead, received_at=NOW)),
    ],
)
def test_contact_data_never_leaves_the_model(render):
    text = render(_lead_with_contact())
    assert EMAIL not in text
    assert PHONE not in text
    assert "Jane Doe" not in text


def test_dump_without_contact_is_still_a_valid_lead():
    lead = _lead_with_contact()
    dumped = json.loads(lead.model_dump_json())
    assert "contact" not in dumped
    assert LeadCreated.model_validate(dumped) == lead.model_copy(update={"contact": None})


# --- normalization -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "data", "field"),
    [
        (LeadCreated, {**LEAD, "created_at": "2024-05-31T10:15:00"}, "created_at"),
        (DealClosed, {**DEAL, "closed_at": "2024-06-20T08:00:00"}, "closed_at"),
        (RepUpdated, {**REP, "updated_at": "2024-06-01T00:00:00"}, "updated_at"),
    ],
)
def test_naive_timestamps_become_utc(model, data, field):
    value = getattr(model.model_validate_json(json.dumps(data)), field)
    assert value.tzinfo is not None
    assert value.utcoffset() == timedelta(0)
    naive = datetime.fromisoformat(data[field])
    assert value == naive.replace(tzinfo=UTC)


def test_naive_datetime_objects_become_utc():
    lead = LeadCreated(lead_id="x", created_at=datetime(2024, 1, 1, 12, 0))
    assert lead.created_at == datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


def test_aware_timestamps_keep_their_instant():
    lead = LeadCreated.model_validate({**LEAD, "created_at": "2024-05-31T12:15:00+02:00"})
    assert lead.created_at == datetime(2024, 5, 31, 10, 15, tzinfo=UTC)
    plus_two = timezone(timedelta(hours=2))
    assert lead.created_at == datetime(2024, 5, 31, 12, 15, tzinfo=plus_two)


@pytest.mark.parametrize(
    ("tags", "levels"),
    [
        (["de", "saas"], {"de": 1, "saas": 1}),
        (["de", "de"], {"de": 1}),
        ([], {}),
        ({"de": 4}, {"de": 4}),
    ],
)
def test_tags_list_becomes_levels(tags, levels):
    rep = RepUpdated.model_validate({**REP, "tags": tags})
    assert rep.tags == levels


def test_rep_defaults():
    rep = RepUpdated.model_validate({"rep_id": "r", "pools": []})
    assert (rep.tier, rep.tags, rep.capacity, rep.weight, rep.availability, rep.active, rep.hired_at) == (
        "standard",
        {},
        10,
        1.0,
        "available",
        True,
        None,
    )
    assert RepUpdated.model_validate(REP).hired_at == date(2021, 3, 1)


# --- internal contracts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        LeadArrived(
            pool="p",
            lead=LeadCreated.model_validate(LEAD),
            received_at=NOW,
            origin=Origin(topic="t", partition=1, offset=9),
        ),
        RepChanged(pool="p", rep_id="r", profile=RepUpdated.model_validate(REP)),
        RepChanged(pool="p", rep_id="r", profile=None),
        DealArrived(pool="p", deal=DealClosed.model_validate(DEAL)),
        LedgerExpired(pool="p", lead_ids=["a", "b"]),
    ],
)
def test_pool_events_round_trip_by_kind(event):
    again = POOL_EVENT.validate_json(event.model_dump_json())
    assert type(again) is type(event)
    assert again == event


@pytest.mark.parametrize(
    "event",
    [
        LeadIndexed(lead_id="l", pool="p", rep_id=None, decision_id="d"),
        DealUnrouted(deal=DealClosed.model_validate(DEAL), first_seen_at=NOW),
        PendingExpired(lead_id="l"),
    ],
)
def test_lead_events_round_trip_by_kind(event):
    again = LEAD_EVENT.validate_json(event.model_dump_json())
    assert type(again) is type(event)
    assert again == event


def test_internal_events_reject_unknown_kind_and_oversized_batches():
    with pytest.raises(ValidationError):
        POOL_EVENT.validate_json(b'{"kind": "other", "pool": "p"}')
    with pytest.raises(ValidationError):
        LedgerExpired(pool="p", lead_ids=[f"l{i}" for i in range(1001)])


def test_a_first_arrival_is_written_without_the_move_fields() -> None:
    """A worker of the version before (extra="forbid") still reads first arrivals in a rolling upgrade."""
    lead = LeadCreated(lead_id="L1", created_at=NOW)
    first = json.loads(LeadArrived(pool="p", lead=lead, received_at=NOW).model_dump_json())
    assert set(first) == {"kind", "pool", "lead", "received_at", "origin"}
    moved = LeadArrived(
        pool="p", lead=lead, received_at=NOW, attempt=2, previous_holders=["r1"], trigger="moved", moved_from="q"
    )
    assert POOL_EVENT.validate_json(moved.model_dump_json()) == moved
    with pytest.raises(ValidationError):
        LeadArrived(pool="p", lead=lead, received_at=NOW, attempt=1)  # a move is attempt 2 at least
