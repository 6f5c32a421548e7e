"""The consume-process-produce loop: one Kafka transaction per task and batch.

A *task* is one partition number of one stage (`leads`, `route`, `roster`, `policies`): the records of
its input partitions, the rows of its table partition and a transactional producer whose id names the
task (`<app_id>-<stage>-<partition>`). Per batch (what one fetch returned for the task), the records
are handled in offset order, and everything they produced (outputs, internal events, dead letters,
each touched table row once) is sent together with the input offsets in one transaction: it commits
or aborts as a whole, and read_committed consumers see nothing of it before it commits.

Who may write is decided by the broker. A worker taking over a task initialises its transactional id,
which aborts the previous owner's open transaction and fences its producer (a frozen or partitioned
zombie fails at its next send or commit and drops the task); only then does it read the committed
offsets and restore the table. aiokafka's send_offsets_to_transaction carries no group generation
(no KIP-447), hence one transactional id per task, the pattern Kafka Streams used before KIP-447.
Any failure of a batch's transaction (fenced, broker gone) aborts it and resets the task to its last
commit: store and caches as committed, input re-read from the committed offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import InvalidProducerEpoch, KafkaError, ProducerFenced
from aiokafka.structs import TopicPartition

from streams.kafka.changelog import decode_key, is_legacy_end_key
from streams.kafka.security import client_kwargs
from streams.runtime.store import Overlay, PartitionStore
from streams.settings import Settings

log = logging.getLogger("leadrelay.runtime")

MAX_RECORDS = 500  # per fetch
MAX_BACKLOG = 5000  # records waiting for a task's commit before its inputs are paused
STALE_STORE_SECONDS = 20 * 3600  # below the changelogs' delete.retention.ms (24 h by default)
RESTORE_IDLE_FETCHES = 30  # empty 1 s fetches in a row before a restore counts as stalled


@dataclass(frozen=True)
class Message:
    """A consumed record, shaped like a Faust event's message (timestamp in seconds)."""

    topic: str
    partition: int
    offset: int
    timestamp: float
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(frozen=True)
class Event:
    message: Message

    @property
    def key(self) -> bytes | None:
        return self.message.key

    @property
    def value(self) -> bytes | None:
        return self.message.value


Handler = Callable[[Any, Event], Awaitable[None]]  # (task context, event)
Housekeeper = Callable[[Any, datetime], Awaitable[None]]  # (task context, wall clock)


@dataclass(frozen=True)
class Stage:
    """One processing step: co-partitioned input topics, an optional table, a handler per record."""

    name: str
    topics: tuple[str, ...]
    handle: Handler
    table: str | None = None  # changelog `<app_id>-<table>-changelog`, partition = task partition
    housekeeping: Housekeeper | None = None  # runs in the task's own transaction, every interval
    on_reset: Callable[[], None] | None = None  # drop in-memory caches derived from the table
    # After a batch's records and housekeeping, with the task's context and partition: work a batch
    # needs once rather than per record, such as gauges derived from state the records changed.
    after_batch: Callable[[Any, int], None] | None = None


class Outbox:
    """What a batch sends, through the task's transactional producer (inside the open transaction)."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.pending: list[asyncio.Future[Any]] = []

    async def send(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        future = await self.producer.send(
            topic, key=key, value=value, headers=list(headers or ()), partition=partition, timestamp_ms=timestamp_ms
        )
        self.pending.append(future)


@dataclass
class Task:
    stage: Stage
    partition: int
    inputs: list[TopicPartition]
    store: PartitionStore | None
    overlay: Overlay | None
    producer: AIOKafkaProducer | None = None
    outbox: Outbox | None = None
    ctx: Any = None  # the handlers' context, bound to this task (built by Runtime.bind)
    ready: bool = False
    next_housekeeping: float = 0.0
    setup: asyncio.Task[None] | None = field(default=None, repr=False)
    # Records fetched while the task's previous batch commits; they make its next batch.
    backlog: list[Any] = field(default_factory=list, repr=False)
    committing: asyncio.Task[None] | None = field(default=None, repr=False)
    held: bool = False  # inputs paused because the backlog is full

    @property
    def busy(self) -> bool:
        return self.committing is not None and not self.committing.done()

    @property
    def name(self) -> str:
        return f"{self.stage.name}-{self.partition}"


@dataclass
class _Batch:
    """One task's handled batch, waiting for its commit."""

    task: Task
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    changes: dict[str, bytes | None] = field(default_factory=dict)
    changelog: str | None = None


