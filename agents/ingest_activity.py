"""ingest_activity: validate a lead's activity; every one goes through the lead index (match_deals)."""

from __future__ import annotations

from agents.ingest_leads import origin_of
from schemas.events import LeadActivity
from schemas.internal import ActivityUnrouted
from streams.codecs import parse
from streams.runtime.boundary import kafka_time
from streams.runtime.loop import Event
from streams.settings import Settings


def unrouted(settings: Settings, event: Event) -> ActivityUnrouted:
    # Even an activity naming its pool goes through the index: the index pins the lead's pool.
    activity = parse(LeadActivity, event.value, max_bytes=settings.max_payload_bytes)
    return ActivityUnrouted(activity=activity, origin=origin_of(event), first_seen_at=kafka_time(event))
