"""Duplicates: keyed hashes of a lead's contact, and the match that sends a duplicate to the holder.

Pure like the rest of routing/: the secret, the time (`now`) and the rows come in as arguments. The leads
stage (agents/ingest_leads.py), the one place that sees `contact`, turns it into `dedupe_keys`; the route
stage looks them up in its `dedupe|<pool>|<kind>|<hash>` rows (docs/lifecycle.md, docs/security.md).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from routing import sla
from routing.frame import PoolFrame
from routing.ids import decision_id
from routing.ledger import OPEN, Assigned, LedgerEntry
from routing.policy import Dedupe, Policy, duration_seconds
from schemas.events import AssignmentDecision, Contact, Explanation, LeadCreated, ScoredRep

KeyKind = Literal["email", "phone", "domain"]
KINDS: tuple[KeyKind, ...] = ("email", "phone", "domain")
TRIGGER = "duplicate_of"
KEY_HEX = 32  # 128 bits of the HMAC: collisions are out of reach, rows stay short
MIN_PHONE_DIGITS = 7  # fewer is an extension or a typo, not a number two leads could share
# Providers whose domain says nothing about the company: their e-mail gives no `domain` key.
FREE_MAIL = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "outlook.com",
        "hotmail.com",
        "live.com",
        "msn.com",
        "icloud.com",
        "me.com",
        "aol.com",
        "proton.me",
        "protonmail.com",
        "gmx.de",
        "gmx.net",
        "web.de",
        "yandex.ru",
        "mail.ru",
        "qq.com",
        "163.com",
    }
)


def normal_email(text: str | None) -> str | None:
    """Trimmed and lower-cased; None unless it looks like local@domain.tld. Dots and `+tags` are kept:
    only some providers ignore them, and merging two people is worse than missing one duplicate."""
    if not text:
        return None
    email = text.strip().lower()
    local, at, domain = email.rpartition("@")
    domain = domain.rstrip(".")
    if not at or not local or "." not in domain or any(c.isspace() for c in email):
        return None
    return f"{local}@{domain}"


def normal_phone(text: str | None) -> str | None:
    """ASCII digits only, a leading `+` (or the international `00`) kept as `+`; None under
    MIN_PHONE_DIGITS digits. A national and an international spelling of one number stay different."""
    if not text:
        return None
    raw = text.strip()
    digits = "".join(c for c in raw if c in "0123456789")
    plus = raw.startswith("+")
    if not plus and digits.startswith("00"):
        plus, digits = True, digits[2:]
    if len(digits) < MIN_PHONE_DIGITS:
        return None
    return ("+" if plus else "") + digits


def company_domain(email: str | None) -> str | None:
    """The domain of a normalised e-mail, unless a free-mail provider's."""
    if email is None:
        return None
    domain = email.rpartition("@")[2]
    return None if domain in FREE_MAIL else domain


def normalised(contact: Contact | None) -> dict[KeyKind, str]:
    """The contact's normal forms per kind (absent kinds left out). Never leaves this module unhashed."""
    if contact is None:
        return {}
    email = normal_email(contact.email)
    values: dict[KeyKind, str | None] = {
        "email": email,
        "phone": normal_phone(contact.phone),
        "domain": company_domain(email),
    }
    return {kind: value for kind, value in values.items() if value is not None}


def digest(secret: bytes, kind: str, value: str) -> str:
    """HMAC-SHA256 keyed by the deployment's secret: a plain hash of a phone number is brute-forced in
    minutes; the kind is part of the message, so an e-mail and a domain never share a key."""
    return hmac.new(secret, f"{kind}\x1f{value}".encode(), hashlib.sha256).hexdigest()[:KEY_HEX]


def keys(contact: Contact | None, secret: bytes | None) -> dict[KeyKind, str]:
    """The lead's dedupe keys; none without a secret (an unkeyed hash would be the contact in disguise)."""
    if not secret:
        return {}
    return {kind: digest(secret, kind, value) for kind, value in normalised(contact).items()}


