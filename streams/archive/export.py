"""`leadrelay export`: archived rows of one table, by time range, pool and rep, to CSV or Parquet.

CSV: a header row, timestamps in ISO 8601 UTC, empty for null, the record as JSON text. Parquet: typed
columns (timestamps as UTC microseconds, ints as int64), the record as a string column.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from streams.archive.store import ArchiveStore
from streams.archive.tables import BY_TABLE

Format = Literal["csv", "parquet"]


@dataclass(frozen=True)
class Query:
    table: str = "decisions"
    since: datetime | None = None
    until: datetime | None = None
    pool: str | None = None
    rep: str | None = None


def format_of(out: str | None, explicit: str | None) -> Format:
    """--format, else the file's suffix (.parquet / .pq), else CSV."""
    if explicit:
        return "parquet" if explicit == "parquet" else "csv"
    if out and Path(out).suffix.lower() in (".parquet", ".pq"):
        return "parquet"
    return "csv"


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    return value


def write_csv(names: Sequence[str], rows: Sequence[tuple[Any, ...]], fh: TextIO) -> None:
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow([_cell(v) for v in row])


def write_parquet(columns: Sequence[tuple[str, str]], rows: Sequence[tuple[Any, ...]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {
        "text": pa.string(),
        "json": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "time": pa.timestamp("us", tz="UTC"),
    }
    schema = pa.schema([(name, types[kind]) for name, kind in columns])
    arrays = [pa.array([row[i] for row in rows], type=schema.field(i).type) for i in range(len(columns))]
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), path)


def export(store: ArchiveStore, query: Query, fmt: Format, out: str | None) -> int:
    """Write the rows; return how many. CSV goes to stdout when `out` is None or '-'."""
    spec = BY_TABLE[query.table]
    rows = store.select(spec, since=query.since, until=query.until, pool=query.pool, rep=query.rep)
    columns = store.columns(spec)
    if fmt == "parquet":
        if not out or out == "-":
            raise ValueError("Parquet needs a file: --out PATH")
        write_parquet(columns, rows, Path(out))
    elif not out or out == "-":
        buffer = io.StringIO()
        write_csv([n for n, _ in columns], rows, buffer)
        sys.stdout.write(buffer.getvalue())
    else:
        with Path(out).open("w", newline="", encoding="utf-8") as fh:
            write_csv([n for n, _ in columns], rows, fh)
    return len(rows)
