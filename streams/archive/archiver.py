"""`leadrelay archive`: consume the archived topics (read_committed, group archive_group_id) into the database.

One loop, one order: fetch a batch, upsert it in one database transaction, commit the database, then
commit the batch's offsets to Kafka. A crash (kill -9) between the two commits re-reads records that are
already in the database on restart, and the upsert (keyed by decision id, deal id, ...) writes them again
as the same rows: nothing is lost and nothing is doubled. A database that fails is retried with backoff
while the offsets stay where they are; a record that cannot be archived (not JSON, no key) is logged with
its topic[partition]@offset, counted and skipped (the worker dead-letters such input; decisions are ours).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.config
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from streams.archive.metrics import ArchiveMetrics
from streams.archive.store import ArchiveStore, Row, redact
from streams.archive.tables import ArchivedTopic, InvalidRecord, archived_topics
from streams.kafka.admin import ensure_topics
from streams.kafka.clients import committing_reader
from streams.settings import Settings
from streams.tools.supervise import run_until_signalled
from streams.web.logs import worker_logging

log = logging.getLogger("leadrelay.archive")
BACKOFF_MAX_SECONDS = 30.0


def row_of(spec: ArchivedTopic, record: Any) -> Row:
    """The row of one consumed record; InvalidRecord when it is not a JSON object the spec can key."""
    if record.value is None:
        raise InvalidRecord("empty value")
    try:
        body = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        raise InvalidRecord("not JSON") from None
    if not isinstance(body, dict):
        raise InvalidRecord("not a JSON object")
    return Row(spec, spec.row(body), record.value.decode(), record.topic, record.partition, record.offset)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep; True when `stop` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


class Archiver:
    def __init__(
        self,
        settings: Settings,
        store: ArchiveStore,
        consumer: AIOKafkaConsumer,
        metrics: ArchiveMetrics,
        topics: Mapping[str, ArchivedTopic],
    ) -> None:
        self.settings = settings
        self.store = store
        self.consumer = consumer
        self.metrics = metrics
        self.topics = dict(topics)
        self.healthy = False

    async def run(self, stop: asyncio.Event) -> None:
        self.consumer.subscribe(sorted(self.topics))
        while not stop.is_set():
            batch = await self.consumer.getmany(timeout_ms=500, max_records=self.settings.archive_batch_max_records)
            if batch and not await self.archive(batch, stop):
                break  # stopped while the database was failing: nothing committed, read again next start
            await self.update_lag()

    def rows_of(self, batch: Mapping[TopicPartition, list[Any]]) -> tuple[list[Row], dict[TopicPartition, int]]:
        rows: list[Row] = []
        offsets: dict[TopicPartition, int] = {}
        for tp, records in batch.items():
            spec = self.topics[tp.topic]
            for record in records:
                try:
                    rows.append(row_of(spec, record))
                except InvalidRecord as exc:
                    self.metrics.errors.labels(reason="invalid_record").inc()
                    log.warning("%s[%d]@%d not archived: %s", tp.topic, tp.partition, record.offset, exc)
            offsets[tp] = records[-1].offset + 1
        return rows, offsets

    async def archive(self, batch: Mapping[TopicPartition, list[Any]], stop: asyncio.Event) -> bool:
        """Database first, then Kafka. False when stopped before the database took the batch."""
        rows, offsets = self.rows_of(batch)
        delay = 0.5
        while True:
            started = time.perf_counter()
            try:
                written = await asyncio.to_thread(self.store.upsert, rows)
                break
            except Exception:
                self.healthy = False
                self.metrics.errors.labels(reason="database").inc()
                log.exception("archive database write failed (%d rows); retrying in %.1fs", len(rows), delay)
                if await _sleep_unless(stop, delay):
                    return False
                delay = min(delay * 2, BACKOFF_MAX_SECONDS)
        self.metrics.write_seconds.observe(time.perf_counter() - started)
        self.healthy = True
        for table, count in written.items():
            self.metrics.records.labels(table=table).inc(count)
        # Partitions revoked meanwhile (a rebalance during a slow write) are left to their new owner, which
        # reads them from the committed offset and writes the same rows again.
        assigned = self.consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        try:
            if offsets:
                await self.consumer.commit(offsets)
        except KafkaError as exc:
            # A rebalance or a broker hiccup: whoever reads these records next writes the same rows again.
            self.metrics.errors.labels(reason="commit_failed").inc()
            log.warning("offset commit failed (%s); the records will be archived again", type(exc).__name__)
        else:
            for tp, offset in offsets.items():
                self.metrics.committed.labels(topic=tp.topic, partition=str(tp.partition)).set(offset)
        return True

    async def update_lag(self) -> None:
        lag: dict[str, int] = dict.fromkeys(self.topics, 0)
        for tp in self.consumer.assignment():
            end = self.consumer.last_stable_offset(tp)
            if end is None:
                continue
            with contextlib.suppress(KafkaError, AssertionError):
                position = await self.consumer.position(tp)
                lag[tp.topic] += max(0, end - position)
        for topic, value in lag.items():
            self.metrics.lag.labels(topic=topic).set(value)


async def _internal_server(settings: Settings, metrics: ArchiveMetrics, ready: Callable[[], bool]) -> web.AppRunner:
    app = web.Application()
    metrics.ready.set_function(lambda: 1.0 if ready() else 0.0)

    async def metrics_page(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        return web.json_response({"ready": ready()}, status=200 if ready() else 503)

    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.web_host, settings.web_port).start()
    return runner


async def _connect(store: ArchiveStore, metrics: ArchiveMetrics, stop: asyncio.Event) -> bool:
    """Open the database and create the tables, waiting for a server that is still starting."""
    delay = 0.5
    while True:
        try:
            await asyncio.to_thread(store.connect)
            return True
        except Exception as exc:
            metrics.errors.labels(reason="database").inc()
            log.warning("archive database %s unavailable (%s); retrying in %.1fs", redact(store.url), exc, delay)
            store.reset()
            if await _sleep_unless(stop, delay):
                return False
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)


async def serve(settings: Settings, stop: asyncio.Event, registry: CollectorRegistry | None = None) -> None:
    metrics = ArchiveMetrics.create(registry or CollectorRegistry())
    topics = archived_topics(settings)
    store = ArchiveStore.from_settings(settings)
    started = asyncio.Event()
    archiver: Archiver | None = None
    runner = await _internal_server(
        settings, metrics, lambda: started.is_set() and archiver is not None and archiver.healthy
    )
    try:
        if not await _connect(store, metrics, stop):
            return
        if settings.create_topics:
            await ensure_topics(settings)
        consumer = committing_reader(settings, settings.archive_group_id)
        await consumer.start()
        archiver = Archiver(settings, store, consumer, metrics, topics)
        archiver.healthy = True
        started.set()
        log.info("archiving %s into %s", ", ".join(sorted(topics)), redact(settings.archive_url))
        try:
            await archiver.run(stop)
        finally:
            started.clear()
            await consumer.stop()
    finally:
        store.close()
        await runner.cleanup()


def run(settings: Settings) -> int:
    logging.config.dictConfig(worker_logging(settings.log_level))
    run_until_signalled(lambda stop: serve(settings, stop))
    return 0
