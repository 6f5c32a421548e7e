"""The gap reader on the real broker: exactly the skipped offsets, read-ahead, the group's position."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from streams.gaps import GapReader, fetch_range

pytestmark = pytest.mark.integration


def _one_partition(deployment, n: int) -> tuple[str, int]:
    topic = deployment.settings.topic_leads_new  # any topic: records for one key stay in one partition
    deployment.send(topic, [(b"same-key", f"record-{i}".encode()) for i in range(n)])
    [partition] = {r.partition for r in deployment.records(topic, at_least=n)}
    return topic, partition


def test_fetch_range_reads_exactly_the_missing_offsets(deployment) -> None:
    topic, partition = _one_partition(deployment, 10)
    ctx = SimpleNamespace(settings=deployment.settings)
    found = asyncio.run(fetch_range(ctx, topic, partition, 3, 7))
    assert [(r.offset, r.value) for r in found] == [(o, f"record-{o}".encode()) for o in range(3, 7)]


def test_later_gaps_are_served_from_read_ahead(deployment) -> None:
    """A compacted topic read from the start jumps at every removed offset: one fetch serves many."""
    topic, partition = _one_partition(deployment, 50)

    async def scan() -> tuple[list[list[int]], int]:
        reader = GapReader(deployment.settings)
        try:
            ranges = [(2, 5), (9, 12), (12, 13), (30, 40), (49, 50)]
            found = [[r.offset for r in await reader.fetch(topic, partition, s, e)] for s, e in ranges]
            return found, reader.reads
        finally:
            await reader.close()

    found, reads = asyncio.run(scan())
    assert found == [[2, 3, 4], [9, 10, 11], [12], list(range(30, 40)), [49]]
    assert reads == 1, "50 small records fit one fetch: the later ranges come from read-ahead"


def test_a_range_before_the_log_start_is_read_from_the_log_start(deployment) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
    from aiokafka.structs import TopicPartition

    from streams.security import client_kwargs

    topic, partition = _one_partition(deployment, 10)

    async def truncate_then_read() -> list[int]:
        admin = AIOKafkaAdminClient(**client_kwargs(deployment.settings))
        await admin.start()
        try:
            await admin.delete_records({TopicPartition(topic, partition): RecordsToDelete(6)})  # retention did this
        finally:
            await admin.close()
        reader = GapReader(deployment.settings)
        try:
            return [r.offset for r in await reader.fetch(topic, partition, 0, 8)]
        finally:
            await reader.close()

    assert asyncio.run(truncate_then_read()) == [6, 7]


def test_committed_offset_is_the_groups_position(deployment) -> None:
    from schemas.events import LeadCreated, RepUpdated
    from streams.gaps import committed_offset
    from streams.topics import pool_events_topic

    ctx = SimpleNamespace(settings=deployment.settings)
    topic = pool_events_topic(deployment.settings)
    worker = deployment.worker(LEADRELAY_RUNTIME="faust")
    deployment.send_roster([RepUpdated(rep_id="r", pools=["p"], capacity=100)])
    deployment.send_leads(LeadCreated(lead_id=f"G{i}", created_at="2026-11-02T09:00:00Z", pool="p") for i in range(20))
    deployment.decisions(at_least=20)
    assert worker.stop() == 0  # a clean stop commits what was handled
    events = deployment.records(topic, at_least=21)
    [partition] = {r.partition for r in events}
    last = max(r.offset for r in events)
    assert asyncio.run(committed_offset(ctx, topic, partition)) in (last, last + 1)
