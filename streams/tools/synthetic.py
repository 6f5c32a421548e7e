"""Synthetic leads and deals for the demo, load tests and `leadrelay produce --synthetic` (seeded)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson

from schemas.events import Contact, DealClosed, LeadCreated

COUNTRIES = ("DE", "AT", "CH", "FR", "GB", "US", "CA", "BR", "JP")
INDUSTRIES = ("saas", "retail", "manufacturing", "finance", "healthcare")
PRODUCTS = ("crm", "analytics", "payments")
SOURCES = ("web_form", "ads", "partner", "event")


def leads(seed: int, *, prefix: str = "L", start: datetime | None = None) -> Iterator[LeadCreated]:
    """An endless, reproducible stream of plausible leads (contact data included, as upstream sends it).

    Creation times step backwards from `start` (default: now), about 30 s apart, so no lead is created
    after the moment it could be sent and decided; the same seed and start give the same stream.
    """
    rng = random.Random(seed)
    t = start or datetime.now(UTC)
    n = 0
    while True:
        n += 1
        t -= timedelta(seconds=rng.expovariate(1 / 30))
        value = round(rng.lognormvariate(8.5, 1.1), 2)
        yield LeadCreated(
            lead_id=f"{prefix}-{seed}-{n:06d}",
            created_at=t,
            source=rng.choice(SOURCES),
            country=rng.choice(COUNTRIES),
            industry=rng.choice(INDUSTRIES),
            company_size=int(rng.lognormvariate(4, 1.5)),
            product=rng.choice(PRODUCTS),
            language=rng.choice(("en", "de", "fr")),
            estimated_value=value,
            currency="EUR",
            contact=Contact(name=f"Person {n}", email=f"person{n}@example.com", phone="+49 30 000000"),
        )


def deal_for(
    lead: LeadCreated, rng: random.Random, *, with_pool: str | None = None, now: datetime | None = None
) -> DealClosed:
    """A plausible outcome for a lead: bigger leads close a little less often. With `now`, the deal
    never closes after it (a deal sent now has closed by now; rolling performance windows count it)."""
    won = rng.random() < (0.35 if (lead.estimated_value or 0) < 10_000 else 0.2)
    return DealClosed(
        lead_id=lead.lead_id,
        outcome="won" if won else "lost",
        amount=round((lead.estimated_value or 0) * rng.uniform(0.6, 1.4), 2) if won else 0.0,
        currency=lead.currency,
        closed_at=min(lead.created_at + timedelta(days=rng.uniform(1, 20)), now or datetime.max.replace(tzinfo=UTC)),
        pool=with_pool,
    )


def wire(lead: LeadCreated) -> bytes:
    """The lead as upstream puts it on `leads.new`: with its contact block (which leadrelay never keeps)."""
    data = lead.model_dump(mode="json", exclude_none=True)
    if lead.contact is not None:
        data["contact"] = lead.contact.model_dump(mode="json", exclude_none=True)
    return orjson.dumps(data)
