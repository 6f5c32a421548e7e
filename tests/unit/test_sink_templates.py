"""CRM request templates render the documented shapes, and ids map to CRM ids."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from routing.ids import decision_id
from schemas.events import AssignmentDecision, Explanation
from streams.ingress.auth import Verifier
from streams.sink.templates import TEMPLATES, IdMapping, Target, Unmapped

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def decision(lead_id: str = "00Q5e00000AbCdE", rep_id: str | None = "anna", attempt: int = 1) -> AssignmentDecision:
    return AssignmentDecision(
        decision_id=decision_id(lead_id, attempt),
        lead_id=lead_id,
        pool="dach",
        rep_id=rep_id,
        reason="assigned" if rep_id else "no_eligible_rep",
        attempt=attempt,
        policy_id="p",
        policy_version=1,
        explanation=Explanation(strategy="balanced", summary="least loaded"),
        lead_created_at=NOW,
        decided_at=NOW,
    )


def render(name: str, d: AssignmentDecision, owner: str | None, record: str, **target: object):
    t = Target(url="https://crm.example.com/", token="tok-123", **target)  # type: ignore[arg-type]
    return TEMPLATES[name].render(t, d, owner, record, NOW.timestamp())


def test_salesforce_lead_owner_update() -> None:
    d = decision()
    r = render("salesforce", d, "005XX000001SvZ1", "00Q5e00000AbCdE", salesforce_api_version="v60.0")
    assert (r.method, r.url) == ("PATCH", "https://crm.example.com/services/data/v60.0/sobjects/Lead/00Q5e00000AbCdE")
    assert orjson.loads(r.body) == {"OwnerId": "005XX000001SvZ1"}
    assert r.headers["Authorization"] == "Bearer tok-123" and r.headers["Idempotency-Key"] == d.decision_id
    assert r.headers["Content-Type"] == "application/json"


def test_hubspot_contact_owner_update() -> None:
    r = render("hubspot", decision(), "41629779", "151")
    assert (r.method, r.url) == ("PATCH", "https://crm.example.com/crm/v3/objects/contacts/151")
    assert orjson.loads(r.body) == {"properties": {"hubspot_owner_id": "41629779"}}
    assert r.headers["Authorization"] == "Bearer tok-123"


def test_zoho_lead_owner_update() -> None:
    r = render("zoho", decision(), "2883756000000113011", "2883756000000271017")
    assert (r.method, r.url) == ("PUT", "https://crm.example.com/crm/v2/Leads/2883756000000271017")
    assert orjson.loads(r.body) == {"data": [{"Owner": {"id": "2883756000000113011"}}]}
    assert r.headers["Authorization"] == "Zoho-oauthtoken tok-123"


def test_generic_webhook_carries_ids_only_and_is_signed_like_the_ingress_verifies() -> None:
    d = decision(lead_id="web-7")
    r = render("generic", d, "u-9", "rec-7", signing_secret=b"sink-signing-secret-0123")
    body = orjson.loads(r.body)
    assert (r.method, r.url) == ("POST", "https://crm.example.com/")
    assert body["event"] == "lead.assigned" and body["decision_id"] == d.decision_id
    assert (body["lead_id"], body["record_id"], body["rep_id"], body["owner_id"]) == ("web-7", "rec-7", "anna", "u-9")
    assert "explanation" not in body and "contact" not in body
    verifier = Verifier({"leadrelay": b"sink-signing-secret-0123"}, 300, clock=NOW.timestamp)
    assert verifier.verify(r.headers, r.body)[0] == "leadrelay"


def test_record_ids_cannot_leave_their_path_segment() -> None:
    r = render("hubspot", decision(lead_id="a/../../owners"), "1", "a/../../owners")
    assert r.url == "https://crm.example.com/crm/v3/objects/contacts/a%2F..%2F..%2Fowners"


@pytest.mark.parametrize("name", ["salesforce", "hubspot", "zoho"])
def test_crm_templates_skip_unassigned_decisions_and_generic_sends_them(name: str) -> None:
    assert TEMPLATES[name].needs_owner and not TEMPLATES["generic"].needs_owner
    body = orjson.loads(render("generic", decision(rep_id=None), None, "x").body)
    assert body["event"] == "lead.unassigned" and body["owner_id"] is None


def test_mapping_files(tmp_path: Path) -> None:
    owners, records = tmp_path / "owners.yaml", tmp_path / "records.json"
    owners.write_text("anna: '005XX000001SvZ1'\nbernd: 42\n")
    records.write_text('{"web-7": "00Q5e00000AbCdE"}')
    m = IdMapping.load(owners, records)
    assert (m.owner("anna"), m.owner("bernd"), m.record("web-7")) == ("005XX000001SvZ1", "42", "00Q5e00000AbCdE")
    with pytest.raises(Unmapped) as raised:
        m.owner("clara")
    assert raised.value.reason == "unmapped_owner"
    with pytest.raises(Unmapped):
        m.record("web-8")
    plain = IdMapping.load(None, None)
    assert (plain.owner("clara"), plain.record("web-8"), plain.owner(None)) == ("clara", "web-8", None)
