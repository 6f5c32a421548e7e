"""routing.availability for roster changes (issue 12 item 5): states, departures, ramp-up; pure."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from routing import availability
from routing.availability import LEFT, UNAVAILABLE, departure, ramp, state
from routing.model import Rep
from routing.policy import Availability

T = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
A = Rep("a")


def test_state_names_a_deactivated_rep_inactive_whatever_its_availability() -> None:
    assert state(A) == "available"
    assert state(replace(A, availability="away")) == "away"
    assert state(replace(A, availability="away", active=False)) == "inactive"
    assert state(None) is None


def test_departures() -> None:
    offline = replace(A, availability="offline")
    away = replace(A, availability="away")
    keeps = Availability()
    hands = Availability(hand_back=["offline", "inactive"])
    assert departure(A, None, keeps) == LEFT, "a rep leaving: its leads go by default"
    assert departure(A, None, Availability(on_leave="keep")) is None
    assert departure(None, A, hands) is None, "a new rep holds nothing"
    assert departure(A, offline, keeps) is None, "no hand_back: it keeps them"
    assert departure(A, offline, hands) == UNAVAILABLE
    assert departure(away, offline, hands) == UNAVAILABLE
    assert departure(offline, replace(A, availability="offline", active=False), hands) is None, "already handed back"
    assert departure(A, replace(A, active=False), hands) == UNAVAILABLE
    assert departure(A, away, hands) is None


def test_came_back_only_from_another_state() -> None:
    assert availability.came_back(replace(A, availability="offline"), A)
    assert availability.came_back(replace(A, active=False), A)
    assert not availability.came_back(A, A)
    assert not availability.came_back(None, A)
    assert not availability.came_back(A, replace(A, availability="away"))


def test_ramp_grows_linearly_from_the_return_and_counts_from_an_absences_end() -> None:
    back = replace(A, returned_at=T)
    assert ramp(A, T, 3600, 0.25) == 1.0, "never away"
    assert ramp(back, T, 3600, 0.25) == 0.25
    assert ramp(back, T + timedelta(minutes=30), 3600, 0.25) == 0.625
    assert ramp(back, T + timedelta(hours=2), 3600, 0.25) == 1.0
    absent = replace(A, out_of_office=((T - timedelta(days=2), T),))
    assert ramp(absent, T + timedelta(minutes=30), 3600, 0.0) == 0.5
    assert ramp(absent, T - timedelta(hours=1), 3600, 0.0) == 1.0, "still absent: that window has not ended"


@given(
    start=st.floats(0, 1),
    seconds=st.floats(1, 10**6),
    a=st.floats(0, 10**6),
    b=st.floats(0, 10**6),
)
def test_ramp_is_a_share_that_never_shrinks_with_time(start: float, seconds: float, a: float, b: float) -> None:
    rep = replace(A, returned_at=T)
    early, late = sorted((a, b))
    x = ramp(rep, T + timedelta(seconds=early), seconds, start)
    y = ramp(rep, T + timedelta(seconds=late), seconds, start)
    assert start - 1e-9 <= x <= y + 1e-9 <= 1.0 + 2e-9
