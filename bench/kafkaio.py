"""Kafka plumbing of the worker benchmark: bulk produce, count a topic's records as they commit, read a
topic back, create topics. Every reader here is read_committed, so a transactional writer's output
counts only once its transaction committed (a plain writer's at once)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

Record = tuple[bytes | None, bytes | None]
Row = tuple[bytes | None, bytes | None, int | None, list[tuple[str, bytes]]]  # key, value, partition, headers


async def create_topics(bootstrap: str, names: Sequence[str], partitions: int = 4) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(n, partitions, 1) for n in names if n not in existing]
        if missing:
            await admin.create_topics(missing)
    finally:
        await admin.close()


async def produce_bulk(
    bootstrap: str,
    topic: str,
    records: Iterable[Record] | Iterable[Row],
) -> int:
    """(key, value) or (key, value, partition, headers) records as fast as the client goes: large
    batches, no per-record wait. Returns how many were sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    sent = 0
    try:
        for record in records:
            key, value, partition, headers = record if len(record) == 4 else (*record, None, None)
            await producer.send(topic, key=key, value=value, partition=partition, headers=headers or None)
            sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def committed_consumer(bootstrap: str, **kwargs: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        fetch_max_wait_ms=20,
        **kwargs,
    )


async def partitions(consumer: AIOKafkaConsumer, topic: str, timeout: float = 30.0) -> list[TopicPartition]:
    deadline = time.monotonic() + timeout
    while True:
        cluster = await consumer._client.fetch_all_metadata()  # the public API only knows subscribed topics
        found = cluster.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic} has no partitions after {timeout:.0f}s")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def reader(bootstrap: str, topic: str, *, from_end: bool = False, **kwargs: Any) -> AsyncIterator[Any]:
    """A read_committed consumer assigned every partition of `topic`, at its beginning or (from_end) at
    its current end, resolved before it is handed out."""
    consumer = committed_consumer(bootstrap, **kwargs)
    await consumer.start()
    try:
        tps = await partitions(consumer, topic)
        consumer.assign(tps)
        await (consumer.seek_to_end(*tps) if from_end else consumer.seek_to_beginning(*tps))
        for tp in tps:
            await consumer.position(tp)
        yield consumer
    finally:
        await consumer.stop()


async def count_until(
    bootstrap: str,
    topic: str,
    n: int,
    *,
    alive: Callable[[], bool],
    timeout: float,
    on_record: Callable[[Any], None] | None = None,
) -> float:
    """Read `topic` from the beginning until n records were read; return the wall time (time.time())
    when the n-th arrived. Raises if `alive()` turns false or the timeout passes first."""
    async with reader(bootstrap, topic) as consumer:
        seen, deadline = 0, time.monotonic() + timeout
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            now = time.time()
            for records in batch.values():
                if on_record is not None:
                    for r in records:
                        on_record(r)
                seen += len(records)
            if seen >= n:
                return now
            if not alive():
                raise RuntimeError(f"{topic}: the process under test exited after {seen} of {n} records")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: {seen} of {n} records after {timeout:.0f}s")


async def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every committed record of a topic, up to its current end."""
    async with reader(bootstrap, topic) as consumer:
        tps = list(consumer.assignment())
        end = await consumer.end_offsets(tps)
        out: list[Any] = []
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000, max_records=10_000)).values():
                out.extend(records)
        return out
