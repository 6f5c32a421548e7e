"""The one place each agent loop classifies failures: invalid input vs. unexpected, never a crash loop."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from streams.context import Context
from streams.dlq import dead_letter, dead_letter_unexpected
from streams.errors import InvalidInput
from streams.fence import run_fenced
from streams.gaps import OffsetTracker, repair
from streams.tables import StampedTable

log = logging.getLogger("leadrelay.agents")

Handler = Callable[[Context, Any], Awaitable[None]]


def kafka_time(event: Any) -> datetime:
    """A record's timestamp (the producer's create time, or the broker's log-append time)."""
    return datetime.fromtimestamp(event.message.timestamp or time.time(), UTC)


async def handle_guarded(
    ctx: Context, agent: str, event: Any, handler: Handler, writes: Sequence[StampedTable] = ()
) -> bool:
    """Run one record's handler; return False when it was dead-lettered (or dropped by the fence).
    `writes` are the tables the handler writes: its rows there end with a terminator (recovery applies
    them all or none, streams/changelog.py), written before the event is acknowledged, so a committed
    event always has its terminator delivered (Faust flushes the producer before it commits)."""
    try:
        if not await run_fenced(ctx, event, agent, lambda: handler(ctx, event)):
            # Not this record's fault: the worker lost its partition while it stood still. The new owner
            # handles the event; whatever this worker wrote for it is left unterminated.
            for table in writes:
                table.drop_event()
            return False
        handled = True
    except InvalidInput as exc:
        handled = False
        await dead_letter(ctx, event, exc, agent=agent)
    except Exception as exc:
        handled = False
        await dead_letter_unexpected(ctx, event, exc, agent=agent)
    # Also after a failure part-way: the rows written are what this worker's store now holds. (A
    # cancellation, at shutdown, skips this: the event was not finished and is handled again.)
    for table in writes:
        table.end_event()
    return handled


def guarded_agent(
    app: Any, ctx: Context, topic: Any, name: str, handler: Handler, writes: Sequence[StampedTable] = ()
) -> Any:
    """The one agent loop every agent runs: no event after a stall until this worker is known to still
    own it (streams/fence.py), records the consumer skipped first (streams/gaps.py), then each event
    through handle_guarded, yielding handled-or-not for the event itself. `writes` are the tables the
    agent writes (see handle_guarded)."""
    tracker = OffsetTracker()
    app.on_partitions_revoked.connect(tracker.clear)
    app.on_partitions_assigned.connect(tracker.clear)

    async def handled(event: Any) -> bool:
        return await handle_guarded(ctx, name, event, handler, writes)

    async def loop(stream: Any) -> Any:
        async for event in stream.events():
            ctx.metrics.record_read(event.message.topic)
            if ctx.fence is not None and not await ctx.fence.admit(event, name):
                yield False  # its partition moved while this worker stood still: the new owner has it
                continue
            await repair(ctx, tracker, event, name, handled)
            yield await handled(event)

    agent = app.agent(topic, name=name)(loop)
    agent.tracker = tracker  # for tests and introspection
    return agent
