"""`leads.dlq` contract: the headers that say where a refused record came from and why."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# The value of a dead letter is the refused record as it arrived (bytes, often not JSON), so the
# contract is its headers. Every reason the worker writes; streams/errors.py is the source, and
# tests/unit/test_published_schemas.py fails when the two lists differ.
DeadLetterReason = Literal[
    "invalid_input",
    "payload_too_large",
    "invalid_json",
    "schema_violation",
    "key_mismatch",
    "unknown_lead",
    "invalid_policy",
    "stale_policy_version",
    "internal_error",
]
DEAD_LETTER_VERSION: Literal[1] = 1

Integer = Annotated[str, StringConstraints(pattern=r"^-?[0-9]+$", max_length=20)]


class DeadLetterHeaders(BaseModel):
    """Headers of a `leads.dlq` record, each a UTF-8 string, as one object keyed by header name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source_topic: str = Field(alias="x-leadrelay-source-topic", description="Topic the record was read from")
    source_partition: Integer = Field(
        alias="x-leadrelay-source-partition", description="Its partition (-1 for a deal that waited for its lead)"
    )
    source_offset: Integer = Field(alias="x-leadrelay-source-offset", description="Its offset")
    reason: DeadLetterReason = Field(alias="x-leadrelay-reason", description="Why it was refused")
    error_class: str = Field(alias="x-leadrelay-error-class", description="Python class of the error")
    error_message: Annotated[str, StringConstraints(max_length=1000)] = Field(
        alias="x-leadrelay-error-message", description="The error; validation errors never quote the input value"
    )
    error_field: str | None = Field(
        None, alias="x-leadrelay-error-field", description="Dotted path of the offending field; absent when none"
    )
    truncated_from: Integer | None = Field(
        None,
        alias="x-leadrelay-truncated-from",
        description="Original size in bytes of a record cut to what one produce request can carry; absent otherwise",
    )
