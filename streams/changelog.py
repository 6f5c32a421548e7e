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

and it is dropped, as if the event never happened, when a newer writer's row follows it or the log
ends with it on a partition this worker now owns: its event was not committed (Faust flushes the
producer before committing offsets), so the new owner handles it again, from the state before it. Rows
stamped below one already read in their partition (late rows of an evicted worker, flushed after its
successor's) belong to an event that was handled again too: they never join or disturb a group, and
count only for keys that have no other row.

Two assumptions make dropping safe. The new owner writes the same rows when it handles the event again
(handlers are deterministic: route decides at the record's timestamp, not the wall clock), so a cut
row that compaction later uses to clean an older row of its key stands for a row that is written
anyway. And Kafka never cleans the active segment, where a cut-short tail sits until the next owner
writes after it.
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
    span Faust's recovery batches, a standby's reads and rebalances (a row read again is ignored).

    A stamped row below the highest stamp already read in its partition is late: an evicted worker
    flushed it after its successor's rows, for an event its successor handled again. Late rows never
    join or disturb the newer writer's pending event; they are passed on alone (and listed in `late`),
    and the reader applies one only where its key has no newer row: compaction may have removed the
    successor's row, and by determinism the late row holds the value the successor wrote.

    An event of writer A still pending when a newer writer's row arrives is suspended, not dropped: its
    terminator may have been compacted away, because A's late flush can end with a newer terminator
    under the same key. A later row of A (late) that belongs to a later event of A, or A's terminator
    for it, proves it was delivered whole: its rows are then passed on as late rows. Still suspended at
    the end of the log, it was cut short."""

    def __init__(self) -> None:
        self._pending: dict[int, _Pending[T]] = {}
        self._suspended: dict[int, dict[GroupId, list[T]]] = {}
        self._top: dict[int, Stamp] = {}  # highest stamp read per partition
        self._fed: dict[int, int] = {}  # last offset read per partition
        self.dropped = 0  # rows of cut-short events left out by close(), for tests
        self.late: list[T] = []  # late rows passed on since the caller last took them (see take_late)

    def seed(self, partition: int, stamp: Stamp) -> None:
        """Stamps read before this pass started (the reader resumes from its store's offset)."""
        if stamp > self._top.get(partition, (0, 0)):
            self._top[partition] = stamp

    def feed(self, partition: int, offset: int, stamp: Stamp | None, group: int | None, end: bool, row: T) -> list[T]:
        if offset <= self._fed.get(partition, -1):
            return []  # read again (a new recovery pass): already held, released or dropped
        self._fed[partition] = offset
        if stamp is not None and stamp < self._top.get(partition, (0, 0)):
            return self._late(partition, stamp, group, end, row)
        if stamp is not None:
            self._top[partition] = stamp
        gid = (stamp, group) if stamp is not None and group is not None else None
        out, taken = self._settle(partition, stamp, gid, end, row)
        if taken or end:
            return out  # (a terminator whose rows were released already, or compacted away)
        if gid is None:
            out.append(row)  # not written by an event (or by an older release): stands alone
        else:
            self._pending[partition] = _Pending(gid, [row])
        return out

    def _settle(
        self, partition: int, stamp: Stamp | None, gid: GroupId | None, end: bool, row: T
    ) -> tuple[list[T], bool]:
        """What a new row means for the pending event: (rows released, whether the row joined it)."""
        pending = self._pending.get(partition)
        if pending is None or stamp is None:
            return [], False
        if gid == pending.gid:
            if end:
                return self._pending.pop(partition).rows, True
            pending.rows.append(row)
            return [], True
        del self._pending[partition]
        if stamp == pending.gid[0]:
            return list(pending.rows), False  # the same writer went on: the pending event was delivered whole
        self._suspended.setdefault(partition, {})[pending.gid] = pending.rows  # a newer writer took over
        return [], False

    def _late(self, partition: int, stamp: Stamp, group: int | None, end: bool, row: T) -> list[T]:
        out: list[T] = []
        suspended = self._suspended.get(partition, {})
        if group is not None:
            # Events of this writer before `group` (and `group` itself, at its terminator) were delivered
            # whole: one producer writes a partition in order.
            for gid in sorted(g for g in suspended if g[0] == stamp and (g[1] < group or (end and g[1] == group))):
                out += suspended.pop(gid)
            if not end and (stamp, group) in suspended:
                suspended[(stamp, group)].append(row)  # the rest of a suspended event, delivered late
                self.late += out
                return out
        if not end:
            out.append(row)
        self.late += out
        return out

    def take_late(self) -> list[T]:
        """Late rows passed on since the last call. Compaction keeps the last row of a key, which may be a
        late one: the partition's owner writes the key's current value again after it."""
        late, self.late = self.late, []
        return late

    def close(self, partition: int) -> list[T]:
        """The log ends here and this worker writes the partition from now on: an event still pending or
        suspended was cut short. Returns its rows (not to be applied)."""
        cut: list[T] = []
        for rows in self._suspended.pop(partition, {}).values():
            cut += rows
        pending = self._pending.pop(partition, None)
        if pending is not None:
            cut += pending.rows
        self.dropped += len(cut)
        return cut

    def forget(self, partition: int) -> None:
        """The partition is read again from its start (its store is rebuilt)."""
        for state in (self._pending, self._suspended, self._top, self._fed):
            state.pop(partition, None)

    def holding(self, partition: int) -> int:
        pending = self._pending.get(partition)
        held = sum(len(rows) for rows in self._suspended.get(partition, {}).values())
        return held + (0 if pending is None else len(pending.rows))


def read_table(records: Iterable[Any], key_decoder: Any = None) -> dict[str, bytes]:
    """A table as its changelog says, the way recovery builds it from scratch: per partition in offset
    order, through the event gate (whole events only, a log ending in a cut-short event counts as
    ending before it, a late row of an evicted worker only where its key has no other row); the newest
    row per key wins, by timestamp
    between partitions (a key written to two partitions, e.g. by a foreign producer); tombstones remove
    the key. Records need partition, offset, key (bytes), value, headers and timestamp."""
    gate: EventGate[tuple[str, Any]] = EventGate()
    decode = key_decoder or decode_key
    newest: dict[str, dict[int, Any]] = {}
    stamps: dict[tuple[str, int], Stamp | None] = {}  # stamp of the row each key has, per partition
    by_partition: dict[int, list[Any]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_partition.setdefault(r.partition, []).append(r)
    for partition, rows in by_partition.items():
        for r in rows:
            key, headers = decode(r.key), getattr(r, "headers", None)
            fed = gate.feed(partition, r.offset, stamp_of(headers), group_of(headers), is_end_key(key), (key, r))
            late = {id(row) for row in gate.take_late()}
            for row in fed:
                k, rec = row
                stamp = stamp_of(getattr(rec, "headers", None))
                if id(row) in late and (stamps.get((k, partition)) or (0, 0)) > (stamp or (0, 0)):
                    continue  # a late row loses to a newer row its key already has
                newest.setdefault(k, {})[partition] = rec
                stamps[(k, partition)] = stamp
        gate.close(partition)
    out: dict[str, bytes] = {}
    for key, per_partition in newest.items():
        last = max(per_partition.values(), key=lambda r: (r.timestamp, r.partition))
        if last.value is not None:
            out[key] = last.value
    return out


def decode_key(raw: bytes) -> str:
    text = raw.decode()
    return str(orjson.loads(text)) if text.startswith('"') else text


def namespace(table: dict[str, bytes], name: str, sep: str = "|") -> dict[str, bytes]:
    """The rows of one kind (`ledger`, `loads`, ...) of a shared table, keys without the kind."""
    prefix = name + sep
    return {k[len(prefix) :]: v for k, v in table.items() if k.startswith(prefix)}
