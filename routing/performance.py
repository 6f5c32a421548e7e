"""Rolling performance per rep: daily event-time buckets of won/lost/revenue, read as N-day windows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

# Why buckets and not Faust windows: one small value per (pool, rep), one changelog record per deal,
# and "last 7 days" means last 7 days of event time rather than "the newest window".
KEEP_DAYS = 90


@dataclass(frozen=True, slots=True)
class Window:
    won: int = 0
    lost: int = 0
    revenue: float = 0.0

    @property
    def closed(self) -> int:
        return self.won + self.lost


def record(buckets: Mapping[str, list[float]], outcome: str, amount: float, at: datetime) -> dict[str, list[float]]:
    """Add one closed deal to its day and drop days older than KEEP_DAYS before the newest day."""
    day = at.astimezone(UTC).date().isoformat()  # the same instant is the same day for every sender
    out = {k: list(v) for k, v in buckets.items()}
    won, lost, revenue = out.get(day, [0, 0, 0.0])
    if outcome == "won":
        won, revenue = won + 1, revenue + amount
    else:
        lost += 1
    out[day] = [won, lost, revenue]
    newest = max(date.fromisoformat(k) for k in out)
    horizon = (newest - timedelta(days=KEEP_DAYS)).isoformat()
    return {k: v for k, v in out.items() if k > horizon}


def window(buckets: Mapping[str, Any], days: int, now: datetime) -> Window:
    """Totals of the `days` days ending with `now`'s day (event time)."""
    end = now.astimezone(UTC).date()
    start = (end - timedelta(days=days - 1)).isoformat()
    stop = end.isoformat()
    won = lost = 0
    revenue = 0.0
    for day, (w, lo, rev) in buckets.items():
        if start <= day <= stop:
            won, lost, revenue = won + int(w), lost + int(lo), revenue + float(rev)
    return Window(won, lost, revenue)
