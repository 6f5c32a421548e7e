"""What agents share: settings, topics, tables, metrics. Built once per app by create_app()."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from streams.fence import StallFence
from streams.gaps import GapReader
from streams.metrics import Metrics
from streams.settings import Settings
from streams.tables import Tables
from streams.topics import lead_events_topic, pool_events_topic

RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


@dataclass(frozen=True)
class Topics:
    leads_new: faust.TopicT
    deals_closed: faust.TopicT
    reps_roster: faust.TopicT
    policies: faust.TopicT
    assignments: faust.TopicT
    dlq: faust.TopicT
    pool_events: faust.TopicT
    lead_events: faust.TopicT

    @classmethod
    def create(cls, app: faust.App, settings: Settings) -> Topics:
        # Everything is consumed as raw bytes: a Faust codec error would ack and skip a record silently.
        def topic(name: str, **extra: Any) -> faust.TopicT:
            return app.topic(name, **RAW, **extra)

        p = settings.partitions
        return cls(
            leads_new=topic(settings.topic_leads_new),
            deals_closed=topic(settings.topic_deals_closed),
            reps_roster=topic(settings.topic_reps_roster),
            policies=topic(settings.topic_policies),
            assignments=topic(settings.topic_assignments),
            dlq=topic(settings.topic_dlq),
            pool_events=topic(pool_events_topic(settings), partitions=p, internal=True),
            lead_events=topic(lead_events_topic(settings), partitions=p, internal=True),
        )


@dataclass(frozen=True)
class Context:
    settings: Settings
    topics: Topics
    tables: Tables
    metrics: Metrics
    gaps: GapReader | None = None  # re-reads what the consumer skipped (streams/gaps.py)
    fence: StallFence | None = None  # no writes after a stall until membership is confirmed (streams/fence.py)
