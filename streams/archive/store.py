"""The archive database: SQLite (embedded, the default) or PostgreSQL (production), one SQL for both.

Every write is an upsert keyed by the table's key column, in one database transaction per batch: writing a
batch twice (a restart re-reads what was written but not yet committed to Kafka) leaves the same rows.
Timestamps are TIMESTAMPTZ in PostgreSQL and fixed-width UTC ISO 8601 text in SQLite (so text order is time
order); `record` keeps the record exactly as it was read (JSON in PostgreSQL: queryable with ->, ->>).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

from streams.archive.tables import ARCHIVED, DECISIONS, ArchivedTopic, ColumnType, parse_time
from streams.settings import SQLITE_PREFIX, Settings

log = logging.getLogger("leadrelay.archive")
Kind = Literal["sqlite", "postgresql"]
# Kept with every row: where the record was read (its newest copy) and when it was first archived.
SOURCE_COLUMNS: tuple[tuple[str, ColumnType], ...] = (
    ("source_topic", "text"),
    ("source_partition", "int"),
    ("source_offset", "int"),
    ("archived_at", "time"),
)
_TYPES: dict[Kind, dict[ColumnType | Literal["json"], str]] = {
    "sqlite": {"text": "TEXT", "int": "INTEGER", "float": "REAL", "time": "TEXT", "json": "TEXT"},
    "postgresql": {"text": "TEXT", "int": "BIGINT", "float": "DOUBLE PRECISION", "time": "TIMESTAMPTZ", "json": "JSON"},
}


@dataclass(frozen=True)
class Row:
    """One record to archive: its table, queryable values, the record's text and where it was read."""

    spec: ArchivedTopic
    values: dict[str, Any]
    record: str
    topic: str
    partition: int
    offset: int


class _Connection(Protocol):
    def cursor(self) -> Any: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


