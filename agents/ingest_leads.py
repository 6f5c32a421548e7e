"""ingest_leads: validate a raw lead and resolve its pool (the leads stage then pins it, match_deals)."""

from __future__ import annotations

from routing.territory import resolve_pool
from schemas.events import LeadCreated
from schemas.internal import LeadArrived, Origin
from streams.codecs import parse
from streams.runtime.boundary import kafka_time
from streams.runtime.loop import Event
from streams.settings import Settings


def origin_of(event: Event) -> Origin:
    msg = event.message
    return Origin(topic=msg.topic, partition=msg.partition, offset=msg.offset)


def arrived(settings: Settings, event: Event) -> LeadArrived:
    lead = parse(LeadCreated, event.value, max_bytes=settings.max_payload_bytes)
    pool, _ = resolve_pool(lead, settings.territory_rules, settings.default_pool)
    return LeadArrived(pool=pool, lead=lead, received_at=kafka_time(event), origin=origin_of(event))
