"""How a changelog partition is read back into a table: the rules recovery (streams/tables.py) and the
verifier (streams/verify.py) share. Pure: no Faust, no Kafka client.

Stamps. Every row carries `x-leadrelay-stamp: <epoch>:<generation>:<sequence>`, the writer's group
generation (docs/architecture.md, "Stamped changelogs"). A row stamped below the partition's high mark
while its key already has a newer row is a late row of an evicted worker and is skipped.

Event groups. One event can write several rows (a decision writes its ledger entry, the rep's load and
the pool's rotation state). Kafka delivers the rows of one partition in order, but a worker killed or
frozen part-way through delivering them leaves only the first few in the log, and a successor that
applied those would decide the event again from half-updated state: a different rep, or a load short by
one (docs/reliability.md, finding 7). So an agent writes all of one event's rows to one table (one
changelog partition), each with `x-leadrelay-event: <group>`, and then a terminator row under the key
`END_KEY_PREFIX<epoch>:<generation>` naming the group. Reading back, a group's rows are applied together
once the group is known to be complete:

- its terminator arrives, or
- the same writer (same stamp) wrote a later row: rows of one producer and partition arrive in order, so
  everything before it was delivered, terminator included (compaction keeps only the newest terminator
  per stamp, so older groups of a stamp usually have none left);

and it is dropped, as if the event never happened, when a different writer's row follows it or the log
ends with it on a partition this worker now owns: its event was not committed (Faust flushes the
producer before committing offsets), so the new owner handles it again, from the state before it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson

STAMP_HEADER = "x-leadrelay-stamp"
GROUP_HEADER = "x-leadrelay-event"
END_KEY_PREFIX = "\x00leadrelay-end|"  # cannot collide with a table key: those start with printable text
Stamp = tuple[int, int]  # (epoch, generation), compared as a tuple
GroupId = tuple[Stamp, int]

T = TypeVar("T")


def _header(headers: Any, name: str) -> bytes | None:
    items = headers.items() if isinstance(headers, dict) else (headers or ())
    for key, value in items:
        if key == name and value:
            return bytes(value)
    return None


def stamp_of(headers: Any) -> Stamp | None:
    """(epoch, generation) from a record's headers (pairs or a mapping); None when not stamped."""
    value = _header(headers, STAMP_HEADER)
    if value is None:
        return None
    try:
        parts = [int(p) for p in value.decode().split(":")]
    except (ValueError, UnicodeDecodeError):
        return None
    if len(parts) >= 3:
        return parts[0], parts[1]
    return (parts[0], parts[0]) if parts else None  # "<generation>:<sequence>"


def group_of(headers: Any) -> int | None:
    value = _header(headers, GROUP_HEADER)
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def end_key(stamp: Stamp) -> str:
    """One terminator key per writer stamp: compaction keeps exactly the one after its last event."""
    return f"{END_KEY_PREFIX}{stamp[0]}:{stamp[1]}"


def is_end_key(key: Any) -> bool:
    return isinstance(key, str) and key.startswith(END_KEY_PREFIX)


@dataclass
class _Pending(Generic[T]):
    gid: GroupId
    rows: list[T] = field(default_factory=list)


class EventGate(Generic[T]):
    """Fed one partition's rows in offset order, releases them (in that order) once their event is known
    complete; see the module docstring for the rules. Keeps what it holds between feeds, so a group may
    span Faust's recovery batches and a standby's reads."""

    def __init__(self) -> None:
        self._pending: dict[int, _Pending[T]] = {}
        self._abandoned: dict[int, set[GroupId]] = {}
        self.dropped = 0  # data rows of cut-short events, for metrics and tests

    def feed(self, partition: int, stamp: Stamp | None, group: int | None, end: bool, row: T) -> list[T]:
        out: list[T] = []
        gid = (stamp, group) if stamp is not None and group is not None else None
        if gid is not None and gid in self._abandoned.get(partition, ()):
            self.dropped += 0 if end else 1  # the rest of a cut-short event, delivered late
            return out
        pending = self._pending.get(partition)
        if pending is not None:
            if gid == pending.gid:
                if end:
                    out.extend(self._pending.pop(partition).rows)
                else:
                    pending.rows.append(row)
                return out
            del self._pending[partition]
            if stamp is not None and stamp == pending.gid[0]:
                out.extend(pending.rows)  # the same writer went on: the pending event was delivered whole
            else:
                self._abandon(partition, pending)  # another writer took over before it was complete
        if end:
            return out  # a terminator whose rows were released already (or compacted away)
        if gid is None:
            out.append(row)  # not written by an event (or by an older release): stands alone
        else:
            self._pending[partition] = _Pending(gid, [row])
        return out

    def close(self, partition: int) -> list[T]:
        """The log ends here and this worker writes the partition from now on: an event still pending
        was cut short. Returns its rows (not to be applied)."""
        pending = self._pending.pop(partition, None)
        if pending is None:
            return []
        self._abandon(partition, pending)
        return pending.rows

    def reset(self) -> None:
        """A new recovery pass re-reads from the last applied offset: held rows come again."""
        self._pending.clear()

    def holding(self, partition: int) -> int:
        pending = self._pending.get(partition)
        return 0 if pending is None else len(pending.rows)

    def _abandon(self, partition: int, pending: _Pending[T]) -> None:
        self._abandoned.setdefault(partition, set()).add(pending.gid)
        self.dropped += len(pending.rows)


def read_table(records: Iterable[Any], decode_key: Any = None) -> dict[str, bytes]:
    """A table as its changelog says, the way recovery builds it from scratch: per partition in offset
    order, through the event gate (a log ending in a cut-short event counts as ending before it),
    skipping a late row (stamped below one already seen there) when its key has a newer row; the newest
    row per key wins, by timestamp between partitions (a key written to two partitions, e.g. by a
    foreign producer); tombstones remove the key. Records need partition, offset, key (bytes), value,
    headers and timestamp."""
    gate: EventGate[tuple[str, Any]] = EventGate()
    decode = decode_key or _decode_key
    newest: dict[str, dict[int, Any]] = {}
    high: dict[int, Stamp] = {}
    by_partition: dict[int, list[Any]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_partition.setdefault(r.partition, []).append(r)
    for partition, rows in by_partition.items():
        for r in rows:
            key = decode(r.key)
            headers = getattr(r, "headers", None)
            stamp = stamp_of(headers)
            for k, rec in gate.feed(partition, stamp, group_of(headers), is_end_key(key), (key, r)):
                rec_stamp = stamp_of(getattr(rec, "headers", None))
                if rec_stamp is not None:
                    if rec_stamp < high.get(partition, (0, 0)) and partition in newest.get(k, {}):
                        continue
                    high[partition] = max(rec_stamp, high.get(partition, (0, 0)))
                newest.setdefault(k, {})[partition] = rec
        gate.close(partition)
    out: dict[str, bytes] = {}
    for key, per_partition in newest.items():
        last = max(per_partition.values(), key=lambda r: (r.timestamp, r.partition))
        if last.value is not None:
            out[key] = last.value
    return out


def _decode_key(raw: bytes) -> str:
    text = raw.decode()
    return str(orjson.loads(text)) if text.startswith('"') else text


def namespace(table: dict[str, bytes], name: str, sep: str = "|") -> dict[str, bytes]:
    """The rows of one kind (`ledger`, `loads`, ...) of a shared table, keys without the kind."""
    prefix = name + sep
    return {k[len(prefix) :]: v for k, v in table.items() if k.startswith(prefix)}
