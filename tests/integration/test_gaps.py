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
