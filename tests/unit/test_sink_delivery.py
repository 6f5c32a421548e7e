"""One decision against a local CRM that is slow, rate-limits, fails, refuses or hangs."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from streams.settings import Settings
from streams.sink.delivery import Deliverer, Outcome
from streams.sink.metrics import SinkMetrics
from streams.sink.templates import IdMapping
from tests.fakecrm import OK, Act, FakeCrm
from tests.unit.test_sink_templates import decision


@pytest.fixture
def crm() -> Iterator[FakeCrm]:
    fake = FakeCrm().start()
    try:
        yield fake
    finally:
        fake.stop()


def scripted(crm: FakeCrm, acts: list[Act]) -> None:
    crm.script = lambda key, n, req: acts[n - 1] if n <= len(acts) else OK


def deliver(
    crm: FakeCrm, raw: bytes | None, *, template: str = "generic", mapping: IdMapping | None = None, **overrides: Any
) -> tuple[Outcome, list[float], SinkMetrics]:
    url = crm.url + ("/hook" if template == "generic" else "")
    settings = Settings(sink_url=url, sink_template=template, sink_token="tok-1", **overrides)  # type: ignore[arg-type]
    waits: list[float] = []
    now = [0.0]

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    async def main() -> tuple[Outcome, SinkMetrics]:
        metrics = SinkMetrics.create(CollectorRegistry())
        async with aiohttp.ClientSession() as session:
            d = Deliverer(
                settings,
                session,
                mapping or IdMapping(),
                metrics,
                sleep=sleep,
                clock=lambda: now[0],
                rng=random.Random(3),
            )
            return await d.deliver(raw), metrics

    outcome, metrics = asyncio.run(main())
    return outcome, waits, metrics


def raw(**kwargs: Any) -> bytes:
    return decision(**kwargs).model_dump_json().encode()


def test_delivered_once_with_the_idempotency_key(crm: FakeCrm) -> None:
    outcome, waits, _ = deliver(crm, raw(lead_id="web-1"))
    assert (outcome.kind, outcome.attempts, waits) == ("delivered", 1, [])
    [applied] = crm.applied.values()
    assert applied.key == decision(lead_id="web-1").decision_id and applied.path == "/hook"


def test_429_waits_what_retry_after_says(crm: FakeCrm) -> None:
    scripted(crm, [Act(429, retry_after="7"), Act(204)])
    outcome, waits, metrics = deliver(crm, raw())
    assert (outcome.kind, outcome.attempts, waits) == ("delivered", 2, [7.0])
    assert metrics.attempts.labels(result="429")._value.get() == 1


def test_5xx_and_401_are_retried_with_growing_jittered_waits(crm: FakeCrm) -> None:
    scripted(crm, [Act(503), Act(500), Act(401), Act(502), Act(204)])
    outcome, waits, _ = deliver(crm, raw(), sink_backoff_initial_seconds=1, sink_backoff_max_seconds=4)
    assert (outcome.kind, outcome.attempts, len(waits)) == ("delivered", 5, 4)
    assert all(0 <= w <= c for w, c in zip(waits, [1, 2, 4, 4], strict=True))
    assert len(crm.applied) == 1


def test_a_4xx_refusal_is_dead_lettered_with_status_and_a_masked_truncated_body(crm: FakeCrm) -> None:
    body = b'{"message": "INVALID owner for jane.roe@example.com", "pad": "' + b"x" * 5000 + b'"}'
    scripted(crm, [Act(400, body=body)])
    outcome, waits, _ = deliver(crm, raw())
    assert (outcome.kind, outcome.reason, outcome.status, outcome.attempts) == ("dead_letter", "crm_refused", 400, 1)
    assert "INVALID owner" in outcome.body and "jane.roe" not in outcome.body and len(outcome.body) <= 1100
    assert waits == [] and crm.applied == {}


def test_a_hanging_crm_times_out_and_is_tried_again(crm: FakeCrm) -> None:
    scripted(crm, [Act(204, delay=2.0), Act(204)])
    outcome, waits, metrics = deliver(crm, raw(), sink_timeout_seconds=0.3)
    assert (outcome.kind, outcome.attempts, len(waits)) == ("delivered", 2, 1)
    assert metrics.attempts.labels(result="timeout")._value.get() == 1


def test_gives_up_after_sink_give_up_seconds(crm: FakeCrm) -> None:
    crm.script = lambda key, n, req: Act(503, retry_after="4")
    outcome, waits, _ = deliver(crm, raw(), sink_give_up_seconds=10)
    assert (outcome.kind, outcome.reason, outcome.status) == ("dead_letter", "retries_exhausted", 503)
    assert sum(waits) <= 10 and outcome.attempts == len(waits) + 1 >= 3


def test_crm_templates_skip_an_unassigned_decision_without_calling(crm: FakeCrm) -> None:
    outcome, _, _ = deliver(crm, raw(rep_id=None), template="salesforce")
    assert outcome.kind == "skipped" and crm.requests == []


def test_an_unmapped_rep_is_dead_lettered_without_calling(crm: FakeCrm) -> None:
    outcome, _, _ = deliver(crm, raw(), template="hubspot", mapping=IdMapping(owners={"bernd": "1"}))
    assert (outcome.kind, outcome.reason) == ("dead_letter", "unmapped_owner") and crm.requests == []


def test_a_mapped_salesforce_update_reaches_the_right_record(crm: FakeCrm) -> None:
    mapping = IdMapping(owners={"anna": "005XX0000001"}, records={"web-1": "00QXX0000001"})
    outcome, _, _ = deliver(crm, raw(lead_id="web-1"), template="salesforce", mapping=mapping)
    assert outcome.kind == "delivered"
    [req] = crm.requests
    assert (req["method"], req["path"], req["json"]) == (
        "PATCH",
        "/services/data/v60.0/sobjects/Lead/00QXX0000001",
        {"OwnerId": "005XX0000001"},
    )
    assert req["headers"]["Authorization"] == "Bearer tok-1"


def test_a_record_that_is_no_decision_is_dead_lettered(crm: FakeCrm) -> None:
    outcome, _, _ = deliver(crm, b'{"lead_id": "x"}')
    assert (outcome.kind, outcome.reason) == ("dead_letter", "invalid_decision") and crm.requests == []
