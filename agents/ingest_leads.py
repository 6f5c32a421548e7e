"""ingest_leads: validate a raw lead (new or updated) and resolve its pool (the leads stage pins it)."""

from __future__ import annotations

from routing import dedupe
from routing.territory import resolve_pool
from schemas.events import LeadCreated
from schemas.internal import LeadArrived, LeadUpdated, Origin
from streams.codecs import parse
from streams.runtime.boundary import kafka_time
from streams.runtime.loop import Event
from streams.settings import Settings


def origin_of(event: Event) -> Origin:
    msg = event.message
    return Origin(topic=msg.topic, partition=msg.partition, offset=msg.offset)


def arrived(settings: Settings, event: Event) -> LeadArrived:
    """The only place that sees `contact`: its dedupe keys are made here, and the contact goes no further."""
    lead = parse(LeadCreated, event.value, max_bytes=settings.max_payload_bytes)
    pool, _ = resolve_pool(lead, settings.territory_rules, settings.default_pool)
    secret = settings.dedupe_secret.get_secret_value().encode() if settings.dedupe_secret else None
    return LeadArrived(
        pool=pool,
        lead=lead,
        received_at=kafka_time(event),
        origin=origin_of(event),
        dedupe_keys=dedupe.keys(lead.contact, secret),
    )


def updated(settings: Settings, event: Event) -> LeadUpdated:
    """A new version of a lead (leads.updated): validated like a new lead, its pool resolved by the same
    rules. `pool` stays the resolved pool until the leads stage reads the index (match_deals.on_update)."""
    new = arrived(settings, event)
    shared = ("pool", "lead", "received_at", "origin", "dedupe_keys")  # the dedupe keys: a first sight dedupes
    return LeadUpdated(to_pool=new.pool, **{name: getattr(new, name) for name in shared})
