"""ingest_deals: validate a closed deal; every one goes through the lead index (match_deals)."""

from __future__ import annotations

from agents.ingest_leads import origin_of
from schemas.events import DealClosed
from schemas.internal import DealUnrouted
from streams.codecs import parse
from streams.runtime.boundary import kafka_time
from streams.runtime.loop import Event
from streams.settings import Settings


def unrouted(settings: Settings, event: Event) -> DealUnrouted:
    # Even a deal naming its pool goes through the index: it may have overtaken its lead's decision.
    deal = parse(DealClosed, event.value, max_bytes=settings.max_payload_bytes)
    return DealUnrouted(deal=deal, origin=origin_of(event), first_seen_at=kafka_time(event))
