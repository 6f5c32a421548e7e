"""Synthetic traffic: reproducible given seed and start, and never created in the future."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from itertools import islice

from streams.tools import synthetic

START = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def test_leads_are_never_created_after_start() -> None:
    leads = list(islice(synthetic.leads(7, start=START), 2000))
    assert all(lead.created_at <= START for lead in leads)
    assert [lead.lead_id for lead in leads[:2]] == ["L-7-000001", "L-7-000002"]


def test_leads_without_a_start_are_never_in_the_future() -> None:
    leads = list(islice(synthetic.leads(3), 500))
    now = datetime.now(UTC)
    assert all(lead.created_at <= now for lead in leads)


def test_leads_are_reproducible_given_seed_and_start() -> None:
    first = [lead.model_dump() for lead in islice(synthetic.leads(11, start=START), 50)]
    again = [lead.model_dump() for lead in islice(synthetic.leads(11, start=START), 50)]
    assert first == again
    other = [lead.model_dump() for lead in islice(synthetic.leads(12, start=START), 50)]
    assert first != other


def test_deals_sent_now_have_closed_by_now_and_keep_the_seeded_sequence() -> None:
    leads = list(islice(synthetic.leads(5, start=START), 200))
    capped = [synthetic.deal_for(lead, random.Random(1), now=START) for lead in leads]
    free = [synthetic.deal_for(lead, random.Random(1)) for lead in leads]
    assert all(deal.closed_at <= START for deal in capped)
    assert all(deal.closed_at >= lead.created_at for deal, lead in zip(capped, leads, strict=True))
    assert [(d.outcome, d.amount) for d in capped] == [(d.outcome, d.amount) for d in free]
