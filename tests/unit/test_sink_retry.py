"""When the sink tries again and how long it waits (pure functions)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from streams.sink.retry import backoff, classify, next_wait, parse_retry_after

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, "delivered"),
        (204, "delivered"),
        (None, "retry"),  # timeout or connection error
        (408, "retry"),
        (425, "retry"),
        (429, "retry"),
        (401, "retry"),  # a bad token stalls delivery instead of dead-lettering every decision
        (500, "retry"),
        (503, "retry"),
        (400, "refused"),
        (403, "refused"),
        (404, "refused"),
        (409, "refused"),
        (422, "refused"),
        (301, "refused"),  # redirects are not followed
    ],
)
def test_classify(status: int | None, verdict: str) -> None:
    assert classify(status) == verdict


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        ("Mon, 05 Jan 2026 09:00:30 GMT", 30.0),
        ("Mon, 05 Jan 2026 08:59:00 GMT", 0.0),  # in the past: go now
        ("soon", None),
        ("-1", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_in_seconds_or_http_date(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


def test_backoff_is_full_jitter_under_a_doubling_ceiling() -> None:
    rng = random.Random(1)
    for failures, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (10, 60.0), (40, 60.0)]:
        waits = [backoff(failures, initial=0.5, cap=60, rng=rng) for _ in range(300)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling * 0.8 and min(waits) < ceiling * 0.2, "spread over the whole range"


def test_retry_after_is_a_floor_never_shortened_by_jitter() -> None:
    rng = random.Random(2)
    assert all(next_wait(1, 30.0, initial=0.5, cap=60, rng=rng) == 30.0 for _ in range(50))
    assert all(next_wait(1, 120.0, initial=0.5, cap=60, rng=rng) == 120.0 for _ in range(5)), "beyond the cap too"
    assert all(next_wait(1, None, initial=0.5, cap=60, rng=rng) <= 0.5 for _ in range(50))
