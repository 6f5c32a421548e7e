"""Request templates: one decision -> one HTTP request in the shape the CRM documents.

| template   | request                                                        | auth header                     |
|------------|----------------------------------------------------------------|---------------------------------|
| salesforce | PATCH {url}/services/data/{version}/sobjects/Lead/{id}          | Authorization: Bearer <token>   |
|            | {"OwnerId": owner}                                             |                                 |
| hubspot    | PATCH {url}/crm/v3/objects/contacts/{id}                       | Authorization: Bearer <token>   |
|            | {"properties": {"hubspot_owner_id": owner}}                    | (private app access token)      |
| zoho       | PUT {url}/crm/v2/Leads/{id}                                    | Authorization: Zoho-oauthtoken  |
|            | {"data": [{"Owner": {"id": owner}}]}                           | <token>                         |
| generic    | POST {url} with the decision's ids (GENERIC_FIELDS)            | Bearer <token> if set; signed   |
|            |                                                                | like the ingress if a secret is |

Every request carries `Idempotency-Key: <decision_id>`. The CRM templates set an owner, which is
idempotent in itself; a generic receiver dedupes on the key. Sources: docs/operations.md, "CRM delivery".
Templates are registered in TEMPLATES (the `sink_template` setting names one); adding a CRM is one
function and one entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import orjson
import yaml

from schemas.events import AssignmentDecision
from streams.ingress.auth import signed_headers

IDEMPOTENCY_HEADER = "Idempotency-Key"
USER_AGENT = "leadrelay-sink/1"
SIGNING_SOURCE = "leadrelay"  # X-Leadrelay-Source of signed generic webhooks


@dataclass(frozen=True)
class Target:
    """Where and how to call: from the sink_* settings."""

    url: str
    token: str | None = None
    signing_secret: bytes | None = None
    salesforce_api_version: str = "v60.0"


@dataclass(frozen=True)
class CrmRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes


class Unmapped(Exception):
    """A rep or lead without an entry in its mapping file: dead-lettered with `reason`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _path(record_id: str) -> str:
    """A record id as one path segment: ids may hold '/', ':' or '@', never a way out of the path."""
    return quote(record_id, safe="")


def _headers(d: AssignmentDecision, auth: str | None) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
        IDEMPOTENCY_HEADER: d.decision_id,
    }
    if auth:
        headers["Authorization"] = auth
    return headers


def _bearer(t: Target) -> str | None:
    return f"Bearer {t.token}" if t.token else None


def salesforce(t: Target, d: AssignmentDecision, owner: str | None, record: str, now: float) -> CrmRequest:
    url = f"{t.url.rstrip('/')}/services/data/{t.salesforce_api_version}/sobjects/Lead/{_path(record)}"
    return CrmRequest("PATCH", url, _headers(d, _bearer(t)), orjson.dumps({"OwnerId": owner}))


def hubspot(t: Target, d: AssignmentDecision, owner: str | None, record: str, now: float) -> CrmRequest:
    url = f"{t.url.rstrip('/')}/crm/v3/objects/contacts/{_path(record)}"
    body = {"properties": {"hubspot_owner_id": owner}}
    return CrmRequest("PATCH", url, _headers(d, _bearer(t)), orjson.dumps(body))


def zoho(t: Target, d: AssignmentDecision, owner: str | None, record: str, now: float) -> CrmRequest:
    url = f"{t.url.rstrip('/')}/crm/v2/Leads/{_path(record)}"
    auth = f"Zoho-oauthtoken {t.token}" if t.token else None
    return CrmRequest("PUT", url, _headers(d, auth), orjson.dumps({"data": [{"Owner": {"id": owner}}]}))


GENERIC_FIELDS = ("decision_id", "lead_id", "pool", "rep_id", "reason", "attempt", "policy_id", "policy_version")


def generic(t: Target, d: AssignmentDecision, owner: str | None, record: str, now: float) -> CrmRequest:
    """The decision's ids (no explanation, no contact data) plus the mapped CRM ids, as one JSON object.
    Signed with sink_signing_secret like the ingress verifies, so the receiver can check the sender."""
    body = {
        "event": "lead.assigned" if d.rep_id else "lead.unassigned",
        **{name: getattr(d, name) for name in GENERIC_FIELDS},
        "record_id": record,
        "owner_id": owner,
        "decided_at": d.decided_at.isoformat(),
        "lead_created_at": d.lead_created_at.isoformat(),
    }
    raw = orjson.dumps(body)
    headers = _headers(d, _bearer(t))
    if t.signing_secret:
        headers |= signed_headers(SIGNING_SOURCE, t.signing_secret, raw, now=now)
    return CrmRequest("POST", t.url, headers, raw)


Render = Callable[[Target, AssignmentDecision, str | None, str, float], CrmRequest]


@dataclass(frozen=True)
class Template:
    render: Render
    needs_owner: bool  # an owner update without an owner means nothing: unassigned decisions are skipped


TEMPLATES: dict[str, Template] = {
    "salesforce": Template(salesforce, needs_owner=True),
    "hubspot": Template(hubspot, needs_owner=True),
    "zoho": Template(zoho, needs_owner=True),
    "generic": Template(generic, needs_owner=False),
}


@dataclass(frozen=True)
class IdMapping:
    """rep_id -> CRM owner id and lead_id -> CRM record id; without a file the id is used as it is."""

    owners: dict[str, str] | None = None
    records: dict[str, str] | None = None

    @classmethod
    def load(cls, owners: Path | None, records: Path | None) -> IdMapping:
        return cls(_load_map(owners) if owners else None, _load_map(records) if records else None)

    def owner(self, rep_id: str | None) -> str | None:
        if rep_id is None or self.owners is None:
            return rep_id
        if rep_id not in self.owners:
            raise Unmapped("unmapped_owner", f"rep {rep_id} has no entry in the owner map")
        return self.owners[rep_id]

    def record(self, lead_id: str) -> str:
        if self.records is None:
            return lead_id
        if lead_id not in self.records:
            raise Unmapped("unmapped_record", f"lead {lead_id} has no entry in the record map")
        return self.records[lead_id]


def _load_map(path: Path) -> dict[str, str]:
    loaded = yaml.safe_load(path.read_text())
    if not isinstance(loaded, dict) or not all(isinstance(k, str | int) for k in loaded):
        raise ValueError(f"{path}: expected a mapping of id -> CRM id")
    return {str(k): str(v) for k, v in loaded.items()}
