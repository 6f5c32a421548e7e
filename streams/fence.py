"""Stall fence: a worker that stood still longer than the group tolerates checks it still owns its
partitions before it handles (and writes table rows for) another event.

With `at_least_once`, nothing stops a worker the group evicted from writing: frozen (a GC or VM pause,
SIGSTOP, CPU starvation) with events in its buffers, it wakes before its consumer learns that the
partitions moved and writes rows computed from its old state after the new owner's rows, so the next
recovery of those changelogs starts from stale loads (docs/reliability.md, finding 1).

The fence notices the stall from the clock: a timer ticks every second, and any gap between ticks or
events longer than half the session timeout means the group may have evicted this worker meanwhile.
Then, before the next event, it asks the group coordinator (DescribeGroups) whether this consumer's
member id is still in the group. If it is, nothing moved and work goes on. If not, the fence drops
every event fetched in the old generation until the consumer has rejoined (Faust skips those itself
once it knows), and their partitions' owners handle them from the committed offsets. Agents that
await between reading and writing a table call `barrier()` right before the write.

What it cannot recall: rows the worker had buffered in its producer before the freeze, which are
flushed when it wakes. The stamps of streams/tables.py make those lose at recovery. Left open: the
rows of one decision are not delivered atomically (docs/reliability.md, finding 7).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import faust
from aiokafka.admin import AIOKafkaAdminClient

from streams.metrics import Metrics
from streams.security import client_kwargs
from streams.settings import Settings

log = logging.getLogger("leadrelay.fence")

TICK_SECONDS = 1.0
RETRY_SECONDS = 0.5


class Fenced(Exception):
    """The worker lost the current event's partition while it stood still: stop, write nothing."""


async def barrier(ctx: Any) -> None:
    """Call right before table writes that follow an await: a stall during that await is caught here.

    Raises Fenced when the partition moved meanwhile (guarded_agent then drops the event)."""
    fence = getattr(ctx, "fence", None)
    if fence is None:
        return
    fence.tick()
    if fence.suspect:
        event = faust.current_event()
        if event is not None and not await fence.admit(event, "barrier"):
            raise Fenced


class Stalled(Exception):
    """The worker stood still while handling an event, before the event's table writes."""


_redoing: ContextVar[bool] = ContextVar("leadrelay_fence_redoing", default=False)


def check_before_writes(ctx: Any) -> None:
    """Synchronous: call right before a block of table writes that follows heavy work (a decision).

    A stall since the event started raises Stalled while nothing is written yet; run_fenced then checks
    the group membership and redoes the event (deterministic, so the same result) or drops it."""
    fence = getattr(ctx, "fence", None)
    if fence is None or _redoing.get():
        return
    fence.tick()
    if fence.suspect:
        raise Stalled


async def run_fenced(ctx: Any, event: Any, agent: str, run: Callable[[], Awaitable[None]]) -> bool:
    """One event's handling behind the fence. False: dropped, this worker lost the event's partition."""
    try:
        await barrier(ctx)
        try:
            await run()
        except Stalled:
            fence = ctx.fence
            if not await fence.admit(event, agent):
                return False
            token = _redoing.set(True)  # once: a decision slower than the threshold is no stall
            try:
                await run()
            finally:
                _redoing.reset(token)
    except Fenced:
        return False
    return True


def group_members(response: Any, group: str) -> set[str] | None:
    """Member ids of `group` in a DescribeGroups response; None when the group is not in it."""
    for described in response.to_object().get("groups", []):
        if described.get("group") == group:
            if described.get("error_code"):
                return None
            return {m["member_id"] for m in described.get("members", [])}
    return None


