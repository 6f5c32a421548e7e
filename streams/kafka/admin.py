"""Topic provisioning: create what is missing, and refuse partition counts that break co-partitioning."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.kafka.security import client_kwargs
from streams.kafka.topics import topic_specs
from streams.settings import Settings

log = logging.getLogger("leadrelay.admin")


class TopicMismatch(RuntimeError):
    """An existing topic has a partition count the topology cannot run with."""

    def __init__(self, actual: dict[str, int | None], expected: int) -> None:
        self.actual, self.expected = actual, expected
        found = "; ".join(
            f"topic {name} has {count if count is not None else 'no'} partitions" for name, count in actual.items()
        )
        # One line an operator can act on: which topic, what it has, what the settings want.
        super().__init__(
            f"{found}, expected {expected} (setting partitions, LEADRELAY_PARTITIONS): pool and lead events "
            "must be co-partitioned with the tables"
        )


async def ensure_topics(settings: Settings) -> list[str]:
    """Create missing topics; return the names created. Existing ones are checked, not changed."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=30_000)
    try:
        await admin.start()
        specs = topic_specs(settings)
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            await admin.create_topics(
                [NewTopic(s.name, s.partitions, settings.replication_factor, topic_configs=s.config) for s in missing]
            )
            log.info("created topics %s", [s.name for s in missing])
        present = [s for s in specs if s.name in existing and s.copartitioned]
        if present:
            described = await admin.describe_topics([s.name for s in present])
            counts = {d["topic"]: len(d["partitions"]) for d in described}
            wrong = {s.name: counts.get(s.name) for s in present if counts.get(s.name) != s.partitions}
            if wrong:
                raise TopicMismatch(wrong, settings.partitions)
        return [s.name for s in missing]
    finally:
        await admin.close()
