"""What is archived: one ArchivedTopic per topic, its table, key and queryable columns (no Kafka, no database).

Adding a topic to the archive is one entry in ARCHIVED: the settings field naming the topic, the table, the
column that keys the upsert and the columns worth a query. Every record is also kept whole (`record`). An
entry whose settings field does not exist (a topic this version does not have yet) is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

ColumnType = Literal["text", "int", "float", "time"]


class InvalidRecord(ValueError):
    """A record the archive cannot key or whose column has the wrong type; named by field."""


@dataclass(frozen=True)
class Column:
    """A queryable column: `path` into the JSON record (dotted for nested fields)."""

    name: str
    type: ColumnType
    path: str = ""
    required: bool = False

    def value_of(self, record: Mapping[str, Any]) -> Any:
        value: Any = record
        for part in (self.path or self.name).split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if value is None:
            if self.required:
                raise InvalidRecord(f"{self.path or self.name}: missing")
            return None
        try:
            return _CONVERT[self.type](value)
        except (TypeError, ValueError, OverflowError):
            raise InvalidRecord(f"{self.path or self.name}: not a {self.type}") from None


def _text(value: Any) -> str:
    if isinstance(value, (dict, list)):
        raise TypeError("not a scalar")
    return str(value)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise TypeError("not a whole number")
    return int(value)


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("not a number")
    return float(value)


def parse_time(value: Any) -> datetime:
    """ISO 8601 text to an aware UTC datetime; without an offset it is UTC (as in the contracts)."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = datetime.fromisoformat(value)
    else:
        raise TypeError("not a timestamp")
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


_CONVERT: dict[ColumnType, Callable[[Any], Any]] = {"text": _text, "int": _int, "float": _float, "time": parse_time}


@dataclass(frozen=True)
class ArchivedTopic:
    """One topic kept in one table.

    `key`: the primary key, derived from the record so that a record read twice (a restart after a crash,
    a re-emitted decision) is written once. `time`: the column `export --since/--until` filters on.
    `pool`/`rep`: the columns `--pool`/`--rep` filter on; `via_lead`: a row without its own pool or rep
    matches through its lead's latest decision (deals name the lead, rarely the pool).
    """

    table: str
    topic_setting: str
    key: Column
    time: str
    columns: tuple[Column, ...]
    derive_key: Callable[[Mapping[str, Any]], str] | None = None
    via_lead: bool = False

    @property
    def all_columns(self) -> tuple[Column, ...]:
        return (self.key, *self.columns)

    def row(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The queryable values of a record (InvalidRecord when it cannot be keyed or typed)."""
        values = {c.name: c.value_of(record) for c in self.columns}
        if self.derive_key is not None:
            values[self.key.name] = self.derive_key(values)
        else:
            values[self.key.name] = self.key.value_of(record)
        return values


def _named_by(*names: str) -> Callable[[Mapping[str, Any]], str]:
    """A key for a record without an id of its own: its values joined by '@' (times to the microsecond),
    so the same record read twice is the same row."""

    def key(values: Mapping[str, Any]) -> str:
        parts = (
            v.isoformat(timespec="microseconds") if isinstance(v, datetime) else str(v) for v in map(values.get, names)
        )
        return "@".join(parts)

    return key


_deal_id = _named_by("lead_id", "closed_at")  # a deal: its lead and the moment it closed (a resent deal is the same)


DECISIONS = ArchivedTopic(
    table="decisions",
    topic_setting="topic_assignments",
    key=Column("decision_id", "text", required=True),
    time="decided_at",
    columns=(
        Column("lead_id", "text", required=True),
        Column("attempt", "int"),
        Column("pool", "text"),
        Column("rep_id", "text"),
        Column("reason", "text"),
        Column("strategy", "text", "explanation.strategy"),
        Column("variant", "text"),
        Column("experiment", "text"),
        Column("policy_id", "text"),
        Column("policy_version", "int"),
        Column("score", "float", "explanation.chosen.score"),
        Column("lead_created_at", "time"),
        Column("decided_at", "time", required=True),
    ),
)

DEALS = ArchivedTopic(
    table="deals",
    topic_setting="topic_deals_closed",
    key=Column("deal_id", "text"),
    time="closed_at",
    columns=(
        Column("lead_id", "text", required=True),
        Column("outcome", "text"),
        Column("amount", "float"),
        Column("currency", "text"),
        Column("pool", "text"),
        Column("rep_id", "text"),
        Column("closed_at", "time", required=True),
    ),
    derive_key=_deal_id,
    via_lead=True,
)


_activity_id = _named_by("lead_id", "occurred_at", "kind")


ACTIVITY = ArchivedTopic(
    table="activity",
    topic_setting="topic_lead_activity",
    key=Column("activity_id", "text"),
    time="occurred_at",
    columns=(
        Column("lead_id", "text", required=True),
        Column("kind", "text", required=True),
        Column("pool", "text"),
        Column("rep_id", "text"),
        Column("status", "text"),
        Column("occurred_at", "time", required=True),
    ),
    derive_key=_activity_id,
    via_lead=True,
)

# Claims are archived as their answers (leads.claim-results): the claim's fields and what became of it
# (`reason` is `claimed` for the accepted one).
CLAIMS = ArchivedTopic(
    table="claims",
    topic_setting="topic_claim_results",
    key=Column("claim_id", "text", required=True),
    time="answered_at",
    columns=(
        Column("lead_id", "text", required=True),
        Column("rep_id", "text", required=True),
        Column("pool", "text"),
        Column("reason", "text"),
        Column("decision_id", "text"),
        Column("attempt", "int"),
        Column("answered_at", "time", required=True),
    ),
)

ARCHIVED: tuple[ArchivedTopic, ...] = (DECISIONS, DEALS, ACTIVITY, CLAIMS)
BY_TABLE: dict[str, ArchivedTopic] = {spec.table: spec for spec in ARCHIVED}


def archived_topics(settings: object, specs: tuple[ArchivedTopic, ...] = ARCHIVED) -> dict[str, ArchivedTopic]:
    """Topic name -> what to do with it, for the topics these settings have."""
    return {
        getattr(settings, spec.topic_setting): spec for spec in specs if getattr(settings, spec.topic_setting, None)
    }
