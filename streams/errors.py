"""Errors at the boundary.

    LeadRelayError
     └── InvalidInput            -> dead-letter record + counter, the worker goes on
          ├── PayloadTooLarge     record larger than max_payload_bytes
          ├── InvalidJson         not JSON at all (or nested too deep)
          ├── SchemaViolation     JSON that breaks the contract (field says where)
          ├── KeyMismatch         compacted topic record whose key is not its id
          ├── UnknownLead         a deal whose lead never got a decision in time
          ├── InvalidPolicy       a policy update that does not validate (field names the path)
          └── StalePolicy         a policy update whose version is not newer than the running one

Anything else raised while handling one record is unexpected: it is logged with
topic[partition]@offset, counted, dead-lettered as `internal_error`, and the loop continues
(never retried in place: that would reorder the pool's log).
"""

from __future__ import annotations

from pydantic import ValidationError


class LeadRelayError(Exception):
    """Base of leadrelay's own errors."""


class InvalidInput(LeadRelayError):
    reason = "invalid_input"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class PayloadTooLarge(InvalidInput):
    reason = "payload_too_large"


class InvalidJson(InvalidInput):
    reason = "invalid_json"


class SchemaViolation(InvalidInput):
    reason = "schema_violation"


class KeyMismatch(InvalidInput):
    reason = "key_mismatch"


class UnknownLead(InvalidInput):
    reason = "unknown_lead"


class InvalidPolicy(InvalidInput):
    reason = "invalid_policy"


class StalePolicy(InvalidInput):
    reason = "stale_policy_version"


# Keys under these fields are chosen by the sender and may be personal data (an e-mail as a key).
_FREE_KEYS = {"contact": {"name", "email", "phone"}, "attributes": set()}


def _field_path(loc: tuple[int | str, ...]) -> str | None:
    """Dotted path of the bad field, cut before any sender-chosen key that is not a known field."""
    if loc and loc[0] in _FREE_KEYS and (len(loc) < 2 or loc[1] not in _FREE_KEYS[str(loc[0])]):
        return str(loc[0])
    return ".".join(str(p) for p in loc if p != "[key]") or None


def from_validation(exc: ValidationError) -> InvalidInput:
    """Classify pydantic's error: broken JSON vs. a contract violation naming the first bad field."""
    first = exc.errors(include_url=False, include_input=False)[0]
    if first["type"] == "json_invalid":
        return InvalidJson(first["msg"])
    field = _field_path(first["loc"])
    count = exc.error_count()
    more = f" (+{count - 1} more)" if count > 1 else ""
    return SchemaViolation(f"{field or 'record'}: {first['msg']}{more}", field=field)
