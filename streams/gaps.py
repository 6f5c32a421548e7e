"""Gap repair for internal topics: records the consumer skipped are re-read and handled, not lost.

Internal topics (pool events, lead events) are written by leadrelay without transactions, so their
offsets are contiguous: a jump in what an agent sees means records were never delivered to it. That
happened with Faust after a restart that rebuilt tables (docs/reliability.md): events were committed
past without being handled. The agent re-reads the missing range with a plain consumer and handles it
before the current event, which keeps the pool's order; handling is idempotent, so a range that was in
fact handled does no harm.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from streams.context import Context
from streams.dlq import send_dead_letter
from streams.errors import InvalidInput
from streams.security import client_kwargs

log = logging.getLogger("leadrelay.gaps")


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


async def fetch_range(ctx: Context, topic: str, partition: int, start: int, end: int) -> list[Any]:
    """Records [start, end) of one partition, read with a throwaway consumer (no group, no commits)."""
    consumer = AIOKafkaConsumer(**client_kwargs(ctx.settings), enable_auto_commit=False)
    tp = TopicPartition(topic, partition)
    found: list[Any] = []
    try:
        await consumer.start()
        consumer.assign([tp])
        consumer.seek(tp, start)
        while await consumer.position(tp) < end:
            for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
                found += [r for r in records if start <= r.offset < end]
    finally:
        await consumer.stop()
    return found


async def committed_offset(ctx: Context, topic: str, partition: int) -> int | None:
    """The group's committed offset for a partition (0 when it has none); None when it cannot be read."""
    tp = TopicPartition(topic, partition)
    admin = AIOKafkaAdminClient(**client_kwargs(ctx.settings))
    try:
        await admin.start()
        offsets = await admin.list_consumer_group_offsets(ctx.settings.app_id, partitions=[tp])
    except KafkaError as exc:  # no baseline then: gaps are still caught from the second record on
        log.warning("cannot read the committed offset of %s[%s]: %s", topic, partition, exc)
        return None
    finally:
        await admin.close()
    meta = offsets.get(tp)
    return meta.offset if meta is not None and meta.offset >= 0 else 0


async def repair(
    ctx: Context,
    tracker: OffsetTracker,
    event: Any,
    agent: str,
    handle_value: Callable[[bytes | None], Awaitable[None]],
) -> None:
    """Before `event` is handled: if records were skipped since the last one, re-read and handle them."""
    msg = event.message
    if not tracker.seen(msg.topic, msg.partition):
        # First record since this worker got the partition: it should be the group's committed offset.
        # A record before it that never arrives would otherwise go unnoticed (no baseline yet).
        start = await committed_offset(ctx, msg.topic, msg.partition)
        if start is not None and start <= msg.offset:
            tracker.seed(msg.topic, msg.partition, start)
    gap = tracker.gap(msg.topic, msg.partition, msg.offset)
    if gap is None:
        return
    start, end = gap
    log.error(
        "offsets %d-%d were skipped by the consumer; re-reading them",
        start,
        end - 1,
        extra={"agent": agent, "topic": msg.topic, "partition": msg.partition, "offset": msg.offset},
    )
    ctx.metrics.record_offset_gap(msg.topic, end - start)
    for record in await fetch_range(ctx, msg.topic, msg.partition, start, end):
        try:
            await handle_value(record.value)
        except Exception as exc:  # classified like any record: dead-lettered with its own origin
            if not isinstance(exc, InvalidInput):
                ctx.metrics.record_internal_error(agent)
                log.exception("unexpected error re-reading %s[%s]@%s", msg.topic, msg.partition, record.offset)
            origin = (msg.topic, msg.partition, record.offset)
            await send_dead_letter(ctx, key=record.key, value=record.value, origin=origin, error=exc, agent=agent)
