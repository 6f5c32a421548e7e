"""Topic names, partition counts and configs: the topology's one list of topics."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.partitioner import murmur2

from streams.runtime.tables import TABLES, changelog_topic
from streams.settings import Settings

COMPACT = {"cleanup.policy": "compact"}
DLQ_RETENTION = {"retention.ms": str(14 * 24 * 3600 * 1000), "segment.ms": str(24 * 3600 * 1000)}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]
    internal: bool = False
    # Tables are keyed from this topic's partitions, so its count must equal `partitions`.
    copartitioned: bool = False


def home_partition(key: str, partitions: int) -> int:
    """The partition the default partitioner gives a key (a lead's home in lead-events and the index)."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def pool_events_topic(settings: Settings) -> str:
    return f"{settings.app_id}-pool-events"


def lead_events_topic(settings: Settings) -> str:
    return f"{settings.app_id}-lead-events"


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the worker (and the CRM sink) reads or writes, table changelogs included."""
    p = settings.partitions
    return [
        TopicSpec(settings.topic_leads_new, p, {}),
        TopicSpec(settings.topic_leads_updated, p, {}),
        TopicSpec(settings.topic_deals_closed, p, {}),
        TopicSpec(settings.topic_lead_activity, p, {}),
        TopicSpec(settings.topic_claims, p, {}),
        TopicSpec(settings.topic_claim_results, p, {}),
        TopicSpec(settings.topic_reps_roster, p, COMPACT, copartitioned=True),
        TopicSpec(settings.topic_policies, p, COMPACT),
        TopicSpec(settings.topic_assignments, p, {}),
        # Raw payloads (personal data) age out: 14 days, in daily segments so nothing lingers a week longer.
        TopicSpec(settings.topic_dlq, p, DLQ_RETENTION),
        # The CRM sink's refusals: decisions (ids only) with the CRM's response, which may quote personal data.
        TopicSpec(settings.topic_sink_dlq, p, DLQ_RETENTION),
        TopicSpec(pool_events_topic(settings), p, {}, internal=True, copartitioned=True),
        TopicSpec(lead_events_topic(settings), p, {}, internal=True, copartitioned=True),
        # Created up front (Faust would create them too): a changelog that appears while the first
        # events are processed can briefly show a partition count that fails Faust's co-partition check.
        *(
            TopicSpec(changelog_topic(settings.app_id, name), p, COMPACT, internal=True, copartitioned=True)
            for name in TABLES
        ),
    ]
