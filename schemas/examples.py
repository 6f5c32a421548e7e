"""Example records of each published contract: the README's, plus a few that show the edges."""

from __future__ import annotations

from typing import Any

# The README's ```json blocks are the first example of their contract (tests/unit/test_published_schemas.py
# checks that they stay equal); policies come from deploy/policies/rule-entries.yaml.
LEAD_CREATED: list[dict[str, Any]] = [
    {
        "schema_version": 1,
        "lead_id": "WEB-2026-000123",
        "created_at": "2026-11-27T09:14:03.120Z",
        "source": "web_form",
        "country": "DE",
        "industry": "saas",
        "company_size": 240,
        "product": "analytics",
        "language": "de",
        "estimated_value": 18500.0,
        "currency": "EUR",
        "attributes": {"campaign": "q4-webinar", "utm_source": "newsletter"},
        "contact": {"name": "Erika Example", "email": "erika@example.com", "phone": "+49 30 0000000"},
    },
    {"lead_id": "CRM-42", "created_at": "2026-11-27T09:14:03Z"},
]

# The same lead a day later: a bigger company in another country (territory rules may now place it elsewhere).
LEAD_UPDATED: list[dict[str, Any]] = [
    {
        **LEAD_CREATED[0],
        "country": "AT",
        "company_size": 1400,
        "estimated_value": 64000.0,
    },
    {"lead_id": "CRM-42", "created_at": "2026-11-27T09:14:03Z", "pool": "emea-enterprise"},
]

DEAL_CLOSED: list[dict[str, Any]] = [
    {
        "schema_version": 1,
        "lead_id": "WEB-2026-000123",
        "outcome": "won",
        "amount": 21300.0,
        "currency": "EUR",
        "closed_at": "2026-12-09T15:42:00Z",
    },
    {
        "lead_id": "CRM-42",
        "outcome": "lost",
        "closed_at": "2026-12-01T10:00:00+01:00",
        "rep_id": "anna",
        "pool": "dach",
    },
]

REP_UPDATED: list[dict[str, Any]] = [
    {
        "schema_version": 1,
        "rep_id": "anna",
        "pools": ["dach"],
        "tier": "senior",
        "tags": {"de": 5, "en": 4, "saas": 4, "enterprise": 3},
        "capacity": 12,
        "weight": 1.5,
        "availability": "available",
        "hired_at": "2019-03-01",
        "active": True,
        "timezone": "Europe/Berlin",
        "working_hours": {
            "mon": ["08:30-17:30"],
            "tue": ["08:30-17:30"],
            "wed": ["08:30-17:30"],
            "thu": ["08:30-17:30"],
            "fri": ["08:30-14:00"],
        },
        "out_of_office": [{"start": "2026-12-22T00:00:00+01:00", "end": "2027-01-05T00:00:00+01:00"}],
        "daily_cap": 15,
        "updated_at": "2026-11-26T16:02:11Z",
    },
    {
        "rep_id": "lars",
        "pools": ["dach", "nordics"],
        "tags": ["en", "sv"],
        "capacity": None,
        "pool_capacity": {"dach": 4},
    },
]

POLICY: list[dict[str, Any]] = [
    {
        "id": "emea-rules",
        "version": 1,
        "pool": "emea",
        "strategies": {
            "default": {"scorers": {"load": 1.0}, "tie_break": ["rotation"]},
            "partners": {"scorers": {"rotation": 1.0}},
            "enterprise": {
                "must_have": [{"tag": "enterprise", "level": 2}],
                "relax": [{"drop_must_have": "all"}],
                "scorers": {"load": 0.5, "skills": 1.0},
                "nice_to_have": [{"tag": "enterprise", "level": 4}],
            },
        },
        "rules": [
            {"name": "partner-leads", "when": {"match": {"source": ["partner"]}}, "strategy": "partners"},
            {"name": "big-companies", "when": {"min": {"company_size": 1000}}, "strategy": "enterprise"},
        ],
    },
    {"id": "default", "version": 2},
]

