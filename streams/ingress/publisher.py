"""Kafka side of the ingress: an idempotent producer (acks=all) that hands back one delivery future per
record, and a bound on the records waiting for their acknowledgement."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streams.kafka.security import client_kwargs
from streams.settings import Settings

log = logging.getLogger("leadrelay.ingress")
Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Ack:
    """Where Kafka stored an acknowledged record."""

    partition: int
    offset: int


class Unavailable(Exception):
    """The broker did not take or acknowledge the record (down, not yet connected, timed out): 503."""


class Overloaded(Exception):
    """Too many records await their acknowledgement already: 429, try again shortly."""


class Publisher(Protocol):
    """What the HTTP layer needs from Kafka (tests pass a fake, the process a KafkaPublisher)."""

    @property
    def ready(self) -> bool: ...

    async def send(self, topic: str, key: bytes, value: bytes, headers: Headers) -> asyncio.Future[Ack]:
        """Enqueue one record; the future resolves once Kafka acknowledged it (or fails)."""
        ...


@dataclass
class InFlight:
    """Counts records between enqueue and acknowledgement; refuses what would exceed `limit`. A record
    is released when its future is done, not when the HTTP answer is sent (a 503 on timeout leaves it
    in the producer's buffer until aiokafka gives it up), so the bound holds for the buffer itself."""

    limit: int
    count: int = 0

    def acquire(self, n: int) -> None:
        if self.count + n > self.limit:
            raise Overloaded(f"{self.count} records await Kafka's acknowledgement (limit {self.limit})")
        self.count += n

    def release(self, n: int = 1) -> None:
        self.count = max(0, self.count - n)


class KafkaPublisher:
    """One idempotent producer per process. It connects in the background (retrying), so the ingress
    starts before the broker does and answers 503 until it is connected."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._connect: asyncio.Task[None] | None = None
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self) -> None:
        self._connect = asyncio.create_task(self._connect_loop(), name="ingress-producer-connect")

    async def _connect_loop(self) -> None:
        delay = 0.5
        while True:
            producer = AIOKafkaProducer(
                **client_kwargs(self.settings),
                acks="all",
                enable_idempotence=True,
                linger_ms=self.settings.producer_linger_ms,
                # aiokafka gives a batch up after this long: close to the HTTP answer, so a record answered
                # 503 is rarely written later (a resend is harmless anyway: the worker dedupes on lead_id).
                request_timeout_ms=int(self.settings.ingress_ack_timeout_seconds * 1000),
            )
            try:
                await producer.start()
            except KafkaError as exc:
                log.warning("cannot connect to Kafka yet (%s); retrying in %.1f s", type(exc).__name__, delay)
                with contextlib.suppress(Exception):
                    await producer.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            self._producer, self._ready = producer, True
            log.info("connected to Kafka")
            return

    async def send(self, topic: str, key: bytes, value: bytes, headers: Headers) -> asyncio.Future[Ack]:
        if self._producer is None:
            raise Unavailable("not connected to Kafka yet")
        try:
            sent = await self._producer.send(topic, value=value, key=key, headers=headers)
        except KafkaError as exc:
            raise Unavailable(f"{type(exc).__name__}") from exc
        return asyncio.ensure_future(_ack(sent))

    async def stop(self) -> None:
        if self._connect is not None and not self._connect.done():
            self._connect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connect
        if self._producer is not None:
            self._ready = False
            await self._producer.flush()
            await self._producer.stop()


async def _ack(sent: asyncio.Future[object]) -> Ack:
    try:
        meta = await sent
    except KafkaError as exc:
        raise Unavailable(type(exc).__name__) from exc
    return Ack(partition=int(meta.partition), offset=int(meta.offset))  # type: ignore[attr-defined]