def row_key(pool: str, kind: str, key: str) -> str:
    """The route table row of one key (within the kind `dedupe`): `<pool>|<kind>|<hash>`."""
    return f"{pool}|{kind}|{key}"


def row(lead_id: str, rep_id: str | None, now: datetime) -> dict[str, Any]:
    """What a key row holds: the lead decided with it and when (its horizon counts from then)."""
    return {"lead_id": lead_id, "rep_id": rep_id, "at": sla.stamp(now)}


def live(stored: Mapping[str, Any], dedupe: Dedupe | None, now: datetime) -> bool:
    """Whether a key row is within its pool's horizon at `now` (no dedupe section: no row is)."""
    if dedupe is None:
        return False
    horizon = timedelta(seconds=duration_seconds(dedupe.horizon))
    return sla.parse_stamp(str(stored["at"])) + horizon >= now


@dataclass(frozen=True, slots=True)
class Match:
    kind: str  # the key kind that matched
    lead_id: str  # the lead it duplicates (the one holding the load)
    rep_id: str  # that lead's current holder
    since: str  # when that lead was decided (the row's `at`)


def holder(entry: LedgerEntry | None, frame: PoolFrame) -> str | None:
    """The rep a duplicate of the entry's lead goes to: its current holder while the lead is open and the
    holder is an active, available member of the pool (never a rep the pool's policy could not pick for
    availability); None otherwise."""
    if entry is None or entry.status != OPEN or entry.rep_id is None or entry.duplicate_of is not None:
        return None
    i = frame.index.get(entry.rep_id)
    if i is None or not (frame.active[i] and frame.available[i]):
        return None
    return entry.rep_id


def find(
    candidates: Sequence[tuple[str, Mapping[str, Any], LedgerEntry | None]],
    frame: PoolFrame,
    dedupe: Dedupe,
    now: datetime,
) -> Match | None:
    """The first candidate (kind, key row, ledger entry of its lead), in the policy's key order, whose
    lead a duplicate joins."""
    for kind, stored, entry in candidates:
        rep_id = holder(entry, frame) if live(stored, dedupe, now) else None
        if rep_id is not None:
            return Match(kind, str(stored["lead_id"]), rep_id, str(stored["at"]))
    return None


def merge(lead: LeadCreated, frame: PoolFrame, policy: Policy, match: Match, *, now: datetime) -> Assigned:
    """The duplicate goes to the holder of the lead it duplicates and joins that lead: no load (a
    duplicate can never overfill a rep), no follow-up timer; a deal or a closing activity on it credits
    the rep and releases nothing. The explanation names the original lead and the key kind, never the key."""
    summary = (
        f"duplicate of lead {match.lead_id} (same {match.kind}, decided {match.since}):"
        f" to its holder {match.rep_id}; adds no open lead"
    )
    decision = AssignmentDecision(
        decision_id=decision_id(lead.lead_id, 1),
        lead_id=lead.lead_id,
        pool=frame.pool,
        rep_id=match.rep_id,
        reason="assigned",
        policy_id=policy.id,
        policy_version=policy.version,
        explanation=Explanation(
            strategy="dedupe",
            summary=summary,
            chosen=ScoredRep(rep_id=match.rep_id, score=1.0),
            eligible=1,
        ),
        lead_created_at=lead.created_at,
        decided_at=now,
        trigger=TRIGGER,
    )
    entry = LedgerEntry(
        decision=decision.model_dump(mode="json"),
        status=OPEN,
        rep_id=match.rep_id,
        value=lead.estimated_value or 0.0,
        # a deal on it teaches the pool's model like any other (same decay); no features: none were scored
        half_life=policy.learning.half_life_days if policy.learning is not None else None,
        duplicate_of={"lead_id": match.lead_id, "kind": match.kind},
    )
    return Assigned(decision, entry, None, None, duplicate=False)
