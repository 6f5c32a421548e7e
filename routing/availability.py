"""Is a rep on shift at `now`? Working hours in the rep's own time zone, and out-of-office windows."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from routing.model import Rep
from routing.policy import Availability

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


def state(rep: Rep | None) -> str | None:
    """available | away | offline | inactive (a deactivated rep, whatever its availability); None: gone."""
    if rep is None:
        return None
    return rep.availability if rep.active else "inactive"


def came_back(before: Rep | None, after: Rep) -> bool:
    """The rep turned available (and active) again in this pool: its capacity ramps up from now."""
    return before is not None and state(before) != "available" and state(after) == "available"


LEFT, UNAVAILABLE = "rep_left", "rep_unavailable"  # the triggers of a hand-back's decisions


def departure(before: Rep | None, after: Rep | None, policy: Availability) -> str | None:
    """What a roster change does to the leads the rep holds in the pool: `rep_left` (all its open leads
    go, unless the policy keeps them), `rep_unavailable` (its untouched ones go: it turned to a state the
    policy's hand_back lists), or None (it keeps them)."""
    if before is None:
        return None
    if after is None:
        return None if policy.on_leave == "keep" else LEFT
    now_in, was_in = state(after), state(before)
    if now_in in policy.hand_back and was_in not in policy.hand_back:
        return UNAVAILABLE
    return None


def back_since(rep: Rep, now: datetime) -> datetime | None:
    """When the rep last came back: turned available again, or the end of an out-of-office window that
    has passed; None when it never was away."""
    ends = [end for _, end in rep.out_of_office if end <= now]
    times = [*ends, *([rep.returned_at] if rep.returned_at is not None else [])]
    return max(times) if times else None


def ramp(rep: Rep, now: datetime, seconds: float, start: float) -> float:
    """The share of its capacity a returning rep has at `now`: `start` at once, growing linearly to all
    of it `seconds` after it came back (1.0 for a rep that never was away)."""
    back = back_since(rep, now)
    if back is None:
        return 1.0
    elapsed = (now - back).total_seconds()
    if elapsed >= seconds:
        return 1.0
    return start + (1.0 - start) * max(0.0, elapsed) / seconds
