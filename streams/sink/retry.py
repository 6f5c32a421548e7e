"""When to try a CRM request again, and how long to wait: pure functions, time and randomness passed in.

- 2xx: delivered. 408, 425, 429 and 5xx, a timeout or a broken connection: try again later.
- 401: try again later too. An expired or revoked token refuses every decision alike; dead-lettering
  them all would turn one credential fix into a replay of the whole backlog. Delivery stalls instead
  (leadrelay_sink_attempts_total{result="4xx"} climbs, the lag grows) until the token is fixed.
- Any other 4xx (and 3xx: redirects are not followed): the CRM refuses this decision for good; it is
  dead-lettered with the response.

Waits: "full jitter" exponential backoff (uniform in [0, min(max, initial * 2^(n-1))] after the n-th
failure), and never less than the response's Retry-After (seconds or an HTTP date).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

Verdict = Literal["delivered", "retry", "refused"]
RETRY_STATUSES = frozenset({401, 408, 425, 429})


def classify(status: int | None) -> Verdict:
    """`status` None: no answer (timeout, connection refused or reset)."""
    if status is None:
        return "retry"
    if 200 <= status < 300:
        return "delivered"
    if status in RETRY_STATUSES or status >= 500:
        return "retry"
    return "refused"


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def backoff(failures: int, *, initial: float, cap: float, rng: random.Random) -> float:
    """Full jitter after the `failures`-th failed attempt (1 = the first)."""
    ceiling = min(cap, initial * 2 ** max(0, failures - 1))
    return rng.uniform(0, ceiling)


def next_wait(failures: int, retry_after: float | None, *, initial: float, cap: float, rng: random.Random) -> float:
    """The wait before the next attempt: the jittered backoff, but at least what the CRM asked for."""
    wait = backoff(failures, initial=initial, cap=cap, rng=rng)
    return max(wait, retry_after) if retry_after is not None else wait
