"""The transactional runtime's two broker guarantees, on the real broker: a task's new owner fences the
old one, and a store restores exactly the committed changelog rows after its checkpoint."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from streams.runtime.loop import restore
from streams.runtime.store import PartitionStore
from streams.settings import Settings

pytestmark = pytest.mark.integration


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def make_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def committed_values(bootstrap: str, topic: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", isolation_level="read_committed"
    )
    await consumer.start()
    try:
        out: list[bytes] = []
        while batch := await consumer.getmany(timeout_ms=1500):
            out += [r.value for records in batch.values() for r in records]
        return out
    finally:
        await consumer.stop()


def producer(bootstrap: str, txn_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=txn_id, acks="all")


def test_a_new_owner_of_a_task_fences_the_old_one_and_its_open_transaction_never_shows(
    kafka_bootstrap: str,
) -> None:
    topic, txn_id = f"fence-{uuid.uuid4().hex[:8]}", f"lr-route-{uuid.uuid4().hex[:6]}"

    async def scenario() -> tuple[list[bytes], bool]:
        await make_topic(kafka_bootstrap, topic)
        old, new = producer(kafka_bootstrap, txn_id), producer(kafka_bootstrap, txn_id)
        await old.start()
        await old.begin_transaction()
        await old.send_and_wait(topic, b"zombie's decision")  # in the log, not committed
        await new.start()  # the successor takes the task over: init_transactions
        fenced = False
        try:
            await old.commit_transaction()
        except KafkaError:
            fenced = True
        async with new.transaction():
            await new.send_and_wait(topic, b"successor's decision")
        await new.stop()
        await old.stop()
        return await committed_values(kafka_bootstrap, topic), fenced

    values, fenced = run(scenario())
    assert fenced, "the old owner could still commit after its successor initialised the task"
    assert values == [b"successor's decision"]


def test_restore_applies_the_committed_rows_after_the_checkpoint_and_never_an_aborted_one(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    changelog = f"lr-{uuid.uuid4().hex[:8]}-route-changelog"
    settings = Settings(bootstrap_servers=kafka_bootstrap)

    async def write(rows: dict[str, object], *, commit: bool) -> int:
        p = producer(kafka_bootstrap, f"writer-{uuid.uuid4().hex[:6]}")
        await p.start()
        await p.begin_transaction()
        last = -1
        for key, value in rows.items():
            meta = await (await p.send(changelog, key=key.encode(), value=orjson.dumps(value), partition=0))
            last = meta.offset
        await (p.commit_transaction() if commit else p.abort_transaction())
        await p.stop()
        return last

    async def scenario() -> PartitionStore:
        await make_topic(kafka_bootstrap, changelog)
        store = PartitionStore(tmp_path / "route-0")
        first = await write({"loads|a|r1": {"open": 1}, "ledger|a|L1": {"rep_id": "r1"}}, commit=True)
        store.apply({"loads|a|r1": b'{"open": 1}', "ledger|a|L1": b'{"rep_id": "r1"}'}, first)
        await write({"loads|a|r1": {"open": 99}, "ledger|a|L9": {"rep_id": "zombie"}}, commit=False)
        await write({"loads|a|r1": {"open": 2}, "ledger|a|L2": {"rep_id": "r1"}}, commit=True)
        read = await restore(settings, changelog, 0, store)
        assert read == 2
        return store

    store = run(scenario())
    assert dict(store.items()) == {
        "ledger|a|L1": {"rep_id": "r1"},
        "ledger|a|L2": {"rep_id": "r1"},
        "loads|a|r1": {"open": 2},
    }
    # a lost disk: the same rows from the changelog's start
    fresh = PartitionStore(tmp_path / "route-0-new")
    run(restore(settings, changelog, 0, fresh))
    assert dict(fresh.items()) == dict(store.items())
