"""Dead letters: the raw record plus headers saying where it came from and why it was refused."""

from __future__ import annotations

import logging
from typing import Any

from streams.context import Context
from streams.errors import InvalidInput

log = logging.getLogger("leadrelay.dlq")
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


async def dead_letter(ctx: Context, event: Any, error: BaseException, *, agent: str) -> None:
    """Send the record as it arrived; the headers carry the classification (no payload is logged)."""
    msg = event.message
    await send_dead_letter(
        ctx, key=msg.key, value=msg.value, origin=(msg.topic, msg.partition, msg.offset), error=error, agent=agent
    )


async def dead_letter_unexpected(ctx: Context, event: Any, error: BaseException, *, agent: str) -> None:
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
