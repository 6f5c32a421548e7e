"""PartitionStore: one task's table rows on local disk, a cache of its changelog partition.

Rows reach the store only after the Kafka transaction that wrote them to the changelog committed,
together with the changelog offset they came from (the checkpoint), in one RocksDB write batch. So the
store is always a prefix of the committed changelog, whatever way the process stops: recovery reads
the changelog from the checkpoint on (read_committed, so aborted rows of a fenced writer never count)
and a lost store just starts from the beginning. This is the whole recovery protocol; quix-streams'
`_should_apply_changelog` is the model. No clean-stop mark, no stamps, no event groups.

A batch sees its own writes first (`Overlay`), then the store. Each key written in a batch is sent to
the changelog once, with its last value.
"""

from __future__ import annotations

import heapq
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from rocksdict import Options, Rdict, WriteBatch

CHECKPOINT = b"\x00leadrelay:checkpoint"  # changelog offset of the last row applied; sorts before every key
APPLIED_AT = b"\x00leadrelay:applied-at"  # wall clock (s) of the last apply: a store too old is rebuilt
META = b"\x00leadrelay:"  # prefix of the two above: not rows
DELETED = object()
ABSENT = object()  # undo log: the key had no write in this batch


class PartitionStore:
    """Committed rows of one (table, partition), keyed by str, values JSON-able."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self._db = Rdict(str(path), options)

    @property
    def checkpoint(self) -> int | None:
        raw = self._db.get(CHECKPOINT)
        return None if raw is None else int(raw)

    def get(self, key: str) -> Any:
        raw = self._db.get(key.encode())
        return None if raw is None else orjson.loads(raw)

    def items(self, prefix: str = "", after: str | None = None) -> Iterator[tuple[str, Any]]:
        """Rows whose key starts with `prefix`, in key order (only keys after `after`, if given)."""
        start = prefix.encode()
        it = self._db.iter()
        it.seek(after.encode() + b"\x00" if after is not None and after >= prefix else start)
        while it.valid():
            raw_key = it.key()
            if not raw_key.startswith(start):
                break
            if not raw_key.startswith(META):
                yield raw_key.decode(), orjson.loads(it.value())
            it.next()
        del it

    def apply(self, rows: Mapping[str, bytes | None], offset: int) -> None:
        """Committed changelog rows (None: deleted) and the offset of the last one, atomically."""
        batch = WriteBatch(raw_mode=True)
        for key, value in rows.items():
            if value is None:
                batch.delete(key.encode())
            else:
                batch.put(key.encode(), value)
        batch.put(CHECKPOINT, str(offset).encode())
        batch.put(APPLIED_AT, str(time.time()).encode())
        self._db.write(batch)

    def age_seconds(self) -> float:
        """Seconds since rows were last applied (0 for a store that never had any)."""
        raw = self._db.get(APPLIED_AT)
        return 0.0 if raw is None else max(0.0, time.time() - float(raw))

    def wipe(self) -> None:
        """Start over from the changelog's beginning (the changelog is newer than, or unrelated to, us)."""
        self._db.close()
        Rdict.destroy(str(self.path))
        shutil.rmtree(self.path, ignore_errors=True)
        self.__init__(self.path)  # type: ignore[misc]

    def close(self) -> None:
        self._db.close()

    def destroy(self) -> None:
        """Close and delete from disk (a partition that moved to another worker)."""
        self._db.close()
        Rdict.destroy(str(self.path))
        shutil.rmtree(self.path, ignore_errors=True)


class Overlay:
    """A batch's view of a store: its own writes first. `changes()` are the rows to commit."""

    def __init__(self, store: PartitionStore) -> None:
        self.store = store
        self._writes: dict[str, Any] = {}
        self._journal: list[tuple[str, Any]] | None = None  # undo log since mark()

    def mark(self) -> None:
        """Start an undo log: rollback() takes the overlay back to this point (one record's writes)."""
        self._journal = []

    def rollback(self) -> None:
        for key, old in reversed(self._journal or []):
            if old is ABSENT:
                self._writes.pop(key, None)
            else:
                self._writes[key] = old
        self._journal = None

    def _note(self, key: str) -> None:
        if self._journal is not None:
            self._journal.append((key, self._writes.get(key, ABSENT)))

    def get(self, key: str) -> Any:
        value = self._writes.get(key, None)
        if value is None and key not in self._writes:
            return self.store.get(key)
        return None if value is DELETED else value

    def set(self, key: str, value: Any) -> None:
        self._note(key)
        self._writes[key] = value

    def delete(self, key: str) -> None:
        self._note(key)
        self._writes[key] = DELETED

    def items(self, prefix: str = "", after: str | None = None) -> Iterator[tuple[str, Any]]:
        seen = set()
        for key, value in self.store.items(prefix, after):
            seen.add(key)
            current = self._writes.get(key, value)
            if current is not DELETED:
                yield key, current
        for key, value in list(self._writes.items()):
            fresh = key not in seen and (after is None or key > after)
            if key.startswith(prefix) and fresh and value is not DELETED:
                yield key, value

    def ordered(self, prefix: str, limit: int) -> list[tuple[str, Any]]:
        """Up to `limit` rows whose key starts with `prefix`, in key order over committed rows and this
        batch's own writes together (items() yields the batch's new rows after the committed ones)."""
        pending = sorted((k, v) for k, v in self._writes.items() if k.startswith(prefix))
        committed = ((k, v) for k, v in self.store.items(prefix) if k not in self._writes)
        out: list[tuple[str, Any]] = []
        for k, v in heapq.merge(committed, pending, key=lambda kv: kv[0]):
            if v is DELETED:
                continue
            out.append((k, v))
            if len(out) == limit:
                break
        return out

    def changes(self) -> dict[str, bytes | None]:
        return {k: None if v is DELETED else orjson.dumps(v) for k, v in self._writes.items()}

    def clear(self) -> None:
        self._writes.clear()
        self._journal = None