class Runtime:
    """Runs the stages in one consumer group (`app_id`) with one transactional producer per task."""

    def __init__(
        self,
        settings: Settings,
        stages: Sequence[Stage],
        bind: Callable[[Task], Any],
        *,
        on_record: Callable[[str], None] | None = None,
        on_abort: Callable[[str], None] | None = None,
        on_assigned: Callable[[list[tuple[str, int]]], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.stages = {s.name: s for s in stages}
        self.by_topic = {topic: s for s in stages for topic in s.topics}
        self.bind = bind
        self.on_record = on_record
        self.on_abort = on_abort
        self.on_assigned = on_assigned
        self._current: tuple[str, int] | None = None  # (topic, partition) of the record being handled
        self.tasks: dict[tuple[str, int], Task] = {}
        self.stores: dict[tuple[str, int], PartitionStore] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.rebalancing = True
        self.joined = False
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()

    # --- state ----------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """In the group, no rebalance running, every task restored and consuming."""
        return self.joined and not self.rebalancing and all(t.ready for t in self.tasks.values())

    def current(self) -> tuple[str, int] | None:
        """(topic, partition) of the record being handled, for metrics that belong to a partition's owner."""
        return self._current

    def changelog(self, table: str) -> str:
        return f"{self.settings.app_id}-{table}-changelog"

    def _store(self, stage: Stage, partition: int) -> PartitionStore | None:
        # leads.new and deals.closed may have more partitions than the tables: their records there are
        # never home (streams/kafka/topics.home_partition) and only passed on, so such a task has no table.
        if stage.table is None or partition >= self.settings.partitions:
            return None
        key = (stage.name, partition)
        if key not in self.stores:
            path = Path(self.settings.data_dir) / "tables" / f"{stage.table}-{partition}.db"
            self.stores[key] = PartitionStore(path)
        return self.stores[key]

    # --- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        s = self.settings
        self.consumer = AIOKafkaConsumer(
            **client_kwargs(s),
            group_id=s.app_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_interval_ms=int(s.max_poll_interval_seconds * 1000),
            session_timeout_ms=int(s.session_timeout_seconds * 1000),
            heartbeat_interval_ms=int(min(3.0, s.session_timeout_seconds / 3) * 1000),
            fetch_max_wait_ms=50,
            # Range, not aiokafka's default round robin: a task's co-partitioned inputs (leads.new,
            # deals.closed, lead-events partition p) must land on one worker whatever the group's size.
            partition_assignment_strategy=(RangePartitionAssignor,),
        )
        self.consumer.subscribe(sorted(self.by_topic), listener=_Listener(self))
        await self.consumer.start()
        try:
            while not self._stopping.is_set():
                # While batches commit or wait, come back soon: a finished commit frees its task's backlog.
                waiting = any(t.busy or t.backlog for t in self.tasks.values())
                batch = await self.consumer.getmany(timeout_ms=5 if waiting else 100, max_records=MAX_RECORDS)
                async with self._lock:
                    self._take(batch)
                    await self._step()
        finally:
            self.joined = False  # not ready from here on, whatever the tasks said
            async with self._lock:
                await self._close_tasks(list(self.tasks.values()))
            await self.consumer.stop()
            for store in self.stores.values():
                store.close()
            self.stores.clear()
            self._stopped.set()

    async def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), timeout=30)

    def _take(self, batch: dict[TopicPartition, list[Any]]) -> None:
        """Fetched records join their task's backlog (a task not ready drops them: they are fetched
        again from the committed offset once it is)."""
        assert self.consumer is not None
        for tp, records in batch.items():
            task = self.tasks.get((self.by_topic[tp.topic].name, tp.partition))
            if task is None or not task.ready:
                continue
            task.backlog.extend(records)
            if len(task.backlog) >= MAX_BACKLOG and not task.held:
                task.held = True
                self.consumer.pause(*task.inputs)

    async def _step(self) -> None:
        """Every task that is not committing handles its backlog (and its housekeeping when due) as one
        batch, and its commit starts. Commits are round trips, so they run in the background: the loop
        goes on handling other tasks' records and fetching while they complete, and a task's next batch
        starts only after its previous one committed.

        At most one task's housekeeping per step: a sweep step reads thousands of rows, and tasks that
        start together fall due together, so eight at once held every record behind them for a quarter of
        a second (the p99 of the latency benchmark). The others run in the next steps, milliseconds later."""
        assert self.consumer is not None
        now = time.monotonic()
        housekept = False
        for task in list(self.tasks.values()):
            if not task.ready or task.busy:
                continue
            due = not housekept and task.stage.housekeeping is not None and now >= task.next_housekeeping
            housekept = housekept or due
            if not task.backlog and not due:
                continue
            records, task.backlog = task.backlog, []
            if task.held:
                task.held = False
                self.consumer.resume(*task.inputs)
            records.sort(key=lambda r: (r.topic, r.offset))  # per partition in offset order
            if due:
                task.next_housekeeping = now + self.settings.housekeeping_interval_seconds
            batch = await self._handle(task, records, now=datetime.now(UTC) if due else None)
            if batch is not None:
                task.committing = asyncio.create_task(self._commit(batch), name=f"commit-{task.name}")

    async def _handle(self, task: Task, records: Iterable[Any], *, now: datetime | None = None) -> _Batch | None:
        """Open the task's transaction and handle the records (and housekeeping, with `now`) in it."""
        assert task.producer is not None and task.outbox is not None
        batch = _Batch(task)
        try:
            await task.producer.begin_transaction()
            task.outbox.pending.clear()
            for record in records:
                event = Event(
                    Message(
                        record.topic,
                        record.partition,
                        record.offset,
                        (record.timestamp or time.time() * 1000) / 1000,
                        record.key,
                        record.value,
                        tuple(record.headers or ()),
                    )
                )
                self._current = (record.topic, record.partition)
                try:
                    await task.stage.handle(task.ctx, event)
                finally:
                    self._current = None
                batch.offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
                if self.on_record is not None:
                    self.on_record(record.topic)
            if now is not None and task.stage.housekeeping is not None:
                await task.stage.housekeeping(task.ctx, now)
            if task.stage.after_batch is not None:  # after housekeeping too: its timers decide as well
                self._current = (task.stage.topics[0], task.partition)  # what metrics note as the owner
                try:
                    task.stage.after_batch(task.ctx, task.partition)
                finally:
                    self._current = None
            batch.changes = task.overlay.changes() if task.overlay is not None else {}
            batch.changelog = self.changelog(task.stage.table) if task.stage.table else None
            for key, value in batch.changes.items():
                await task.outbox.send(batch.changelog or "", key=key.encode(), value=value, partition=task.partition)
        except Exception as exc:
            await self._failed(task, exc)
            return None
        return batch

    async def _commit(self, batch: _Batch) -> None:
        """The input offsets into the transaction, commit; then (only then) the rows into the store."""
        task = batch.task
        assert task.producer is not None and task.outbox is not None
        try:
            # A send that failed for good only fails its future; aiokafka would still commit the rest.
            for result in await asyncio.gather(*task.outbox.pending, return_exceptions=True):
                if isinstance(result, BaseException):
                    raise result
            if batch.offsets:
                await task.producer.send_offsets_to_transaction(batch.offsets, self.settings.app_id)
            await task.producer.commit_transaction()
        except Exception as exc:
            await self._failed(task, exc)
            return
        if batch.changes and task.store is not None:
            written = [f.result() for f in task.outbox.pending if f.done() and not f.exception()]
            last = max((m.offset for m in written if m.topic == batch.changelog), default=None)
            if last is not None:
                task.store.apply(batch.changes, last)
        if task.overlay is not None:
            task.overlay.clear()

    async def _failed(self, task: Task, exc: Exception) -> None:
        """Fenced, broker gone, or a bug outside the per-record guard: never half a batch."""
        expected = isinstance(exc, TimeoutError | KafkaError)
        log.warning(
            "task %s: transaction failed (%s): back to its last commit",
            task.name,
            type(exc).__name__,
            exc_info=not expected,
        )
        if self.on_abort is not None:
            self.on_abort(task.stage.name)
        # Fenced: another worker took the task over, and this one is about to learn it lost it (the
        # rebalance re-creates every task). Taking it back now would fence the rightful owner in turn;
        # only if no rebalance comes within two session timeouts does it try again.
        fenced = isinstance(exc, ProducerFenced | InvalidProducerEpoch)
        await self._reset(task, delay=2 * self.settings.session_timeout_seconds if fenced else 0.0)

    async def lag(self) -> dict[tuple[str, int], int]:
        """Committed-offset lag of every input partition of a ready task (end = last stable offset)."""
        consumer = self.consumer
        tps = [tp for t in self.tasks.values() if t.ready for tp in t.inputs]
        if consumer is None or not tps:
            return {}
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        lag = {}
        for tp in tps:
            committed = await consumer.committed(tp)
            position = committed if committed is not None else starts[tp]
            lag[(tp.topic, tp.partition)] = max(0, ends[tp] - position)
        return lag

    # --- task lifecycle -------------------------------------------------------------------------

    async def _reset(self, task: Task, *, delay: float = 0.0) -> None:
        """Back to the last commit: drop the batch's writes and caches, start the task over (after
        `delay` seconds, unless a rebalance re-creates it first)."""
        if task.overlay is not None:
            task.overlay.clear()
        if task.stage.on_reset is not None:
            task.stage.on_reset()
        task.ready = False
        task.backlog, task.held = [], False  # fetched again from the committed offsets
        await self._close_producer(task)
        assert self.consumer is not None
        self.consumer.pause(*task.inputs)
        task.setup = asyncio.create_task(self._setup(task, delay=delay), name=f"setup-{task.name}")

    async def _close_producer(self, task: Task) -> None:
        producer, task.producer, task.outbox = task.producer, None, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def _close_tasks(self, tasks: list[Task]) -> None:
        for task in tasks:  # batches in flight commit (or abort) first
            if task.committing is not None:
                with contextlib.suppress(BaseException):
                    await task.committing
        for task in tasks:
            if task.setup is not None and not task.setup.done():
                task.setup.cancel()
                with contextlib.suppress(BaseException):
                    await task.setup
            task.ready = False
            await self._close_producer(task)
            if task.stage.on_reset is not None:
                task.stage.on_reset()
            self.tasks.pop((task.stage.name, task.partition), None)

    def _assign(self, assigned: set[TopicPartition]) -> None:
        assert self.consumer is not None
        self.consumer.pause(*assigned)
        grouped: dict[tuple[str, int], list[TopicPartition]] = defaultdict(list)
        for tp in assigned:
            grouped[(self.by_topic[tp.topic].name, tp.partition)].append(tp)
        for (name, partition), inputs in sorted(grouped.items()):
            stage = self.stages[name]
            store = self._store(stage, partition)
            task = Task(stage, partition, sorted(inputs), store, Overlay(store) if store is not None else None)
            task.ctx = self.bind(task)
            self.tasks[(name, partition)] = task
            task.setup = asyncio.create_task(self._setup(task), name=f"setup-{task.name}")
        # A store of a partition that moved away is deleted, not kept for its return: by then the
        # changelog may have compacted away deletions the store would never see.
        for key in [k for k in self.stores if k not in self.tasks]:
            self.stores.pop(key).destroy()

    async def _setup(self, task: Task, *, delay: float = 0.0) -> None:
        """Take the task over: fence the previous owner, restore the table, then read from the committed
        offsets. Retried until it works or the task is revoked (a broker restart lands here)."""
        if delay:
            await asyncio.sleep(delay)
        while True:
            try:
                await self._take_over(task)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("task %s: take-over failed (%s: %s); retrying", task.name, type(exc).__name__, exc)
                await self._close_producer(task)
                await asyncio.sleep(1)

    async def _take_over(self, task: Task) -> None:
        s = self.settings
        producer = AIOKafkaProducer(
            **client_kwargs(s),
            transactional_id=f"{s.app_id}-{task.stage.name}-{task.partition}",
            acks="all",
            linger_ms=s.producer_linger_ms,
            request_timeout_ms=15000,
            # Brokers >= 3.6 verify that a partition joined the transaction (KIP-890) and answer a produce
            # that races the previous transaction's markers with NOT_ENOUGH_REPLICAS, which clients retry:
            # back-to-back transactions hit it all the time, so retry after 10 ms, not aiokafka's 100 ms.
            retry_backoff_ms=10,
        )
        try:
            await producer.start()  # init_transactions: the previous owner is fenced, its open transaction aborted
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        task.producer, task.outbox = producer, Outbox(producer)
        if task.store is not None and task.stage.table is not None:
            await restore(s, self.changelog(task.stage.table), task.partition, task.store)
        assert self.consumer is not None
        for tp in task.inputs:
            committed = await self.consumer.committed(tp)
            if committed is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, committed)
        if task.stage.on_reset is not None:
            task.stage.on_reset()
        task.ready = True
        self.consumer.resume(*task.inputs)
        log.info("task %s: ready", task.name)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.runtime.rebalancing = True
        async with self.runtime._lock:  # the batch in hand commits (or aborts) first
            await self.runtime._close_tasks(list(self.runtime.tasks.values()))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.runtime._assign(set(assigned))
        if self.runtime.on_assigned is not None:
            self.runtime.on_assigned([(tp.topic, tp.partition) for tp in assigned])
        self.runtime.joined = True
        self.runtime.rebalancing = False


