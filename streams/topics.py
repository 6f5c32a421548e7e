"""Topic names, partition counts and configs: the topology's one list of topics."""

from __future__ import annotations

from dataclasses import dataclass

from streams.settings import Settings
from streams.tables import TABLES, changelog_topic

COMPACT = {"cleanup.policy": "compact"}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]
    internal: bool = False
    # Tables are keyed from this topic's partitions, so its count must equal `partitions`.
    copartitioned: bool = False


def pool_events_topic(settings: Settings) -> str:
    return f"{settings.app_id}-pool-events"


def lead_events_topic(settings: Settings) -> str:
    return f"{settings.app_id}-lead-events"


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the worker reads or writes, table changelogs included."""
    p = settings.partitions
    return [
        TopicSpec(settings.topic_leads_new, p, {}),
        TopicSpec(settings.topic_deals_closed, p, {}),
        TopicSpec(settings.topic_reps_roster, p, COMPACT, copartitioned=True),
        TopicSpec(settings.topic_policies, p, COMPACT),
        TopicSpec(settings.topic_assignments, p, {}),
        # Raw payloads (personal data) age out: 14 days, in daily segments so nothing lingers a week longer.
        TopicSpec(
            settings.topic_dlq, p, {"retention.ms": str(14 * 24 * 3600 * 1000), "segment.ms": str(24 * 3600 * 1000)}
        ),
        TopicSpec(pool_events_topic(settings), p, {}, internal=True, copartitioned=True),
        TopicSpec(lead_events_topic(settings), p, {}, internal=True, copartitioned=True),
        # Created up front (Faust would create them too): a changelog that appears while the first
        # events are processed can briefly show a partition count that fails Faust's co-partition check.
        *(
            TopicSpec(changelog_topic(settings.app_id, name), p, COMPACT, internal=True, copartitioned=True)
            for name in TABLES
        ),
    ]