ASSIGNMENT_DECISION: list[dict[str, Any]] = [
    {
        "schema_version": 1,
        "decision_id": "2f0ab4a4-3068-5b77-a519-65b520121a12",
        "lead_id": "WEB-2026-000123",
        "pool": "dach",
        "rep_id": "bernd",
        "reason": "assigned",
        "attempt": 1,
        "policy_id": "default",
        "policy_version": 1,
        "variant": None,
        "experiment": None,
        "explanation": {
            "strategy": "default",
            "summary": "score 0.625 (rotation 1.00, load 0.62), 3/8 open; strategy default; 3 eligible, "
            "excluded: at_capacity 1, unavailable 1",
            "weights": {"load": 1.0, "rotation": 0.001},
            "value_tier": None,
            "rule": None,
            "growth_channel": False,
            "relaxed": [],
            "chosen": {
                "rep_id": "bernd",
                "score": 0.625375,
                "components": {"load": 0.625, "rotation": 1.0},
                "facts": {"open": 3.0, "capacity": 8.0, "win_rate": 0.25},
            },
            "runners_up": [
                {
                    "rep_id": "lars",
                    "score": 0.5005,
                    "components": {"load": 0.5, "rotation": 1.0},
                    "facts": {"open": 5.0, "capacity": 10.0, "win_rate": 0.25},
                },
                {
                    "rep_id": "anna",
                    "score": 0.41625,
                    "components": {"load": 0.416667, "rotation": 0.0},
                    "facts": {"open": 7.0, "capacity": 12.0, "win_rate": 0.25},
                },
            ],
            "eligible": 3,
            "excluded": {"at_capacity": 1, "unavailable": 1},
            "notes": [],
        },
        "shadow": [],
        "lead_created_at": "2026-11-27T09:14:03.120Z",
        "decided_at": "2026-11-27T09:14:03.512Z",
        "trigger": None,
        "previous_holders": None,
        "waited_seconds": None,
    },
    {
        "schema_version": 1,
        "decision_id": "60a6d599-3116-5e19-bbdc-419017487d86",
        "lead_id": "WEB-2026-000123",
        "pool": "dach",
        "rep_id": "lars",
        "reason": "assigned",
        "attempt": 2,
        "policy_id": "default",
        "policy_version": 1,
        "variant": None,
        "experiment": None,
        "explanation": {
            "strategy": "default",
            "summary": "score 0.500 (load 0.50, rotation 1.00), 5/10 open; strategy default; 2 eligible, "
            "excluded: excluded 1",
            "weights": {"load": 1.0},
            "value_tier": None,
            "rule": None,
            "growth_channel": False,
            "relaxed": [],
            "chosen": {
                "rep_id": "lars",
                "score": 0.5,
                "components": {"load": 0.5},
                "facts": {"open": 5.0, "capacity": 10.0},
            },
            "runners_up": [],
            "eligible": 2,
            "excluded": {"excluded": 1},
            "notes": ["follow-up SLA: bernd did not touch the lead within 4h (due 2026-11-27T13:14:03.512000Z)"],
        },
        "shadow": [],
        "lead_created_at": "2026-11-27T09:14:03.120Z",
        "decided_at": "2026-11-27T13:14:05.004Z",
        "trigger": "sla_expired",
        "previous_holders": ["bernd"],
        "waited_seconds": None,
    },
]

LEAD_ACTIVITY: list[dict[str, Any]] = [
    {
        "schema_version": 1,
        "lead_id": "WEB-2026-000123",
        "kind": "first_contact",
        "rep_id": "bernd",
        "occurred_at": "2026-11-27T10:02:41Z",
    },
    {
        "lead_id": "CRM-42",
        "pool": "emea",
        "kind": "disqualified",
        "occurred_at": "2026-11-28T08:00:00+01:00",
        "status": "not_a_fit",
        "note": "budget",
    },
]

DEAD_LETTER_HEADERS: list[dict[str, Any]] = [
    {
        "x-leadrelay-source-topic": "leads.new",
        "x-leadrelay-source-partition": "3",
        "x-leadrelay-source-offset": "6",
        "x-leadrelay-reason": "schema_violation",
        "x-leadrelay-error-class": "SchemaViolation",
        "x-leadrelay-error-message": "country: String should match pattern '^[A-Z]{2}$'",
        "x-leadrelay-error-field": "country",
    },
    {
        "x-leadrelay-source-topic": "leads.new",
        "x-leadrelay-source-partition": "2",
        "x-leadrelay-source-offset": "3",
        "x-leadrelay-reason": "invalid_json",
        "x-leadrelay-error-class": "InvalidJson",
        "x-leadrelay-error-message": "Invalid JSON: expected ident at line 1 column 2",
    },
]

LEAD_CLAIM: list[dict[str, Any]] = [
    {
        "schema_version": 1,
        "claim_id": "claim-7f3a",
        "lead_id": "WEB-2026-000123",
        "rep_id": "anna",
        "requested_at": "2026-11-27T14:02:10Z",
    },
    {"claim_id": "c2", "lead_id": "CRM-42", "rep_id": "bernd", "pool": "dach", "requested_at": "2026-11-27T14:02:11Z"},
]

CLAIM_RESULT: list[dict[str, Any]] = [
    {
        "schema_version": 1,
        "claim_id": "claim-7f3a",
        "lead_id": "WEB-2026-000123",
        "rep_id": "anna",
        "pool": "dach",
        "accepted": True,
        "reason": "claimed",
        "detail": "claimed by anna from the open pool, 4/12 open; strategy default",
        "decision_id": "b0f8a115-7468-5ea8-b953-a271885b7047",
        "attempt": 4,
        "answered_at": "2026-11-27T14:02:10.231Z",
    },
    {
        "schema_version": 1,
        "claim_id": "c2",
        "lead_id": "WEB-2026-000123",
        "rep_id": "bernd",
        "pool": "dach",
        "accepted": False,
        "reason": "not_claimable",
        "detail": "the lead is open (anna)",
        "decision_id": None,
        "attempt": None,
        "answered_at": "2026-11-27T14:02:10.598Z",
    },
]