class StallFence:
    def __init__(
        self,
        app: Any,
        settings: Settings,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.threshold = settings.session_timeout_seconds / 2
        self._clock = clock
        self._last: float | None = None
        self.suspect = False
        self._evicted_in: int | None = None  # generation this worker was evicted from, until it rejoins
        self._evicted_at: float | None = None
        # A rejoin takes at most a rebalance (max poll interval) after a session timeout; twice that
        # without one and the worker is wedged (seen once after SIGSTOP): /healthz then asks for a restart.
        self.rejoin_deadline = 2 * (settings.max_poll_interval_seconds + settings.session_timeout_seconds)
        # aiokafka's heartbeat makes a consumer that has not polled for max.poll.interval.ms leave its
        # group without a log line, and Faust does not always poll again to rejoin (docs/reliability.md,
        # finding 8): when this worker last had no member id, after having had one.
        self._joined = False
        self._left_at: float | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._lock = asyncio.Lock()
        self.on_long_stall: list[Callable[[int], None]] = []  # called with the generation it stood still in
        self.on_still_member: list[Callable[[], None]] = []  # after a stall, the group still had this worker

    def tick(self) -> None:
        """Called every TICK_SECONDS (and before every event): a late call means the worker stood still."""
        now = self._clock()
        stood = now - self._last if self._last is not None else 0.0
        self._last = now
        self._watch_membership(now)
        if stood > self.threshold and not self.suspect:
            self.suspect = True
            self.metrics.stalls.inc()
            log.warning(
                "worker stood still for %.1f s (session timeout %.1f s): checking group membership before "
                "the next event",
                stood,
                self.settings.session_timeout_seconds,
            )
        if stood > self.settings.session_timeout_seconds:
            # Long enough for the group to have evicted this worker: what it buffered before the stall
            # may land after its successor's rows (streams/tables.py). Runs before any rejoin can.
            for callback in self.on_long_stall:
                callback(int(self.app.consumer_generation_id))

    async def admit(self, event: Any, agent: str) -> bool:
        """True: handle the event. False: this worker lost the event's partition while it stood still."""
        self.tick()
        if not self.suspect:
            return True
        async with self._lock:  # agents take turns; the first one settles it for all
            return await self._settle(event, agent)

    async def _settle(self, event: Any, agent: str) -> bool:
        # Never wait here for the consumer to rejoin: Faust's rebalance waits for the event in hand to
        # be acknowledged first, so waiting would deadlock. Decide now, and drop what is stale.
        fetched_in = getattr(event.message, "generation_id", None)
        if self._evicted_in is not None:
            if fetched_in is not None and fetched_in <= self._evicted_in:
                return self._drop(event, agent)  # still the old generation: the rejoin is under way
            self._evicted_in, self._evicted_at, self.suspect = None, None, False  # rejoined
            return True
        if not self.suspect:
            return True  # another agent's check settled it
        if fetched_in is not None and fetched_in != self.app.consumer_generation_id:
            return self._drop(event, agent)  # fetched before a rebalance since: Faust skips these too
        member = await self._ask()
        if member is None or member:
            self.suspect = False
            if member:
                for callback in self.on_still_member:
                    callback()
            return True
        self._evicted_in = fetched_in if fetched_in is not None else self.app.consumer_generation_id
        self._evicted_at = self._clock()
        return self._drop(event, agent)

    async def _ask(self) -> bool | None:
        """Is this consumer still in the group? None: no answer within the session timeout."""
        deadline = self._clock() + self.settings.session_timeout_seconds
        while True:
            try:
                # Bounded: the event in hand holds up any rebalance, and the lock every agent.
                member = await asyncio.wait_for(self._still_member(), max(0.1, deadline - self._clock()))
            except Exception as exc:  # the broker may be back soon; no answer is no proof either way
                if self._clock() > deadline:
                    # Going on risks a stale write; dropping would risk a lost event. Never lose one.
                    log.error("cannot check group membership after a stall (%s): going on", type(exc).__name__)
                    return None
                await asyncio.sleep(RETRY_SECONDS)
                continue
            self._last = self._clock()  # the time spent asking is not a stall
            log.warning("after the stall this worker is %s", "still a group member" if member else "evicted")
            return member

    def _drop(self, event: Any, agent: str) -> bool:
        self.metrics.fenced_events.labels(agent=agent).inc()
        msg = event.message
        log.warning(
            "dropped an event fetched before this worker was evicted; its partition's owner handles it",
            extra={"agent": agent, "topic": msg.topic, "partition": msg.partition, "offset": msg.offset},
        )
        return False

    def _watch_membership(self, now: float) -> None:
        try:
            member = self._member_id()
        except Exception:  # no consumer (yet): nothing to watch
            return
        if member is not None:
            self._joined, self._left_at = True, None
        elif self._joined and self._left_at is None:
            self._left_at = now
            log.warning("this worker has no member id in its consumer group: it left or was removed")

    def _left_for(self) -> float:
        return 0.0 if self._left_at is None else self._clock() - self._left_at

    def out_of_group(self) -> bool:
        """Evicted after a stall and not rejoined yet, or without a member id for longer than a rejoin
        normally takes (a session timeout): not ready."""
        evicted = self._evicted_in is not None and self.app.consumer_generation_id == self._evicted_in
        return evicted or self._left_for() > self.settings.session_timeout_seconds

    def wedged(self) -> bool:
        """Out of the group for longer than any rejoin takes: not live (a restart gets it back)."""
        evicted = self._evicted_in is not None and self.app.consumer_generation_id == self._evicted_in
        evicted_long = (
            evicted and self._evicted_at is not None and self._clock() - self._evicted_at > self.rejoin_deadline
        )
        return evicted_long or self._left_for() > self.rejoin_deadline

    def _member_id(self) -> str | None:
        # Faust reads the generation the same way (faust/transport/drivers/aiokafka.py);
        # tests/unit/test_fence.py checks the attributes still exist.
        coordinator = self.app.consumer._thread._ensure_consumer()._coordinator
        member_id = getattr(coordinator, "member_id", None)
        return member_id or None

    async def _still_member(self) -> bool:
        """Still listed, or nobody else is: an empty group (a single worker, or every worker paused by
        the same host) means nobody took over, so there is nothing to overwrite; dropping events then
        would only lose them (an empty group accepts the commit of their offsets)."""
        if self._admin is None:
            admin = AIOKafkaAdminClient(**client_kwargs(self.settings))
            await admin.start()
            self._admin = admin
        [response, *_] = await self._admin.describe_consumer_groups([self.settings.app_id])
        members = group_members(response, self.settings.app_id)
        if members is None:
            raise LookupError("the group is not described")  # no answer, not a no
        member_id = self._member_id()  # None: the consumer already knows it is out and rejoins
        if member_id is not None and member_id in members:
            return True
        return not (members - {member_id})  # out, but nobody else took over

    async def close(self, *_: Any, **__: Any) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            await admin.close()
