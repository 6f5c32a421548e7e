"""Faust tables. Every table is keyed by what its agent's input topic is keyed by, so reads stay local.

One table per writing agent: everything one event changes goes to one changelog partition, so it can be
read back all or nothing (streams/changelog.py, "Event groups"). The kinds of row an agent keeps (the
route agent's ledger, loads, pools, ...) are namespaces of its table: `ledger|<pool>|<lead>`.

Every changelog row carries a stamp header, `x-leadrelay-stamp: <epoch>:<generation>:<sequence>`.
The generation is the writer's consumer-group generation; the epoch is the same number unless the
group's generations started over (a deleted or expired group restarts at 1): the owner of a partition
then writes with the epoch after the highest one in its log, so stamps keep growing. One worker owns a
partition per generation, so in a changelog partition read in offset order the stamps never go down,
except for one kind of row: a row a worker buffered before a freeze and flushed when it woke, after the
group had evicted it and its successor had written newer rows (docs/reliability.md, finding 1). Such a
row belongs to an event its writer never committed (Faust flushes before it commits), which the
successor handled again. Recovery therefore skips a row stamped below the partition's high mark (kept
in a file beside the local store) when its key has a newer row, and the owner then writes the kept
values again, so the log also ends with them. A late row whose key has no other row (compaction
removed the successor's) is applied: an old value is better than none.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from streams.changelog import (
    GROUP_HEADER,
    STAMP_HEADER,
    EventGate,
    Stamp,
    decode_key,
    end_key,
    group_of,
    is_end_key,
    stamp_of,
)

log = logging.getLogger("leadrelay.tables")

_sequence = itertools.count(1)
SEP = "|"


def key(*parts: str) -> str:
    """Compound keys start with the pool (pool tables) or the lead (lead tables): co-partitioning."""
    return SEP.join(parts)


class StampedTable(faust.Table):  # type: ignore[misc]  # Faust's classes are untyped
    """A Faust table whose changelog rows are stamped and whose recovery skips late rows of evicted
    workers."""

    on_stale: Callable[[str], None] | None = None  # metrics hook: called with the table name
    on_cut: Callable[[str, int], None] | None = None  # metrics hook: table name, rows of a cut-short event
    # Reads changelog records [start, end) of a partition, outside the consumer group (streams/gaps.py).
    read_range: Callable[[str, int, int, int], Awaitable[list[Any]]] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._high: dict[int, Stamp] = {}  # partition -> highest stamp seen in its changelog
        self._epoch: dict[int, int] = {}  # partition -> epoch this worker writes it with
        self._stale: dict[int, set[Any]] = {}  # partition -> keys whose log ends with a skipped row
        self._seen: dict[int, dict[Any, Stamp]] = {}  # partition -> key -> stamp of its kept row in this pass
        self._gate: EventGate[Any] = EventGate()  # recovery: an event's rows are applied all or none
        self._groups: dict[int, tuple[Stamp, int]] = {}  # partition -> (stamp, group) of the event being handled
        # After a stall long enough for an eviction, rows this worker flushed late may sit after its
        # successor's, and Faust's "read up to" offsets would skip the successor's: not trusted until
        # the partition's changelog has been re-read from the start (or membership is confirmed).
        self._distrusted_up_to: int | None = None
        self._retrusted: set[int] = set()
        self._own_last: dict[int, int] = {}  # partition -> offset of this worker's last acknowledged row
        self._overwrite: dict[int, tuple[int, set[Any]]] = {}  # partition -> (generation, keys to write again)
        self._overwriting: set[asyncio.Task[None]] = set()

    # --- writing -----------------------------------------------------------------------------------
    def stamp_for(self, partition: int) -> Stamp:
        generation = int(self.app.consumer_generation_id)
        return max(generation, self._epoch.get(partition, 0)), generation

    def send_changelog(
        self, partition: int | None, key: Any, value: Any, key_serializer: Any = None, value_serializer: Any = None
    ) -> Any:
        event = faust.current_event()
        if partition is None:  # tables here always write to the current event's partition
            partition = event.message.partition if event is not None else 0
        return self._send(partition, key, value, key_serializer, value_serializer, grouped=event is not None)

    def _send(
        self, partition: int, key: Any, value: Any, key_serializer: Any, value_serializer: Any, *, grouped: bool
    ) -> Any:
        sequence = next(_sequence)
        if grouped:  # the first row of an event opens its group; the rest join it, stamp and all
            stamp, group = self._groups.setdefault(partition, (self.stamp_for(partition), sequence))
        else:
            stamp, group = self.stamp_for(partition), None
        self._raise_high(partition, stamp)  # first: a failure here must not leave a row unaccounted
        self._stale.get(partition, set()).discard(key)
        return self._emit(partition, key, value, stamp, sequence, group, key_serializer, value_serializer)

    def _emit(
        self,
        partition: int,
        key: Any,
        value: Any,
        stamp: Stamp,
        sequence: int,
        group: int | None,
        key_serializer: Any = None,
        value_serializer: Any = None,
    ) -> Any:
        headers = [(STAMP_HEADER, f"{stamp[0]}:{stamp[1]}:{sequence}".encode())]
        if group is not None:
            headers.append((GROUP_HEADER, str(group).encode()))
        return self.changelog_topic.send_soon(
            key=key,
            value=value,
            partition=partition,
            headers=headers,
            key_serializer=key_serializer if key_serializer is not None else self.key_serializer,
            value_serializer=value_serializer if value_serializer is not None else self.value_serializer,
            callback=self._on_changelog_sent,
            eager_partitioning=True,
        )

    def _write_again(self, partition: int, key: Any) -> None:
        """This worker's value of `key` (a tombstone if it has none) as a row of its own, outside any event
        group: the log then ends with it."""
        value = self.data.get(key)
        self._send(partition, key, value, None, "raw" if value is None else None, grouped=False)

    def drop_event(self) -> None:
        """The event being handled was given up (its partition moved while this worker stood still):
        no terminator, so recovery leaves out whatever it wrote."""
        self._groups.clear()

    def end_event(self) -> None:
        """The event being handled wrote all it will: a terminator row per partition it wrote, after its
        rows (same producer, same partition: Kafka keeps them in order). Called before the event is
        acknowledged, so a committed event always has its terminator delivered (Faust flushes first)."""
        groups, self._groups = self._groups, {}
        for partition, (stamp, group) in sorted(groups.items()):
            self._emit(partition, end_key(stamp), {"event": group}, stamp, next(_sequence), group)
        self._write_queued()  # between events: never inside an event's group

    def _on_changelog_sent(self, fut: Any) -> None:
        stamp = stamp_of(fut.message.headers)
        with contextlib.suppress(Exception):  # a failed send fails the producer (and Faust) anyway
            sent = fut.result()
            self._watch_own(sent.topic_partition.partition, sent.offset, stamp)
        if self._distrusted_up_to is not None and stamp is not None and stamp[1] <= self._distrusted_up_to:
            return  # a late row of the stalled generation: what precedes it may be missing locally
        super()._on_changelog_sent(fut)

    # --- another writer between this worker's rows ----------------------------------------------------
    def _watch_own(self, partition: int, offset: int, stamp: Stamp | None) -> None:
        """One producer's rows land in a partition in order, so a hole between two rows of this worker
        holds another writer's. Stamped below this worker's row, they are late rows of a worker evicted
        while frozen: compaction keeps a key's last row, which may be such a late one, so the owner
        writes those keys again (at the end of its next event of that partition). Stamped above, this
        worker is the one that was evicted: it writes nothing."""
        last = self._own_last.get(partition)
        self._own_last[partition] = offset if last is None else max(last, offset)
        if last is None or offset <= last + 1 or self.read_range is None or stamp is None:
            return
        generation = int(self.app.consumer_generation_id)
        task = asyncio.ensure_future(self._overwrite_foreign(partition, last + 1, offset, stamp, generation))
        self._overwriting.add(task)
        task.add_done_callback(self._overwriting.discard)

    async def _overwrite_foreign(self, partition: int, start: int, end: int, own: Stamp, generation: int) -> None:
        """Reads the other writer's rows and queues their keys; the agent writes them again at the end of
        its next event of that partition (`end_event`): never in the middle of an event's group, and
        read from that partition's own store."""
        assert self.read_range is not None
        topic = self.changelog_topic.get_topic_name()
        try:
            records = await self.read_range(topic, partition, start, end)
        except Exception as exc:  # recovery still skips the late rows; only the log's ending stays
            log.warning("could not read another writer's changelog rows: %r", exc, extra={"partition": partition})
            return
        stamps = [stamp_of(r.headers) for r in records]
        stood_still = self._distrusted_up_to is not None and own[1] <= self._distrusted_up_to
        if stood_still or any(st is not None and st > own for st in stamps):
            return  # this worker stood still and was replaced: it must not overwrite anything
        late = [r for r, st in zip(records, stamps, strict=True) if st is not None and st < own]
        keys = {k for r in late if not is_end_key(k := decode_key(r.key))}
        if not keys or int(self.app.consumer_generation_id) != generation or partition not in self._own_last:
            return  # nothing to write again, or the partition may have moved meanwhile
        log.warning(
            "%d late changelog rows of an evicted worker landed between this worker's: writing their %d keys again",
            len(late),
            len(keys),
            extra={"topic": topic, "partition": partition, "offset": start},
        )
        queued = self._overwrite.setdefault(partition, (generation, set()))
        if queued[0] == generation:
            queued[1].update(keys)
        else:
            self._overwrite[partition] = (generation, keys)

    def _write_queued(self) -> None:
        """At the end of an event: write again the queued keys of the event's partition, from its store."""
        event = faust.current_event()
        if event is None or event.message.partition not in self._overwrite:
            return
        partition = event.message.partition
        generation, keys = self._overwrite.pop(partition)
        if int(self.app.consumer_generation_id) != generation or partition not in self._own_last:
            return  # the partition changed hands since: its owner has its own values
        for key in sorted(keys, key=str):  # inside the event: data.get reads the event's partition's store
            if self.on_stale is not None:
                self.on_stale(self.name)
            self._write_again(partition, key)

    # --- high marks --------------------------------------------------------------------------------
    def high_mark(self, partition: int) -> Stamp:
        if partition not in self._high:
            self._high[partition] = (0, 0)
            path = self._mark_file(partition)
            try:
                if path is not None and path.exists():
                    self._high[partition] = stamp_of([(STAMP_HEADER, path.read_bytes().strip())]) or (0, 0)
            except OSError as exc:  # no mark: late rows are then only caught by their key's newer row
                log.warning("cannot read %s: %s", path, exc)
        return self._high[partition]

    def _raise_high(self, partition: int, stamp: Stamp) -> None:
        if stamp <= self.high_mark(partition):
            return
        self._high[partition] = stamp
        path = self._mark_file(partition)
        if path is None or not path.parent.exists():
            return
        try:  # once per generation and partition: cheap
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(f"{stamp[0]}:{stamp[1]}")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write %s: %s", path, exc)

    def _mark_file(self, partition: int) -> Path | None:
        """Beside the partition's RocksDB directory (not inside: Faust would read it as a table key).
        The memory store has no disk, and after a restart nothing to protect."""
        path_for = getattr(self.data, "partition_path", None)
        if path_for is None:
            return None
        db = Path(path_for(partition))
        return db.with_name(db.name + ".leadrelay-high")

    # --- recovery ----------------------------------------------------------------------------------
    async def on_rebalance(self, *args: Any, **kwargs: Any) -> None:
        # A new recovery pass starts. The event gate keeps what it holds: Faust resumes either from the
        # last applied offset (rows read again are ignored) or where it stopped reading (rows continue).
        self._seen.clear()
        self._own_last.clear()  # partitions may change hands: the next own row starts the watch again
        self._overwrite.clear()
        await super().on_rebalance(*args, **kwargs)

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        super().apply_changelog_batch(self.newest(self.complete(batch)))

    def complete(self, batch: Iterable[Any]) -> list[Any]:
        """The rows of events known to be complete, in log order; the rows of an event whose end has not
        been read yet are held (streams/changelog.py). Terminators are not table rows: never applied."""
        released: list[Any] = []
        for event in batch:
            msg = event.message
            if not self._full_pass(msg.partition):  # resumed from the store: its rows count as read
                self._gate.seed(msg.partition, self.high_mark(msg.partition))
            stamp, group, end = stamp_of(msg.headers), group_of(msg.headers), is_end_key(event.key)
            released += self._gate.feed(msg.partition, msg.offset, stamp, group, end, event)
            if stamp is not None:  # every stamp read counts for the epoch, also of rows left out
                self._raise_high(msg.partition, stamp)
            for late in self._gate.take_late():  # applied or not (newest), its owner writes the key again
                self._stale.setdefault(late.message.partition, set()).add(late.key)
        return released

    def _skipped_late(self, event: Any) -> None:
        msg = event.message
        self._stale.setdefault(msg.partition, set()).add(event.key)  # its owner writes the key again
        if self.on_stale is not None:
            self.on_stale(self.name)
        log.warning(
            "skipped a late changelog row stamped %s: an evicted worker wrote it after its successor",
            stamp_of(msg.headers),
            extra={"topic": msg.topic, "partition": msg.partition, "offset": msg.offset},
        )

    def newest(self, batch: Iterable[Any]) -> list[Any]:
        """The batch without late rows: stamped below their partition's high mark while their key has a
        newer row (kept earlier in this pass, or already in the local store when the pass continues it)."""
        kept = []
        for event in batch:
            msg = event.message
            stamp = stamp_of(msg.headers)
            if stamp is None:
                kept.append(event)  # unstamped (written by an older release): log order, as Faust does
                continue
            partition, high = msg.partition, self.high_mark(msg.partition)
            seen = self._seen.setdefault(partition, {})
            if stamp < high and self._has_newer(partition, event.key, seen, stamp):
                self._skipped_late(event)
                continue
            self._raise_high(partition, stamp)
            seen[event.key] = stamp
            kept.append(event)
        return kept

    def _has_newer(self, partition: int, key: Any, seen: dict[Any, Stamp], stamp: Stamp) -> bool:
        if key in seen:
            return seen[key] > stamp  # a row kept in this pass: newer only if stamped higher
        if self._full_pass(partition):
            return False  # the local store is what is being rebuilt: it proves nothing
        try:  # the store is as of before this pass, up to the high mark: taken as newer
            return self.data.get(key) is not None
        except Exception:  # a store that cannot answer: keep the row, as Faust would
            return False

    def _full_pass(self, partition: int) -> bool:
        return self._distrusted_up_to is not None and partition not in self._retrusted

    def distrust(self, generation: int) -> None:
        """This worker stood still past its session timeout in `generation`: unless its membership is
        confirmed first, read every changelog partition from the start at its next recovery."""
        self._distrusted_up_to = max(generation, self._distrusted_up_to or 0)
        self._retrusted.clear()

    def trust_again(self) -> None:
        """The group still had this worker after the stall: nobody else wrote its partitions."""
        self._distrusted_up_to = None
        self._retrusted.clear()

    def persisted_offset(self, tp: TP) -> int | None:
        if self._full_pass(tp.partition):
            self._gate.forget(tp.partition)
            return None  # Faust's recovery then reads the changelog from its beginning
        offset: int | None = super().persisted_offset(tp)
        return offset

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        self._retrusted |= {tp.partition for tp in (*active_tps, *standby_tps)}
        generation = int(self.app.consumer_generation_id)
        for partition in sorted(tp.partition for tp in active_tps):
            cut = self._gate.close(partition)
            if cut:  # its writer stopped part-way; the event was not committed and is handled again
                if self.on_cut is not None:
                    self.on_cut(self.name, len(cut))
                log.warning(
                    "left out %d changelog rows of an event whose writer stopped before writing all of it",
                    len(cut),
                    extra={"topic": cut[0].message.topic, "partition": partition, "offset": cut[0].message.offset},
                )
            # Writes from now on must stamp above everything in the log, even if the group's
            # generations started over.
            self._epoch[partition] = max(generation, self.high_mark(partition)[0] + 1)
            # The owner writes the values it kept, so the log ends with them again (a standby's stale
            # keys wait until it owns the partition).
            for key in sorted(self._stale.pop(partition, set()), key=str):
                self._write_again(partition, key)


