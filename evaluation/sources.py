"""Reading recorded topics for replay and report, without touching any consumer group.

A plain consumer with no group id: partitions are assigned by hand, nothing is committed, so the
worker's group (and any other) never sees this reader. It reads committed records only
(read_committed), like every leadrelay reader. A range is a time window (record timestamps, found
with offsets_for_times) or offsets per partition; records at or past the end are left out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafka.clients import READ_COMMITTED, partitions_of
from streams.kafka.security import client_kwargs
from streams.settings import Settings


@dataclass(frozen=True)
class Range:
    """Which records of a topic: [since, until) by timestamp and/or [start, end) by offset. Offsets are
    per partition; the key None applies to every partition without its own."""

    since: datetime | None = None
    until: datetime | None = None
    start: Mapping[int | None, int] = field(default_factory=dict)
    end: Mapping[int | None, int] = field(default_factory=dict)


EVERYTHING = Range()


def parse_offsets(values: list[str] | None) -> dict[int | None, int]:
    """["120", "2:40"] -> {None: 120, 2: 40}: an offset for every partition, or for one."""
    out: dict[int | None, int] = {}
    for value in values or []:
        part, _, offset = value.rpartition(":")
        try:
            out[int(part) if part else None] = int(offset)
        except ValueError:
            raise ValueError(f"expected OFFSET or PARTITION:OFFSET, got {value!r}") from None
        if out[int(part) if part else None] < 0:
            raise ValueError(f"offsets are 0 or more, got {value!r}")
    return out


def _pick(table: Mapping[int | None, int], partition: int) -> int | None:
    return table.get(partition, table.get(None))


async def _bounds(consumer: AIOKafkaConsumer, parts: list[TopicPartition], rng: Range) -> dict[Any, tuple[int, int]]:
    first = await consumer.beginning_offsets(parts)
    last = await consumer.end_offsets(parts)  # read_committed: the last stable offset
    since = until = {}
    if rng.since is not None:
        since = await consumer.offsets_for_times({tp: int(rng.since.timestamp() * 1000) for tp in parts})
    if rng.until is not None:
        until = await consumer.offsets_for_times({tp: int(rng.until.timestamp() * 1000) for tp in parts})
    out = {}
    for tp in parts:
        lo, hi = first[tp], last[tp]
        if rng.since is not None:
            found = since.get(tp)
            lo = max(lo, found.offset if found is not None else hi)
        if rng.until is not None:
            found = until.get(tp)
            hi = min(hi, found.offset if found is not None else hi)
        if (start := _pick(rng.start, tp.partition)) is not None:
            lo = max(lo, start)
        if (end := _pick(rng.end, tp.partition)) is not None:
            hi = min(hi, end)
        out[tp] = (lo, hi)
    return out


async def read_range(settings: Settings, topic: str, rng: Range = EVERYTHING, *, idle: float = 2.0) -> list[Any]:
    """The topic's committed records in the range, each partition in offset order ([] for a missing topic)."""
    parts = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
    if not parts:
        return []
    consumer = AIOKafkaConsumer(
        **client_kwargs(settings), group_id=None, enable_auto_commit=False, isolation_level=READ_COMMITTED
    )
    out: list[Any] = []
    try:
        await consumer.start()
        consumer.assign(parts)
        bounds = await _bounds(consumer, parts, rng)
        todo = []
        for tp, (lo, hi) in bounds.items():
            if lo < hi:
                consumer.seek(tp, lo)
                todo.append(tp)
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=int(idle * 1000))
            for tp, records in batch.items():
                out.extend(r for r in records if r.offset < bounds[tp][1])
            todo = [tp for tp in todo if await consumer.position(tp) < bounds[tp][1]]
        return out
    finally:
        await consumer.stop()


def read_topics(settings: Settings, topics: Mapping[str, tuple[str, Range]]) -> dict[str, list[Any]]:
    """Several topics at once: {name: (topic, range)} -> {name: records}."""

    async def gather() -> dict[str, list[Any]]:
        found = await asyncio.gather(*(read_range(settings, topic, rng) for topic, rng in topics.values()))
        return dict(zip(topics, found, strict=True))

    return asyncio.run(gather())
