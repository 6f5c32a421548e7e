"""The boundary of every handler: a record's time, and the one place its failures are classified.

Dead letters are the raw record plus headers saying where it came from and why it was refused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiokafka.errors import KafkaError

from streams.errors import InvalidInput
from streams.runtime.context import Context
from streams.runtime.loop import Event
from streams.runtime.store import Overlay

log = logging.getLogger("leadrelay.dlq")  # the name operators filter dead letters by
MAX_MESSAGE = 1000
MAX_DLQ_VALUE = 900 * 1024  # under the producer's max_request_size (1 MiB) with room for key and headers


def headers_for(topic: str, partition: int, offset: int, error: BaseException, reason: str) -> list[tuple[str, bytes]]:
    field = getattr(error, "field", None)
    message = str(error)[:MAX_MESSAGE]
    items = [
        ("x-leadrelay-source-topic", topic),
        ("x-leadrelay-source-partition", str(partition)),
        ("x-leadrelay-source-offset", str(offset)),
        ("x-leadrelay-reason", reason),
        ("x-leadrelay-error-class", type(error).__name__),
        ("x-leadrelay-error-message", message),
    ]
    if field:
        items.append(("x-leadrelay-error-field", field))
    return [(k, v.encode()) for k, v in items]


async def dead_letter(ctx: Context, event: Event, error: BaseException, *, agent: str) -> None:
    """Send the record as it arrived; the headers carry the classification (no payload is logged)."""
    msg = event.message
    await send_dead_letter(
        ctx, key=msg.key, value=msg.value, origin=(msg.topic, msg.partition, msg.offset), error=error, agent=agent
    )


async def dead_letter_unexpected(ctx: Context, event: Event, error: BaseException, *, agent: str) -> None:
    """A bug hit while handling one record: log it with topic[partition]@offset, count it, and dead-letter
    the record (not retried in place: that would reorder the log; ops replay it from the DLQ)."""
    msg = event.message
    log.exception(
        "unexpected error in %s at %s[%s]@%s",
        agent,
        msg.topic,
        msg.partition,
        msg.offset,
        extra={"agent": agent, "topic": msg.topic, "partition": msg.partition, "offset": msg.offset},
    )
    ctx.metrics.record_internal_error(agent)
    await dead_letter(ctx, event, error, agent=agent)


async def send_dead_letter(
    ctx: Context,
    *,
    key: bytes | None,
    value: bytes | None,
    origin: tuple[str, int, int],
    error: BaseException,
    agent: str,
) -> None:
    topic, partition, offset = origin
    reason = error.reason if isinstance(error, InvalidInput) else "internal_error"
    headers = headers_for(topic, partition, offset, error, reason)
    body = value if value is not None else b""
    if len(body) > MAX_DLQ_VALUE:
        # A record the input topic took but no producer request can carry (1 MiB by default): its head,
        # and its size, rather than a send that fails the batch on every retry.
        headers.append(("x-leadrelay-truncated-from", str(len(body)).encode()))
        body = body[:MAX_DLQ_VALUE]
    await ctx.topics.dlq.send(key=key, value=body, headers=headers)
    ctx.metrics.record_dead_letter(topic, reason)
    log.warning(
        "dead-lettered: %s",
        reason,
        extra={"agent": agent, "topic": topic, "partition": partition, "offset": offset, "reason": reason},
    )


def kafka_time(event: Event) -> datetime:
    """A record's timestamp (the producer's create time, or the broker's log-append time)."""
    return datetime.fromtimestamp(event.message.timestamp or time.time(), UTC)


def guarded(
    agent: str,
    handle: Callable[[Context, Event], Awaitable[None]],
    on_error: Callable[[], None] | None = None,
) -> Callable[[Context, Event], Awaitable[None]]:
    """Every failure of one record is classified here, once: invalid input goes to the dead-letter topic;
    anything else is logged with topic[partition]@offset, counted and dead-lettered too (not retried in
    place: that would reorder the log). Both inside the batch's transaction. A failed record's table
    writes are undone (and `on_error` drops caches that may hold them); sends cannot be, so handlers
    send last. A Kafka error is not the record's fault (fenced, broker gone): it aborts the batch, which
    is done again."""

    async def run(ctx: Context, event: Event) -> None:
        overlay = ctx.tables.overlay
        if overlay is not None:
            overlay.mark()
        try:
            await handle(ctx, event)
        except InvalidInput as exc:
            _undo(overlay, on_error)
            await dead_letter(ctx, event, exc, agent=agent)
        except KafkaError:
            raise
        except Exception as exc:
            _undo(overlay, on_error)
            await dead_letter_unexpected(ctx, event, exc, agent=agent)

    return run


def _undo(overlay: Overlay | None, on_error: Callable[[], None] | None) -> None:
    if overlay is not None:
        overlay.rollback()
    if on_error is not None:
        on_error()
