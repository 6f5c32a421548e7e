"""StallFence: a stall makes the worker check its group membership before the next event (no broker)."""

from __future__ import annotations

import asyncio
import inspect
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streams.fence import StallFence, group_members
from streams.metrics import Metrics
from streams.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeApp:
    consumer_generation_id = 7


def event(generation: int = 7) -> Any:
    return SimpleNamespace(message=SimpleNamespace(generation_id=generation, topic="t", partition=0, offset=5))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fence(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> StallFence:
    settings = Settings(session_timeout_seconds=10)
    metrics = Metrics.for_settings(settings, CollectorRegistry())
    f = StallFence(FakeApp(), settings, metrics, clock=clock)
    monkeypatch.setattr("streams.fence.RETRY_SECONDS", 0.0)
    return f


def sample(f: StallFence, name: str, **labels: str) -> float:
    return f.metrics.registry.get_sample_value(name, labels) or 0.0


def never_asked() -> Any:
    async def fail() -> bool:
        raise AssertionError("no stall, so the broker must not be asked")

    return fail


def test_regular_ticks_and_events_are_no_stall(fence: StallFence, clock: Clock, monkeypatch) -> None:
    monkeypatch.setattr(fence, "_still_member", never_asked())
    for _ in range(20):
        clock.now += 4.9  # under half the 10 s session timeout
        fence.tick()
        assert asyncio.run(fence.admit(event(), "route"))
    assert not fence.suspect
    assert sample(fence, "leadrelay_stalls_total") == 0


def test_a_stall_is_counted_once_and_cleared_by_a_membership_check(
    fence: StallFence, clock: Clock, monkeypatch
) -> None:
    fence.tick()
    clock.now += 18  # SIGSTOP, a GC or VM pause
    fence.tick()
    fence.tick()
    assert fence.suspect
    assert sample(fence, "leadrelay_stalls_total") == 1
    asked = []

    async def member() -> bool:
        asked.append(True)
        return True

    monkeypatch.setattr(fence, "_still_member", member)
    confirmed: list[bool] = []
    fence.on_still_member.append(lambda: confirmed.append(True))  # tables withdraw their distrust
    assert asyncio.run(fence.admit(event(), "route"))
    assert asked == [True] and not fence.suspect
    assert confirmed == [True]
    assert asyncio.run(fence.admit(event(), "route")), "settled: the next event goes through unasked"
    assert asked == [True]


def test_an_agent_that_wakes_first_sees_the_stall_itself(fence: StallFence, clock: Clock, monkeypatch) -> None:
    fence.tick()
    clock.now += 30
    monkeypatch.setattr(fence, "_still_member", lambda: asyncio.sleep(0, result=True))
    assert asyncio.run(fence.admit(event(), "route"))
    assert sample(fence, "leadrelay_stalls_total") == 1


def test_an_evicted_worker_drops_old_generation_events_without_waiting_for_the_rejoin(
    fence: StallFence, clock: Clock, monkeypatch
) -> None:
    """Waiting for the rejoin inside an event would deadlock: Faust's rebalance waits for that event."""
    fence.tick()
    clock.now += 18
    checks = []

    async def evicted() -> bool:
        checks.append(True)
        return False

    monkeypatch.setattr(fence, "_still_member", evicted)
    assert not asyncio.run(fence.admit(event(generation=7), "route"))
    assert not asyncio.run(fence.admit(event(generation=7), "match_deals")), "the rest of the old buffer too"
    assert checks == [True], "asked once; then known"
    assert sample(fence, "leadrelay_fenced_events_total", agent="route") == 1
    assert sample(fence, "leadrelay_fenced_events_total", agent="match_deals") == 1
    fence.app.consumer_generation_id = 9  # the consumer rejoined
    assert asyncio.run(fence.admit(event(generation=9), "route")), "events of the new generation go on"
    assert not fence.suspect
    assert checks == [True]


def test_an_event_from_before_a_rebalance_is_dropped_unasked(fence: StallFence, clock: Clock, monkeypatch) -> None:
    monkeypatch.setattr(fence, "_still_member", never_asked())
    fence.tick()
    clock.now += 18
    fence.app.consumer_generation_id = 8  # the consumer already rejoined, this event is from generation 7
    assert not asyncio.run(fence.admit(event(generation=7), "route"))


def test_no_answer_from_the_broker_is_no_proof(fence: StallFence, clock: Clock, monkeypatch) -> None:
    fence.tick()
    clock.now += 18
    answers = iter([OSError("down"), OSError("down"), True])

    async def flaky() -> bool:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(fence, "_still_member", flaky)
    assert asyncio.run(fence.admit(event(), "route"))
    assert next(answers, "used up") == "used up", "it kept asking until it had an answer"


def test_without_an_answer_for_a_session_timeout_it_goes_on(fence: StallFence, clock: Clock, monkeypatch) -> None:
    """Dropping without proof of eviction could lose the event: a possible stale write is the lesser harm."""
    fence.tick()
    clock.now += 18

    async def down() -> bool:
        clock.now += 4
        raise OSError("broker unreachable")

    monkeypatch.setattr(fence, "_still_member", down)
    assert asyncio.run(fence.admit(event(), "route"))
    assert not fence.suspect
    assert sample(fence, "leadrelay_fenced_events_total", agent="route") == 0


def test_group_members_reads_a_describe_groups_response() -> None:
    def response(groups: list[dict[str, Any]]) -> Any:
        return SimpleNamespace(to_object=lambda: {"throttle_time_ms": 0, "groups": groups})

    described = {"error_code": 0, "group": "lr", "state": "Stable", "members": [{"member_id": "m1"}]}
    assert group_members(response([described]), "lr") == {"m1"}
    assert group_members(response([described]), "other") is None
    assert group_members(response([{**described, "error_code": 16}]), "lr") is None
    assert group_members(response([{**described, "members": [], "state": "Empty"}]), "lr") == set()


def test_the_faust_and_aiokafka_internals_the_fence_reads_still_exist() -> None:
    """An upgrade that renames them must fail here, not leave the fence blind."""
    import faust
    from aiokafka.consumer.group_coordinator import GroupCoordinator
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    assert hasattr(AIOKafkaConsumerThread, "_ensure_consumer")
    assert "self.member_id" in inspect.getsource(GroupCoordinator.__init__)
    assert faust.App("fence-probe").consumer_generation_id == 0  # set by Faust at every assignment


def evict(fence: StallFence, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stall past the session timeout after which the group no longer has this worker."""
    fence.tick()
    clock.now += 18

    async def evicted() -> bool:
        return False

    monkeypatch.setattr(fence, "_still_member", evicted)
    assert not asyncio.run(fence.admit(event(generation=7), "route"))


def test_out_of_the_group_is_not_ready_and_too_long_out_is_not_live(
    fence: StallFence, clock: Clock, monkeypatch
) -> None:
    """A worker that does not rejoin after its eviction is wedged: liveness fails so it gets restarted."""
    from streams import web

    app = SimpleNamespace(
        crashed=False,
        rebalancing=False,
        tables=SimpleNamespace(recovery=SimpleNamespace(completed=SimpleNamespace(is_set=lambda: True))),
    )
    assert web.is_ready(app, fence) and web.is_live(app, fence)
    evict(fence, clock, monkeypatch)
    assert fence.out_of_group() and not web.is_ready(app, fence)
    assert web.is_live(app, fence), "a rejoin may take a rebalance: give it time"
    clock.now += fence.rejoin_deadline + 1
    assert fence.wedged() and not web.is_live(app, fence)
    fence.app.consumer_generation_id = 8  # it did rejoin after all
    assert not fence.out_of_group() and not fence.wedged()
    assert web.is_ready(app, fence) and web.is_live(app, fence)


class FakeAdmin:
    def __init__(self, members: list[str] | None) -> None:
        self.members = members

    async def describe_consumer_groups(self, groups: list[str]) -> list[Any]:
        described = [] if self.members is None else [
            {"error_code": 0, "group": groups[0], "state": "Stable" if self.members else "Empty",
             "members": [{"member_id": m} for m in self.members]}
        ]  # fmt: skip
        return [SimpleNamespace(to_object=lambda: {"groups": described})]


@pytest.mark.parametrize(
    ("members", "me", "expected"),
    [
        pytest.param(["me", "w2"], "me", True, id="still-listed"),
        pytest.param(["w2"], "me", False, id="evicted-successor-took-over"),
        pytest.param(["w2"], None, False, id="consumer-already-reset-successor-took-over"),
        # Nobody took over: dropping would only lose events (an empty group accepts their commit).
        pytest.param([], "me", True, id="empty-group"),
        pytest.param([], None, True, id="empty-group-consumer-reset"),
    ],
)
def test_membership_after_a_stall(fence: StallFence, members: list[str], me: str | None, expected: bool) -> None:
    fence._admin = FakeAdmin(members)  # type: ignore[assignment]
    fence._member_id = lambda: me  # type: ignore[method-assign]
    assert asyncio.run(fence._still_member()) is expected


def test_an_undescribed_group_is_no_answer(fence: StallFence) -> None:
    fence._admin = FakeAdmin(None)  # type: ignore[assignment]
    fence._member_id = lambda: "me"  # type: ignore[method-assign]
    with pytest.raises(LookupError):
        asyncio.run(fence._still_member())


def test_a_hanging_membership_check_is_bounded(fence: StallFence, clock: Clock, monkeypatch) -> None:
    """The event in hand holds up any rebalance: one hung request must not hold it forever."""
    fence.tick()
    clock.now += 18
    fence.settings = Settings(session_timeout_seconds=0.2)
    fence.threshold = 0.1

    async def hang() -> bool:
        clock.now += 0.15
        await asyncio.sleep(30)
        return True

    monkeypatch.setattr(fence, "_still_member", hang)
    assert asyncio.run(asyncio.wait_for(fence.admit(event(), "route"), 5)), "went on without an answer"


def test_a_worker_that_left_its_group_silently_is_not_ready_and_then_not_live(fence: StallFence, clock: Clock) -> None:
    """aiokafka leaves the group without a word when the consumer did not poll for max.poll.interval.ms
    (during a long first recovery, say), and Faust may never poll again to rejoin."""
    member: list[str | None] = [None]
    fence._member_id = lambda: member[0]  # type: ignore[method-assign]
    fence.tick()
    assert not fence.out_of_group(), "not joined yet: starting, not out"
    member[0] = "faust-1"
    fence.tick()
    member[0] = None  # LeaveGroup
    clock.now += 1
    fence.tick()
    assert not fence.out_of_group(), "a rejoin after a rebalance error is quick: give it a session timeout"
    clock.now += fence.settings.session_timeout_seconds + 1
    fence.tick()
    assert fence.out_of_group() and not fence.wedged()
    clock.now += fence.rejoin_deadline
    fence.tick()
    assert fence.wedged()
    member[0] = "faust-2"  # rejoined after all
    fence.tick()
    assert not fence.out_of_group() and not fence.wedged()


def test_an_old_eviction_does_not_shorten_the_deadline_of_a_later_silent_leave(
    fence: StallFence, clock: Clock, monkeypatch
) -> None:
    """Evicted once, rejoined without an event since (so the eviction is still on record), then a
    member id lost for a little more than a session timeout: not ready, but not yet to be restarted."""
    member: list[str | None] = ["faust-1"]
    fence._member_id = lambda: member[0]  # type: ignore[method-assign]
    evict(fence, clock, monkeypatch)
    fence.app.consumer_generation_id = 8  # rejoined; no event of generation 8 yet
    clock.now += fence.rejoin_deadline + 1
    fence.tick()
    assert not fence.wedged()
    member[0] = None
    fence.tick()
    clock.now += fence.settings.session_timeout_seconds + 1
    fence.tick()
    assert fence.out_of_group() and not fence.wedged()
