"""Independent Kafka clients for the CLI: produce records, tail decisions, read a topic back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from schemas.events import AssignmentDecision
from streams.kafka.security import client_kwargs
from streams.settings import Settings

# Decisions (and every row of the transactional runtime) count once their transaction committed: every
# reader here sees only committed records. Records of non-transactional producers are always visible.
READ_COMMITTED = "read_committed"


def committing_reader(settings: Settings, group_id: str) -> AIOKafkaConsumer:
    """A consumer in its own group that reads committed records from the oldest on and commits its offsets
    itself, only once what it read has been dealt with (the CRM sink, the archive)."""
    return AIOKafkaConsumer(
        **client_kwargs(settings),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=READ_COMMITTED,
        max_poll_interval_ms=int(settings.max_poll_interval_seconds * 1000),
        session_timeout_ms=int(settings.session_timeout_seconds * 1000),
    )


async def produce(
    settings: Settings, topic: str, records: Iterable[tuple[bytes | None, bytes | None]], *, rate: float = 0
) -> int:
    """Send (key, value) records; `rate` > 0 paces them per second. Returns how many were sent."""
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all", enable_idempotence=True)
    sent = 0
    try:
        await producer.start()
        for key, value in records:
            await producer.send(topic, key=key, value=value)
            sent += 1
            if rate > 0:
                await asyncio.sleep(1 / rate)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def read_all(settings: Settings, topic: str, *, idle: float = 2.0) -> list[Any]:
    """Every record of a topic from the beginning to its current end (all partitions)."""
    parts = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
    if not parts:
        return []
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False, isolation_level=READ_COMMITTED)
    try:
        await consumer.start()
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        out: list[Any] = []
        while [tp for tp in parts if await consumer.position(tp) < end[tp]]:
            batch = await consumer.getmany(timeout_ms=int(idle * 1000))
            for records in batch.values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()


async def partitions_of(settings: Settings, topic: str) -> list[int]:
    """Partition ids of a topic ([] when it does not exist), from a fresh metadata request."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    try:
        await admin.start()
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    for d in described:
        # 3 = unknown topic (nothing to read); anything else, e.g. 29 (not authorized), must not look empty.
        if d.get("error_code") not in (0, 3):
            raise KafkaError(f"cannot describe topic {topic!r}: error code {d.get('error_code')}")
    return sorted(p["partition"] for d in described if d.get("error_code") == 0 for p in d["partitions"])


async def decisions_for(settings: Settings, lead_id: str) -> list[AssignmentDecision]:
    """Every decision recorded for one lead: reads only the partition its key hashes to."""
    key = lead_id.encode()
    records = await read_key_partition(settings, settings.topic_assignments, key)
    return [AssignmentDecision.model_validate_json(r.value) for r in records if r.key == key]


async def read_key_partition(settings: Settings, topic: str, key: bytes) -> list[Any]:
    """Every record of the partition `key` hashes to (Kafka's default partitioner), in offset order;
    [] when the topic does not exist."""
    from aiokafka.partitioner import DefaultPartitioner

    parts = await partitions_of(settings, topic)
    if not parts:
        return []
    tp = TopicPartition(topic, DefaultPartitioner()(key, parts, parts))
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False, isolation_level=READ_COMMITTED)
    try:
        await consumer.start()
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        found: list[Any] = []
        while await consumer.position(tp) < end:
            for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
                found += records
        return found
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class PolicyState:
    """What a pool's policy is now: what `leadrelay policy publish` compares a new version against."""

    live: dict[str, Any] | None  # the running policy: the route table's `policies` row (None: default)
    on_topic: bytes | None  # the newest record for the pool on the policies topic (None: none or tombstone)


async def policy_state(settings: Settings, pool: str) -> PolicyState:
    """The pool's running policy (from the route table's changelog, read the way recovery reads it) and
    its newest record on the policies topic, which the worker may not have applied (or has refused)."""
    from streams.kafka.changelog import namespace, read_table
    from streams.runtime.tables import changelog_topic

    key = pool.encode()
    # The route table writes a pool's rows to the partition of its pool events, which are keyed by pool.
    route, topic = await asyncio.gather(
        read_key_partition(settings, changelog_topic(settings.app_id, "route"), key),
        read_key_partition(settings, settings.topic_policies, key),
    )
    row = namespace(read_table(route), "policies").get(pool)
    on_topic = [r for r in topic if r.key == key]
    return PolicyState(
        live=orjson.loads(row) if row is not None else None,
        on_topic=(on_topic[-1].value or None) if on_topic else None,
    )


def one_line(decision: AssignmentDecision) -> str:
    """How `tail` and the demo print a decision: lead, owner, pool, and the reason in one line."""
    owner = decision.rep_id or "(unassigned)"
    dup = f" attempt {decision.attempt}" if decision.attempt > 1 else ""
    return (
        f"{decision.lead_id:<20} -> {owner:<14} [{decision.pool}] {decision.reason}{dup}: "
        f"{decision.explanation.summary}"
    )


async def tail(
    settings: Settings,
    printer: Callable[[str], None],
    *,
    from_beginning: bool = False,
    stop: asyncio.Event | None = None,
) -> None:
    """Follow the decision topic and print each decision in one line, until `stop` is set."""
    consumer = AIOKafkaConsumer(
        settings.topic_assignments,
        **client_kwargs(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        isolation_level=READ_COMMITTED,
    )
    try:
        await consumer.start()
        while stop is None or not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    printer(one_line(AssignmentDecision.model_validate_json(record.value)))
    finally:
        await consumer.stop()