async def restore(settings: Settings, topic: str, partition: int, store: PartitionStore) -> int:
    """Apply the committed changelog rows after the store's checkpoint; return how many were read."""
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(
        **client_kwargs(settings),
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",  # an out-of-range position restarts from the log start, never skips
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        begin = (await consumer.beginning_offsets([tp]))[tp]
        checkpoint = store.checkpoint
        if checkpoint is not None and checkpoint >= end:
            # The changelog is behind what we applied: it was deleted and created again. Start over.
            log.warning("changelog %s[%d] ends before the local store's checkpoint: rebuilding", topic, partition)
            store.wipe()
            checkpoint = None
        elif checkpoint is not None and store.age_seconds() > STALE_STORE_SECONDS:
            # Compaction drops deletions after delete.retention.ms (24 h by default): a store older than
            # that could keep rows whose deletion it never reads. Start over.
            log.info(
                "local store of %s[%d] is older than %d h: rebuilding", topic, partition, STALE_STORE_SECONDS // 3600
            )
            store.wipe()
            checkpoint = None
        start = begin if checkpoint is None else max(begin, checkpoint + 1)
        consumer.seek(tp, start)
        read, idle = 0, 0
        while (position := await consumer.position(tp)) < end:
            fetched = await consumer.getmany(tp, timeout_ms=1000, max_records=5000)
            idle = 0 if fetched or await consumer.position(tp) > position else idle + 1
            if idle >= RESTORE_IDLE_FETCHES:  # the log no longer reaches `end` (truncated): let setup retry
                raise RuntimeError(f"restore of {topic}[{partition}] stalled at {position} < {end}")
            rows: dict[str, bytes | None] = {}
            last = None
            for record in fetched.get(tp, []):
                last = record.offset
                key = decode_key(record.key)  # also a changelog the Faust runtime wrote (JSON-quoted keys)
                if not is_legacy_end_key(key):  # ... whose event-group terminators are not rows
                    rows[key] = record.value
            if last is not None:
                store.apply(rows, last)
                read += len(rows)
        return read
    finally:
        await consumer.stop()
