"""Faust tables. Every table is keyed by what its agent's input topic is keyed by, so reads stay local.

Every changelog record carries a stamp header, `x-leadrelay-stamp: <generation>:<sequence>`: the
consumer-group generation its writer was in, and a per-process sequence (for humans reading the log).
One worker owns a partition per generation and generations only grow, so in a changelog partition
read in offset order the generations never go down, except for one kind of row: a row a worker
buffered before a freeze and flushed when it woke, after the group had evicted it and its successor
had written newer rows (docs/reliability.md, finding 1). Such a row belongs to an event its writer
never committed, so the successor handled that event again and wrote its own row for it. Recovery
therefore skips every row whose generation is below the highest generation already seen in its
partition (the partition's high mark, kept in a file beside its local store), and the owner
then writes the values it kept again, so the log also ends with them (compaction keeps the last row).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

log = logging.getLogger("leadrelay.tables")

STAMP_HEADER = "x-leadrelay-stamp"
_sequence = itertools.count(1)
SEP = "|"


def key(*parts: str) -> str:
    """Compound keys start with the pool (pool tables) or the lead (lead tables): co-partitioning."""
    return SEP.join(parts)


def stamp_of(headers: Any) -> tuple[int, int] | None:
    """(generation, sequence) from a record's headers (pairs or a mapping); None when not stamped."""
    items = headers.items() if isinstance(headers, dict) else (headers or ())
    for name, value in items:
        if name == STAMP_HEADER and value:
            generation, _, sequence = bytes(value).decode().partition(":")
            try:
                return int(generation), int(sequence or 0)
            except ValueError:
                return None
    return None


class StampedTable(faust.Table):  # type: ignore[misc]  # Faust's classes are untyped
    """A Faust table whose changelog rows are stamped and whose recovery skips late rows of evicted
    workers."""

    on_stale: Callable[[str], None] | None = None  # metrics hook: called with the table name

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._high: dict[int, int] = {}  # partition -> highest generation seen in its changelog
        self._stale: dict[int, set[Any]] = {}  # partition -> keys whose log ends with a skipped row
        # After a stall long enough for an eviction, rows this worker flushed late may sit after its
        # successor's, and Faust's "read up to" offsets would skip the successor's: not trusted until
        # the partition's changelog has been re-read from the start.
        self._distrusted_up_to: int | None = None
        self._retrusted: set[int] = set()

    # --- writing -----------------------------------------------------------------------------------
    def send_changelog(
        self, partition: int | None, key: Any, value: Any, key_serializer: Any = None, value_serializer: Any = None
    ) -> Any:
        generation = int(self.app.consumer_generation_id)
        fut = self.changelog_topic.send_soon(
            key=key,
            value=value,
            partition=partition,
            headers=[(STAMP_HEADER, f"{generation}:{next(_sequence)}".encode())],
            key_serializer=key_serializer if key_serializer is not None else self.key_serializer,
            value_serializer=value_serializer if value_serializer is not None else self.value_serializer,
            callback=self._on_changelog_sent,
            eager_partitioning=True,
        )
        written_to = fut.message.partition
        self._raise_high(written_to, generation)
        self._stale.get(written_to, set()).discard(key)
        return fut

    def _on_changelog_sent(self, fut: Any) -> None:
        stamp = stamp_of(fut.message.headers)
        if self._distrusted_up_to is not None and stamp is not None and stamp[0] <= self._distrusted_up_to:
            return  # a late row of the stalled generation: what precedes it may be missing locally
        super()._on_changelog_sent(fut)

    # --- high marks --------------------------------------------------------------------------------
    def high_mark(self, partition: int) -> int:
        if partition not in self._high:
            path = self._mark_file(partition)
            stored = path.read_text().strip() if path is not None and path.exists() else ""
            self._high[partition] = int(stored) if stored.isdigit() else 0
        return self._high[partition]

    def _raise_high(self, partition: int, generation: int) -> None:
        if generation <= self.high_mark(partition):
            return
        self._high[partition] = generation
        path = self._mark_file(partition)
        if path is not None and path.parent.exists():  # once per generation and partition: cheap
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(str(generation))
            os.replace(tmp, path)

    def _mark_file(self, partition: int) -> Path | None:
        """Beside the partition's RocksDB directory (not inside: Faust would read it as a table key).
        The memory store has no disk, and after a restart nothing to protect."""
        path_for = getattr(self.data, "partition_path", None)
        if path_for is None:
            return None
        db = Path(path_for(partition))
        return db.with_name(db.name + ".leadrelay-high")

    # --- recovery ----------------------------------------------------------------------------------
    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        super().apply_changelog_batch(self.newest(batch))

    def newest(self, batch: Iterable[Any]) -> list[Any]:
        """The batch without rows from a generation older than one already seen in their partition."""
        kept = []
        for event in batch:
            msg = event.message
            stamp = stamp_of(msg.headers)
            if stamp is None:
                kept.append(event)  # unstamped (written by an older release): log order, as Faust does
                continue
            high = self.high_mark(msg.partition)
            if stamp[0] < high:
                self._stale.setdefault(msg.partition, set()).add(event.key)
                if self.on_stale is not None:
                    self.on_stale(self.name)
                log.warning(
                    "skipped a late changelog row of generation %d (partition at %d): an evicted worker wrote it",
                    stamp[0],
                    high,
                    extra={"topic": msg.topic, "partition": msg.partition, "offset": msg.offset},
                )
                continue
            self._raise_high(msg.partition, stamp[0])
            kept.append(event)
        return kept

    def distrust(self, generation: int) -> None:
        """This worker stood still past its session timeout in `generation`: at its next recovery, read
        every changelog partition from the start."""
        self._distrusted_up_to = max(generation, self._distrusted_up_to or 0)
        self._retrusted.clear()

    def persisted_offset(self, tp: TP) -> int | None:
        if self._distrusted_up_to is not None and tp.partition not in self._retrusted:
            return None  # Faust's recovery then reads the changelog from its beginning
        offset: int | None = super().persisted_offset(tp)
        return offset

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        self._retrusted |= {tp.partition for tp in (*active_tps, *standby_tps)}
        for partition in sorted(tp.partition for tp in active_tps):
            # The owner writes the values it kept, so the log ends with them again (a standby's stale
            # keys wait until it owns the partition).
            for key in sorted(self._stale.pop(partition, set()), key=str):
                value = self.data.get(key)
                self.send_changelog(partition, key, value, value_serializer="raw" if value is None else None)


