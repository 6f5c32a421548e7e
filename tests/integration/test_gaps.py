"""fetch_range on the real broker: exactly the skipped offsets, from one partition."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from streams.gaps import fetch_range

pytestmark = pytest.mark.integration


def test_fetch_range_reads_exactly_the_missing_offsets(deployment) -> None:
    topic = deployment.settings.topic_leads_new  # any topic: records for one key stay in one partition
    deployment.send(topic, [(b"same-key", f"record-{i}".encode()) for i in range(10)])
    [first] = {r.partition for r in deployment.records(topic, at_least=10)}
    ctx = SimpleNamespace(settings=deployment.settings)
    found = asyncio.run(fetch_range(ctx, topic, first, 3, 7))
    assert [(r.offset, r.value) for r in found] == [(o, f"record-{o}".encode()) for o in range(3, 7)]


def test_committed_offset_is_the_groups_position(deployment) -> None:
    from schemas.events import LeadCreated, RepUpdated
    from streams.gaps import committed_offset
    from streams.topics import pool_events_topic

    ctx = SimpleNamespace(settings=deployment.settings)
    topic = pool_events_topic(deployment.settings)
    worker = deployment.worker()
    deployment.send_roster([RepUpdated(rep_id="r", pools=["p"], capacity=100)])
    deployment.send_leads(LeadCreated(lead_id=f"G{i}", created_at="2026-11-02T09:00:00Z", pool="p") for i in range(20))
    deployment.decisions(at_least=20)
    assert worker.stop() == 0  # a clean stop commits what was handled
    events = deployment.records(topic, at_least=21)
    [partition] = {r.partition for r in events}
    last = max(r.offset for r in events)
    assert asyncio.run(committed_offset(ctx, topic, partition)) in (last, last + 1)
