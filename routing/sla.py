"""Follow-up timers: when a holder's time to touch a lead runs out, and how timer rows are keyed.

A timer is a row of the route table, `sla|<due>|<pool>|<lead>`, with `<due>` in one fixed-width UTC
format, so the rows of a partition sort by due time and housekeeping finds the due ones by reading from
the start until the first that is not due. Pure: the start time comes in as an argument.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from routing.availability import DAYS, _minutes, _zone
from routing.model import Rep
from routing.policy import FollowUp

STAMP = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width: string order is time order
SEP = "|"
HORIZON_DAYS = 28  # working time is looked for this far ahead; a rep with no shift in it counts wall time


def stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime(STAMP)


def parse_stamp(text: str) -> datetime:
    return datetime.strptime(text, STAMP).replace(tzinfo=UTC)


def timer_key(due: str, pool: str, lead_id: str) -> str:
    """The row's key within the `sla` kind: due first, so a partition's timers scan in due order."""
    return SEP.join((due, pool, lead_id))


def split_timer_key(key: str) -> tuple[str, str, str]:
    due, pool, lead_id = key.split(SEP, 2)
    return due, pool, lead_id


def due_at(start: datetime, follow_up: FollowUp, rep: Rep | None) -> datetime:
    """When the holder's time runs out: `within` after `start`, counted in the holder's working hours
    when the policy asks for it and the rep has any (else in wall time)."""
    if follow_up.working_hours and rep is not None and rep.working_hours is not None:
        due = add_working_time(rep, start, follow_up.seconds)
        if due is not None:
            return due
    return start + timedelta(seconds=follow_up.seconds)


def _shifts(rep: Rep, day: date) -> list[tuple[datetime, datetime]]:
    """The rep's shifts that start on `day` (its local date), as UTC intervals."""
    assert rep.working_hours is not None
    zone = _zone(rep.timezone or "UTC")
    out = []
    for shift in rep.working_hours.get(DAYS[day.weekday()], ()):
        a, b = (_minutes(t) for t in shift.split("-"))
        start = datetime.combine(day, time(a // 60, a % 60), tzinfo=zone)
        end_day = day if b > a else day + timedelta(days=1)  # "22:00-06:00" ends the next day
        end = datetime.combine(end_day, time(0), tzinfo=zone) + timedelta(minutes=b)
        out.append((start.astimezone(UTC), end.astimezone(UTC)))
    return out


def add_working_time(rep: Rep, start: datetime, seconds: float) -> datetime | None:
    """The moment `seconds` of the rep's shifts have passed since `start`; None if its shifts within
    HORIZON_DAYS do not hold that much."""
    local = start.astimezone(_zone(rep.timezone or "UTC")).date()
    intervals = sorted(i for d in range(-1, HORIZON_DAYS) for i in _shifts(rep, local + timedelta(days=d)))
    left = timedelta(seconds=seconds)
    cursor = start
    for shift_start, b in intervals:
        a = max(shift_start, cursor)
        if b <= a:
            continue
        if b - a >= left:
            return a + left
        left -= b - a
        cursor = b
    return None
