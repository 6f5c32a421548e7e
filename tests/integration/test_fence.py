"""The stall fence asks the real group coordinator whether this worker's consumer is still a member."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from streams.fence import StallFence
from streams.metrics import Metrics
from streams.security import client_kwargs

pytestmark = pytest.mark.integration


def test_membership_is_read_from_the_group_coordinator(deployment) -> None:
    settings = deployment.settings
    topic = settings.topic_leads_new

    async def check() -> tuple[bool, bool]:
        consumer = AIOKafkaConsumer(topic, **client_kwargs(settings), group_id=settings.app_id)
        await consumer.start()
        fence = None
        try:
            while not consumer.assignment():  # joined and assigned: a member of the group
                await consumer.getmany(timeout_ms=500)
            thread = SimpleNamespace(_ensure_consumer=lambda: consumer)
            app = SimpleNamespace(consumer=SimpleNamespace(_thread=thread), consumer_generation_id=1)
            fence = StallFence(app, settings, Metrics.for_settings(settings, CollectorRegistry()))
            member = await fence._still_member()
            consumer._coordinator.member_id = "evicted-long-ago"  # what a zombie still believes it is
            ghost = await fence._still_member()
            return member, ghost
        finally:
            if fence is not None:
                await fence.close()
            await consumer.stop()

    assert asyncio.run(check()) == (True, False)