class Namespace(MutableMapping[str, Any]):
    """One kind of row (`ledger`, `loads`, ...) in the table its agent shares between them: keys are
    stored as `<kind>|<key>`. Reads and writes go through the table (its changelog, its event groups)."""

    def __init__(self, table: Any, kind: str) -> None:
        self.table, self.kind, self._prefix = table, kind, kind + SEP

    def __getitem__(self, key: str) -> Any:
        return self.table[self._prefix + key]

    def get(self, key: str, default: Any = None) -> Any:
        value = self.table.get(self._prefix + key)
        return default if value is None else value

    def __setitem__(self, key: str, value: Any) -> None:
        self.table[self._prefix + key] = value

    def __delitem__(self, key: str) -> None:
        del self.table[self._prefix + key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.table.get(self._prefix + key) is not None

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self.items())

    def __len__(self) -> int:
        return sum(1 for _ in self.items())

    def items(self) -> Iterator[tuple[str, Any]]:  # type: ignore[override]  # one pass, no second lookup
        n = len(self._prefix)
        return ((k[n:], v) for k, v in self.table.items() if isinstance(k, str) and k.startswith(self._prefix))

    @property
    def data(self) -> Namespace:
        """The same kind in the table's local store (no changelog): for tests and tools."""
        return Namespace(self.table.data, self.kind)


