"""`leadrelay sink webhook`: consume leads.assignments (read_committed, group sink_group_id) and deliver
each decision to the CRM.

Order and commits: a partition's records are delivered one after the other by one task (decisions are
keyed by lead_id, so one lead's decisions never overtake each other); partitions run concurrently. A
partition is paused while its task works, so at most one fetch per partition is held in memory. Its
offset is committed after each record is delivered, skipped or dead-lettered, never before: a crash
(kill -9) between the CRM's answer and the commit delivers that decision again on restart, with the
same Idempotency-Key, which the CRM dedupes (or, for an owner update, simply sets again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.config
from typing import Any

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from streams.kafka.admin import ensure_topics
from streams.kafka.clients import committing_reader
from streams.kafka.security import client_kwargs
from streams.settings import Settings, SettingsError
from streams.sink.delivery import Deliverer, Outcome, target_of
from streams.sink.metrics import SinkMetrics
from streams.sink.templates import IdMapping
from streams.tools.supervise import run_until_signalled
from streams.web.logs import worker_logging

log = logging.getLogger("leadrelay.sink")
FETCH_MAX_RECORDS = 100  # per getmany: at most this many decisions held per partition


def dead_letter_headers(record: Any, outcome: Outcome, template: str) -> list[tuple[str, bytes]]:
    items = [
        ("x-leadrelay-source-topic", record.topic),
        ("x-leadrelay-source-partition", str(record.partition)),
        ("x-leadrelay-source-offset", str(record.offset)),
        ("x-leadrelay-reason", outcome.reason or "unknown"),
        ("x-leadrelay-sink-template", template),
        ("x-leadrelay-attempts", str(outcome.attempts)),
    ]
    if outcome.status is not None:
        items.append(("x-leadrelay-http-status", str(outcome.status)))
    if outcome.body:
        items.append(("x-leadrelay-http-body", outcome.body))
    if outcome.decision_id:
        items.append(("x-leadrelay-decision-id", outcome.decision_id))
    return [(k, v.encode()) for k, v in items]


class _Revoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sink: WebhookSink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.sink.drop(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("assigned %s", sorted(tp.partition for tp in assigned))


class WebhookSink:
    def __init__(
        self,
        settings: Settings,
        deliverer: Deliverer,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        metrics: SinkMetrics,
    ) -> None:
        self.settings = settings
        self.deliverer = deliverer
        self.consumer = consumer
        self.producer = producer
        self.metrics = metrics
        self.tasks: dict[TopicPartition, asyncio.Task[None]] = {}
        self._commit_lock = asyncio.Lock()

    async def run(self, stop: asyncio.Event) -> None:
        self.consumer.subscribe([self.settings.topic_assignments], listener=_Revoke(self))
        while not stop.is_set():
            batch = await self.consumer.getmany(timeout_ms=300, max_records=FETCH_MAX_RECORDS)
            for tp, records in batch.items():
                self.consumer.pause(tp)  # until its task has finished these records
                previous = self.tasks.get(tp)
                self.tasks[tp] = asyncio.create_task(self._work(tp, records, previous), name=f"sink-{tp.partition}")
        await self.drop(set(self.tasks))

    async def drop(self, partitions: set[TopicPartition]) -> None:
        """Stop the tasks of partitions we lose (or at shutdown). A delivery cut short is not committed:
        whoever owns the partition next delivers it again, with the same idempotency key."""
        tasks = [self.tasks.pop(tp) for tp in partitions if tp in self.tasks]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _work(self, tp: TopicPartition, records: list[Any], previous: asyncio.Task[None] | None) -> None:
        if previous is not None and not previous.done():
            await previous  # never two tasks on one partition
        try:
            for record in records:
                outcome = await self.deliverer.deliver(record.value)
                if outcome.kind == "dead_letter":
                    await self._dead_letter(record, outcome)
                self.metrics.decisions.labels(
                    outcome="dead_lettered" if outcome.kind == "dead_letter" else outcome.kind
                ).inc()
                await self._commit(tp, record.offset + 1)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Not a CRM answer (those are outcomes): a bug or Kafka failing. Nothing more of this fetch is
            # committed; the partition is rewound to its committed offset and tried again.
            log.exception("sink task for partition %s failed; retrying from the committed offset", tp.partition)
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                committed = await self.consumer.committed(tp)
                self.consumer.seek(tp, committed if committed is not None else 0)
        with contextlib.suppress(Exception):  # the partition may have been revoked meanwhile
            self.consumer.resume(tp)

    async def _dead_letter(self, record: Any, outcome: Outcome) -> None:
        """Written and acknowledged before the offset moves on; a failing broker stalls the partition."""
        headers = dead_letter_headers(record, outcome, self.settings.sink_template)
        delay = 0.5
        while True:
            try:
                await self.producer.send_and_wait(
                    self.settings.topic_sink_dlq, value=record.value, key=record.key, headers=headers
                )
                break
            except KafkaError as exc:
                log.warning("cannot write the sink dead letter (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self.metrics.dead_letters.labels(reason=outcome.reason or "unknown").inc()

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        async with self._commit_lock:
            await self.consumer.commit({tp: offset})


async def _internal_server(settings: Settings, metrics: SinkMetrics, ready: asyncio.Event) -> web.AppRunner:
    app = web.Application()
    metrics.ready.set_function(lambda: 1.0 if ready.is_set() else 0.0)

    async def metrics_page(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        return web.json_response({"ready": ready.is_set()}, status=200 if ready.is_set() else 503)

    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.web_host, settings.web_port).start()
    return runner


async def serve(settings: Settings, stop: asyncio.Event, registry: CollectorRegistry | None = None) -> None:
    metrics = SinkMetrics.create(registry or CollectorRegistry())
    mapping = IdMapping.load(settings.sink_owner_map_file, settings.sink_record_map_file)
    if settings.create_topics:
        await ensure_topics(settings)
    consumer = committing_reader(settings, settings.sink_group_id)
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all", enable_idempotence=True)
    ready = asyncio.Event()
    runner = await _internal_server(settings, metrics, ready)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=settings.partitions * 2)) as session:
        deliverer = Deliverer(settings, session, mapping, metrics)
        await producer.start()
        await consumer.start()
        ready.set()
        log.info("delivering %s with template %s", settings.topic_assignments, settings.sink_template)
        try:
            await WebhookSink(settings, deliverer, consumer, producer, metrics).run(stop)
        finally:
            ready.clear()
            await consumer.stop()
            await producer.stop()
            await runner.cleanup()


def run(settings: Settings) -> int:
    logging.config.dictConfig(worker_logging(settings.log_level))
    target_of(settings)  # configuration errors before anything starts
    for name in ("sink_owner_map_file", "sink_record_map_file"):
        path = getattr(settings, name)
        if path is not None:
            try:
                IdMapping.load(path, None)
            except (OSError, ValueError) as exc:
                raise SettingsError(f"{Settings.env_var(name)}: {exc}") from None

    run_until_signalled(lambda stop: serve(settings, stop))
    return 0
