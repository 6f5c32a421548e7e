"""Is a rep on shift at `now`? Working hours in the rep's own time zone, and out-of-office windows."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from routing.model import Rep

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def on_shift(rep: Rep, now: datetime) -> bool:
    """True without working hours; otherwise `now`, in the rep's zone (UTC if none), is in a shift.

    A shift whose end is not after its start ("22:00-06:00") runs past midnight into the next day.
    """
    if rep.working_hours is None:
        return True
    local = now.astimezone(_zone(rep.timezone or "UTC"))
    minute = local.hour * 60 + local.minute
    today, yesterday = DAYS[local.weekday()], DAYS[(local.weekday() - 1) % 7]
    for shift in rep.working_hours.get(today, ()):
        start, end = (_minutes(t) for t in shift.split("-"))
        if start <= minute < (end if end > start else 24 * 60):
            return True
    for shift in rep.working_hours.get(yesterday, ()):
        start, end = (_minutes(t) for t in shift.split("-"))
        if end <= start and minute < end:  # the part of last night's shift after midnight
            return True
    return False


def out_of_office(rep: Rep, now: datetime) -> bool:
    return any(start <= now < end for start, end in rep.out_of_office)