@dataclass(frozen=True)
class Tables:
    # One table per writing agent (see the module docstring).
    route: StampedTable  # route agent (pool-events, key = pool): the kinds below
    match: StampedTable  # match_deals agent (lead-events, key = lead_id): lead-index, parked-deals
    rep_pools: StampedTable  # ingest_roster agent (reps.roster, key = rep_id): rep -> [pool, ...]
    reps: Namespace  # pool|rep -> Rep dict
    loads: Namespace  # pool|rep -> Load dict
    performance: Namespace  # pool|rep -> {day: [won, lost, revenue]}
    ledger: Namespace  # pool|lead -> LedgerEntry dict
    models: Namespace  # pool|rep -> learned conversion model (won/lost per lead feature)
    pools: Namespace  # pool -> PoolState dict (members, rotation cursor and virtual time, totals)
    policies: Namespace  # pool -> policy dict (the running version)
    lead_index: Namespace  # lead -> {"pool", "rep_id", "decision_id"}
    parked_deals: Namespace  # lead -> DealUnrouted dict

    def all(self) -> list[StampedTable]:
        return [self.route, self.match, self.rep_pools]

    def views(self) -> dict[str, Any]:
        """Every kind of row by name (`rep_pools` is a table of one kind)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("route", "match")}

    @classmethod
    def create(
        cls,
        app: faust.App,
        partitions: int,
        on_stale: Callable[[str], None] | None = None,
        on_cut: Callable[[str, int], None] | None = None,
        read_range: Callable[[str, int, int, int], Awaitable[list[Any]]] | None = None,
    ) -> Tables:
        def table(name: str) -> StampedTable:
            t = StampedTable(
                app,
                name=name,
                default=None,
                partitions=partitions,
                key_type=str,
                help=TABLES[name],
                beacon=app.tables.beacon,
            )
            t.on_stale, t.on_cut, t.read_range = on_stale, on_cut, read_range
            return app.tables.add(t)

        route, match = table("route"), table("match")
        kinds = {kind.replace("-", "_"): Namespace(route, kind) for kind in ROUTE_KINDS}
        kinds |= {kind.replace("-", "_"): Namespace(match, kind) for kind in MATCH_KINDS}
        return cls(route=route, match=match, rep_pools=table("rep-pools"), **kinds)


# Table name (as in its changelog topic `<app_id>-<name>-changelog`) -> what it holds.
TABLES = {
    "route": "Route agent state per pool: the kinds of ROUTE_KINDS",
    "match": "Deal matching state per lead: the kinds of MATCH_KINDS",
    "rep-pools": "Pools each rep belongs to",
}
# Kinds of row (key prefix `<kind>|`) -> what they hold.
ROUTE_KINDS = {
    "reps": "Rep profile per pool",
    "loads": "Open leads and value received per pool and rep",
    "performance": "Daily won/lost/revenue buckets per pool and rep",
    "ledger": "Decision and status per pool and lead",
    "models": "Learned conversion model per pool and rep",
    "pools": "Members, rotation state and totals per pool",
    "policies": "Running policy per pool",
}
MATCH_KINDS = {
    "lead-index": "Pool and owner of each decided lead",
    "parked-deals": "Deals waiting for their lead's decision",
}


def changelog_topic(app_id: str, table: str) -> str:
    return f"{app_id}-{table}-changelog"