@dataclass(frozen=True)
class Tables:
    # route agent (pool-events, key = pool)
    reps: faust.Table[str, Any]  # pool|rep -> Rep dict
    loads: faust.Table[str, Any]  # pool|rep -> Load dict
    performance: faust.Table[str, Any]  # pool|rep -> {day: [won, lost, revenue]}
    ledger: faust.Table[str, Any]  # pool|lead -> LedgerEntry dict
    models: faust.Table[str, Any]  # pool|rep -> learned conversion model (won/lost per lead feature)
    pools: faust.Table[str, Any]  # pool -> PoolState dict (members, rotation cursor and virtual time, totals)
    policies: faust.Table[str, Any]  # pool -> policy dict (the running version)
    # match_deals agent (lead-events, key = lead_id)
    lead_index: faust.Table[str, Any]  # lead -> {"pool", "rep_id", "decision_id"}
    parked_deals: faust.Table[str, Any]  # lead -> DealUnrouted dict
    # ingest_roster agent (reps.roster, key = rep_id)
    rep_pools: faust.Table[str, Any]  # rep -> [pool, ...]

    def all(self) -> list[StampedTable]:
        return [getattr(self, f.name) for f in fields(self)]

    @classmethod
    def create(cls, app: faust.App, partitions: int, on_stale: Callable[[str], None] | None = None) -> Tables:
        def table(name: str) -> faust.Table[str, Any]:
            t = StampedTable(
                app,
                name=name,
                default=None,
                partitions=partitions,
                key_type=str,
                help=TABLES[name],
                beacon=app.tables.beacon,
            )
            t.on_stale = on_stale
            return app.tables.add(t)

        return cls(**{name.replace("-", "_"): table(name) for name in TABLES})


# Table name (as in its changelog topic `<app_id>-<name>-changelog`) -> what it holds.
TABLES = {
    "reps": "Rep profile per pool",
    "loads": "Open leads and value received per pool and rep",
    "performance": "Daily won/lost/revenue buckets per pool and rep",
    "ledger": "Decision and status per pool and lead",
    "models": "Learned conversion model per pool and rep",
    "pools": "Members, rotation state and totals per pool",
    "policies": "Running policy per pool",
    "lead-index": "Pool and owner of each decided lead",
    "parked-deals": "Deals waiting for their lead's decision",
    "rep-pools": "Pools each rep belongs to",
}


def changelog_topic(app_id: str, table: str) -> str:
    return f"{app_id}-{table}-changelog"