def redact(url: str) -> str:
    """The URL without a password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class ArchiveStore:
    """A connection to the archive database and the SQL of the archived tables."""

    def __init__(self, url: str, password: str | None = None, specs: Sequence[ArchivedTopic] = ARCHIVED) -> None:
        self.url = url
        self.kind: Kind = "sqlite" if url.startswith(SQLITE_PREFIX) else "postgresql"
        self.password = password
        self.specs = tuple(specs)
        self._ph = "?" if self.kind == "sqlite" else "%s"
        self._conn: _Connection | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ArchiveStore:
        password = settings.archive_password.get_secret_value() if settings.archive_password else None
        return cls(settings.archive_url, password)

    # --- connection ---------------------------------------------------------------------------------

    def connect(self) -> _Connection:
        if self._conn is not None:
            return self._conn
        if self.kind == "sqlite":
            path = Path(self.url[len(SQLITE_PREFIX) :])
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
            try:
                conn.execute("PRAGMA journal_mode=WAL")  # `export` reads while the archive writes
                conn.execute("PRAGMA synchronous=FULL")  # committed means on disk: offsets move only after it
            except BaseException:
                conn.close()  # not a database, or locked: no connection left open behind the error
                raise
            self._conn = conn
        else:
            import psycopg

            kwargs: dict[str, Any] = {"password": self.password} if self.password else {}
            self._conn = psycopg.connect(self.url, connect_timeout=10, **kwargs)
        self._ensure_schema(self._conn)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def reset(self) -> None:
        """After a failed write: drop the connection (it may be broken); the next call reconnects."""
        try:
            if self._conn is not None:
                self._conn.rollback()
        except Exception:  # noqa: S110 - a broken connection cannot roll back; closing it is enough
            pass
        self.close()

    def _ensure_schema(self, conn: _Connection) -> None:
        types = _TYPES[self.kind]
        cur = conn.cursor()
        for spec in self.specs:
            cols = [f"{spec.key.name} {types[spec.key.type]} PRIMARY KEY"]
            cols += [f"{c.name} {types[c.type]}" for c in spec.columns]
            cols += [f"{name} {types[kind]}" for name, kind in SOURCE_COLUMNS]
            cols.append(f"record {types['json']} NOT NULL")
            cur.execute(f"CREATE TABLE IF NOT EXISTS {spec.table} ({', '.join(cols)})")
            indexed = {spec.time, "lead_id", "pool", "rep_id"} & {c.name for c in spec.columns}
            for column in sorted(indexed):
                cur.execute(f"CREATE INDEX IF NOT EXISTS {spec.table}_{column} ON {spec.table} ({column})")
        conn.commit()

    # --- writing ------------------------------------------------------------------------------------

    def _db_value(self, kind: ColumnType, value: Any) -> Any:
        if kind == "time" and value is not None and self.kind == "sqlite":
            return value.astimezone(UTC).isoformat(timespec="microseconds")
        return value

    def _upsert_sql(self, spec: ArchivedTopic) -> str:
        names = [c.name for c in spec.all_columns] + [n for n, _ in SOURCE_COLUMNS] + ["record"]
        updated = [n for n in names if n not in (spec.key.name, "archived_at")]
        values = ", ".join([self._ph] * len(names))
        sets = ", ".join(f"{n} = excluded.{n}" for n in updated)
        return (
            f"INSERT INTO {spec.table} ({', '.join(names)}) VALUES ({values}) "
            f"ON CONFLICT ({spec.key.name}) DO UPDATE SET {sets}"
        )

    def upsert(self, rows: Iterable[Row], now: datetime | None = None) -> dict[str, int]:
        """Write rows in one transaction; return rows written per table. Raises on any database error
        (nothing of the batch is then kept)."""
        archived_at = now or datetime.now(UTC)
        by_spec: dict[str, tuple[ArchivedTopic, dict[str, Row]]] = {}
        for row in rows:  # the newest copy of a key in a batch wins, as it would across batches
            by_spec.setdefault(row.spec.table, (row.spec, {}))[1][row.values[row.spec.key.name]] = row
        conn = self.connect()
        cur = conn.cursor()
        written: dict[str, int] = {}
        try:
            for table, (spec, keyed) in by_spec.items():
                params = [
                    [self._db_value(c.type, r.values[c.name]) for c in spec.all_columns]
                    + [r.topic, r.partition, r.offset, self._db_value("time", archived_at), r.record]
                    for r in keyed.values()
                ]
                cur.executemany(self._upsert_sql(spec), params)
                written[table] = len(params)
            conn.commit()
        except BaseException:
            self.reset()
            raise
        return written

    # --- reading ------------------------------------------------------------------------------------

    def columns(self, spec: ArchivedTopic) -> list[tuple[str, ColumnType | Literal["json"]]]:
        """The exported columns with their types, in order."""
        return [(c.name, c.type) for c in spec.all_columns] + list(SOURCE_COLUMNS) + [("record", "json")]

    def select(
        self,
        spec: ArchivedTopic,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        pool: str | None = None,
        rep: str | None = None,
    ) -> list[tuple[Any, ...]]:
        """Rows with since <= time < until, of a pool and a rep, oldest first (values typed as in columns())."""
        where: list[str] = []
        params: list[Any] = []
        ph = self._ph
        if since is not None:
            where.append(f"t.{spec.time} >= {ph}")
            params.append(self._db_value("time", since))
        if until is not None:
            where.append(f"t.{spec.time} < {ph}")
            params.append(self._db_value("time", until))
        if pool is not None:
            if spec.via_lead:
                where.append(
                    f"(t.pool = {ph} OR (t.pool IS NULL AND t.lead_id IN "
                    f"(SELECT d.lead_id FROM {DECISIONS.table} d WHERE d.pool = {ph})))"
                )
                params += [pool, pool]
            else:
                where.append(f"t.pool = {ph}")
                params.append(pool)
        if rep is not None:
            if spec.via_lead:  # the rep of the lead's latest decision (its current holder)
                where.append(
                    f"(t.rep_id = {ph} OR (t.rep_id IS NULL AND EXISTS (SELECT 1 FROM {DECISIONS.table} d "
                    f"WHERE d.lead_id = t.lead_id AND d.rep_id = {ph} AND d.attempt = "
                    f"(SELECT MAX(d2.attempt) FROM {DECISIONS.table} d2 WHERE d2.lead_id = t.lead_id))))"
                )
                params += [rep, rep]
            else:
                where.append(f"t.rep_id = {ph}")
                params.append(rep)
        columns = self.columns(spec)
        as_text = self.kind == "postgresql"  # the record's text as stored, not psycopg's parsed JSON
        names = ", ".join(f"t.{n}::text" if kind == "json" and as_text else f"t.{n}" for n, kind in columns)
        sql = f"SELECT {names} FROM {spec.table} t"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY t.{spec.time}, t.{spec.key.name}"
        cur = self.connect().cursor()
        cur.execute(sql, params)
        out = []
        for raw in cur.fetchall():
            out.append(
                tuple(
                    parse_time(v) if kind == "time" and v is not None else v
                    for v, (_, kind) in zip(raw, columns, strict=True)
                )
            )
        self.connect().commit()  # end the read transaction (PostgreSQL would otherwise hold it open)
        return out

    def count(self, table: str) -> int:
        cur = self.connect().cursor()
        cur.execute(f"SELECT COUNT(*) FROM {table}")
        (n,) = cur.fetchone()
        self.connect().commit()
        return int(n)
