"""Gap repair: records the consumer skipped are re-read and handled by the agent, not lost.

Faust can deliver a record prefetched before a rebalance after it has sought back to the committed
offset (faust-streaming issues #216 and #221). It then books the offsets in between as a "gap",
counts them as acknowledged, drops them when they are fetched again and commits past them: records
that no agent ever handled. docs/reliability.md has the runs where that lost leads and deals.

Every agent (guarded_agent) therefore tracks the offsets it handled per partition. At a partition's
first record after an assignment the baseline is the group's committed offset; a jump from there on
names a range the consumer never delivered. The agent re-reads that range and handles it before the
current record, which keeps a partition's order; handling is idempotent, so a range that was in fact
handled does no harm.

Jumps are also normal: compaction (roster, policies, changelogs), transaction markers of a
transactional upstream producer and retention leave offsets without records. Those re-reads come
back empty and are not counted. To keep them cheap, one plain consumer per worker serves every
re-read and keeps what it fetched beyond a range (read-ahead), so scanning a compacted topic costs
about one fetch per 256 KiB, not one per gap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.consumer.fetcher import OffsetResetStrategy
from aiokafka.errors import KafkaError

from streams.security import client_kwargs
from streams.settings import Settings

log = logging.getLogger("leadrelay.gaps")

FETCH_TIMEOUT_MS = 1000
READ_TIMEOUT_SECONDS = 30.0
REWIND_TIMEOUT_SECONDS = 10.0
EARLIEST = OffsetResetStrategy.EARLIEST
ASSIGNOR_TOPIC_SUFFIX = "-__assignor-__leader"
READ_AHEAD_BYTES = 256 * 1024  # what one fetch may bring per partition, so at most what read-ahead keeps


class OffsetTracker:
    """The last offset handled per partition, since this worker was last assigned it."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, int], int] = {}

    def clear(self, *_: Any, **__: Any) -> None:
        self._last.clear()  # after a rebalance the next offset is whatever was committed: no baseline

    def seen(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self._last

    def seed(self, topic: str, partition: int, next_offset: int) -> None:
        """Baseline at (re)assignment: the group's committed offset is the next one to be handled."""
        self._last[(topic, partition)] = next_offset - 1

    def gap(self, topic: str, partition: int, offset: int) -> tuple[int, int] | None:
        """[start, end) of offsets skipped before `offset`, or None. Redeliveries are not gaps."""
        key = (topic, partition)
        last = self._last.get(key)
        self._last[key] = offset if last is None else max(last, offset)
        if last is not None and offset > last + 1:
            return last + 1, offset
        return None


@dataclass(frozen=True)
class ReplayedMessage:
    """What handlers and the DLQ read from a Faust message, for a record re-read by the gap reader."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None  # seconds, as Faust's Message.timestamp (aiokafka gives milliseconds)
    headers: tuple[tuple[str, bytes], ...] = ()
    generation_id: int | None = None  # of the event whose handling re-read it (streams/fence.py)


@dataclass(frozen=True)
class ReplayedEvent:
    """A re-read record shaped like the Faust event an agent would have been given."""

    message: ReplayedMessage

    @property
    def key(self) -> bytes | None:
        return self.message.key

    @property
    def value(self) -> bytes | None:
        return self.message.value

    @classmethod
    def of(cls, record: Any, generation_id: int | None = None) -> ReplayedEvent:
        ts = getattr(record, "timestamp", None)
        return cls(
            ReplayedMessage(
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                key=record.key,
                value=record.value,
                timestamp=ts / 1000 if ts is not None and ts >= 0 else None,
                headers=tuple(getattr(record, "headers", None) or ()),
                generation_id=generation_id,
            )
        )


class GapReader:
    """One plain consumer (no group, no commits) and one admin client per worker, started on first use.

    Agents share it, so reads take turns; they are rare (a rebalance) or cheap (served from read-ahead).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        # per partition: offset the read-ahead starts at, the records fetched from there, next position
        self._ahead: dict[TopicPartition, tuple[int, list[Any], int]] = {}
        self.reads = 0  # reads that went to the broker (the rest came from read-ahead)

    async def fetch(self, topic: str, partition: int, start: int, end: int) -> list[Any]:
        """Records [start, end) of one partition."""
        tp = TopicPartition(topic, partition)
        async with self._lock:
            cached = self._ahead.get(tp)
            if cached is not None and cached[0] <= start and cached[2] >= end:
                _, records, position = cached
            else:
                records, position = await self._read(tp, start, end)
            # Gaps on a partition move forward: keep only what a later range can still ask for.
            self._ahead[tp] = (end, [r for r in records if r.offset >= end], position)
        return [r for r in records if start <= r.offset < end]

    async def _read(self, tp: TopicPartition, start: int, end: int) -> tuple[list[Any], int]:
        consumer = await self._ensure_consumer()
        # Only this partition: anything else assigned would be prefetched from its log start for nothing.
        if consumer.assignment() != {tp}:
            consumer.assign([tp])
        consumer.seek(tp, start)
        self.reads += 1
        found: list[Any] = []
        deadline = asyncio.get_running_loop().time() + READ_TIMEOUT_SECONDS
        while (position := await consumer.position(tp)) < end:
            if asyncio.get_running_loop().time() > deadline:  # e.g. the range was truncated away
                raise TimeoutError(f"{tp.topic}[{tp.partition}] stayed at {position}, short of {end}")
            batch = await consumer.getmany(tp, timeout_ms=FETCH_TIMEOUT_MS)
            found += [r for records in batch.values() for r in records if r.offset >= start]
        return found, position

    async def committed(self, topic: str, partition: int) -> int | None:
        """The group's committed offset (0 when it has none); None when it cannot be read."""
        tp = TopicPartition(topic, partition)
        try:
            async with self._lock:
                admin = await self._ensure_admin()
                offsets = await admin.list_consumer_group_offsets(self.settings.app_id, partitions=[tp])
        except KafkaError as exc:  # no baseline then: gaps are still caught from the second record on
            log.warning("cannot read the committed offset of %s[%s]: %s", topic, partition, exc)
            return None
        meta = offsets.get(tp)
        return meta.offset if meta is not None and meta.offset >= 0 else 0

    async def _ensure_consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                **client_kwargs(self.settings),
                enable_auto_commit=False,
                # A range that starts before the log start (retention) is read from the log start.
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=READ_AHEAD_BYTES,
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def _ensure_admin(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(**client_kwargs(self.settings))
            await admin.start()
            self._admin = admin
        return self._admin

    def forget(self, *_: Any, **__: Any) -> None:
        """Drop the read-ahead (on a rebalance: the partitions may have gone to another worker)."""
        self._ahead.clear()

    async def close(self, *_: Any, **__: Any) -> None:
        consumer, admin, self._consumer, self._admin = self._consumer, self._admin, None, None
        self._ahead.clear()
        if consumer is not None:
            await consumer.stop()
        if admin is not None:
            await admin.close()


async def _with_reader(ctx: Any, use: Callable[[GapReader], Awaitable[Any]]) -> Any:
    """The worker's reader (Context.gaps), or a throwaway one for a caller without a worker."""
    reader = getattr(ctx, "gaps", None)
    if reader is not None:
        return await use(reader)
    reader = GapReader(ctx.settings)
    try:
        return await use(reader)
    finally:
        await reader.close()


async def fetch_range(ctx: Any, topic: str, partition: int, start: int, end: int) -> list[Any]:
    """Records [start, end) of one partition, read outside the worker's consumer group."""
    return await _with_reader(ctx, lambda reader: reader.fetch(topic, partition, start, end))


async def committed_offset(ctx: Any, topic: str, partition: int) -> int | None:
    """The group's committed offset for a partition (0 when it has none); None when it cannot be read."""
    return await _with_reader(ctx, lambda reader: reader.committed(topic, partition))


async def repair(
    ctx: Any,
    tracker: OffsetTracker,
    event: Any,
    agent: str,
    handle: Callable[[Any], Awaitable[object]],
) -> int:
    """Before `event` is handled: re-read the records skipped since the last one and `handle` each
    (as a ReplayedEvent). Returns how many records the consumer had skipped."""
    msg = event.message
    if not tracker.seen(msg.topic, msg.partition):
        # First record since this worker got the partition: it should be the group's committed offset.
        # A record before it that never arrives would otherwise go unnoticed (no baseline yet).
        try:
            start = await committed_offset(ctx, msg.topic, msg.partition)
        except Exception as exc:  # the baseline is a safety net: its absence must not stop the agent
            log.warning("no committed offset for %s[%s]: %r", msg.topic, msg.partition, exc)
            start = None
        if start is not None and start <= msg.offset:
            tracker.seed(msg.topic, msg.partition, start)
    gap = tracker.gap(msg.topic, msg.partition, msg.offset)
    if gap is None:
        return 0
    start, end = gap
    where = {"agent": agent, "topic": msg.topic, "partition": msg.partition, "offset": msg.offset}
    try:
        records = await fetch_range(ctx, msg.topic, msg.partition, start, end)
    except Exception:
        # Not the current record's fault, so it is still handled; the range stays visible as an error,
        # a metric (alerted on) and an I5 finding of `leadrelay verify`.
        ctx.metrics.record_offset_gap_unread(msg.topic)
        log.exception("could not re-read offsets %d-%d skipped by the consumer", start, end - 1, extra=where)
        return 0
    if not records:
        log.debug("offsets %d-%d hold no records (compaction or transaction markers)", start, end - 1, extra=where)
        return 0
    log.error(
        "%d records at offsets %d-%d were skipped by the consumer; handling them now",
        *(len(records), start, end - 1),
        extra=where,
    )
    ctx.metrics.record_offset_gap(msg.topic, len(records))
    for record in records:
        await handle(ReplayedEvent.of(record, getattr(msg, "generation_id", None)))
    return len(records)


def rewind_uncommitted(app: Any) -> None:
    """Close the other way a record is skipped: Faust resumes the stream partitions before it seeks
    them to their committed offsets (faust/tables/recovery.py), and aiokafka's `seek_to_committed`
    leaves a partition without a committed offset (or one of 0) wherever its fetcher got to. A record
    fetched in that window, while Faust's flow is still suspended, is dropped, and the partition goes
    on after it. The gap repair above notices only at the partition's next record, which on a quiet
    partition may be hours away. So after Faust's seek, such partitions are sought to their beginning
    (the `earliest` reset the app is configured with), before the flow resumes; if the record was
    delivered after all, it is handled twice, which is harmless."""
    wrapped: set[int] = set()

    def wrap(*_: Any, **__: Any) -> None:
        consumer = app.consumer
        if id(consumer) in wrapped:
            return
        wrapped.add(id(consumer))
        original = consumer.perform_seek

        async def perform_seek() -> None:
            await original()
            if app.conf.consumer_auto_offset_reset != "earliest":
                return
            changelogs = app.tables.changelog_topics
            fresh = [
                tp
                for tp in consumer.assignment()
                if tp.topic not in changelogs
                and not tp.topic.endswith(ASSIGNOR_TOPIC_SUFFIX)  # Faust's own, never committed
                and not consumer._committed_offset.get(tp)  # None or 0
            ]
            thread = getattr(consumer, "_thread", None)  # Faust runs aiokafka in a thread of its own
            if not fresh or thread is None:
                return
            partitions = [TopicPartition(tp.topic, tp.partition) for tp in fresh]

            async def reset() -> None:
                # In the consumer's thread. Asks for the reset and returns: waiting for it here would keep
                # the flow suspended longer, and a worker idle past max.poll.interval.ms during its
                # first recovery leaves the group (aiokafka's heartbeat does that without a word).
                aio = thread._ensure_consumer()
                assigned = aio.assignment()
                aio._fetcher.request_offset_reset([tp for tp in partitions if tp in assigned], EARLIEST)

            try:  # a safety net: it must never fail the recovery it runs in
                await asyncio.wait_for(thread.call_thread(reset), REWIND_TIMEOUT_SECONDS)
                log.debug("partitions without a committed offset reset to their beginning: %d", len(partitions))
            except Exception as exc:  # e.g. a rebalance took the partitions meanwhile
                log.warning("could not seek partitions without a committed offset to their beginning: %r", exc)

        consumer.perform_seek = perform_seek

    app.on_partitions_assigned.connect(wrap)
