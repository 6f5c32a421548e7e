"""The archive loop without a broker: the database commits before Kafka, a failing database holds the
offsets, bad records are skipped and counted, and the set of archived topics follows the settings."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError
from prometheus_client import CollectorRegistry, generate_latest

from streams.archive.archiver import Archiver
from streams.archive.metrics import ArchiveMetrics
from streams.archive.store import ArchiveStore, Row
from streams.archive.tables import (
    ACTIVITY,
    ARCHIVED,
    CLAIMS,
    DEALS,
    DECISIONS,
    ArchivedTopic,
    Column,
    archived_topics,
)
from streams.settings import Settings
from tests.archive_support import Consumed, consumed, make_deal, make_decision
from tests.deploy.observability import promtool_lint

D, F = "leads.assignments", "deals.closed"
SETTINGS = Settings.from_env({})


class FakeConsumer:
    """Hands out the given batches, then nothing; records every commit and what the store held then."""

    def __init__(self, batches: list[dict[TopicPartition, list[Consumed]]], store: ArchiveStore) -> None:
        self.batches = batches
        self.store = store
        self.commits: list[tuple[dict[TopicPartition, int], int]] = []
        self.fail_commit = False

    def subscribe(self, topics: list[str]) -> None:
        self.topics = topics

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Consumed]]:
        await asyncio.sleep(0)
        return self.batches.pop(0) if self.batches else {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.fail_commit:
            raise CommitFailedError("rebalanced")
        self.commits.append((dict(offsets), self.store.count("decisions") + self.store.count("deals")))

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    assigned = {TopicPartition(D, 0), TopicPartition(F, 0), TopicPartition(F, 1)}

    def last_stable_offset(self, tp: TopicPartition) -> int | None:
        return 10

    async def position(self, tp: TopicPartition) -> int:
        return 4


class FlakyStore(ArchiveStore):
    def __init__(self, url: str, failures: int) -> None:
        super().__init__(url)
        self.failures = failures

    def upsert(self, rows: Any, now: Any = None) -> dict[str, int]:
        if self.failures > 0:
            self.failures -= 1
            raise OSError("database down")
        return super().upsert(rows, now)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/a.sqlite3"


@pytest.fixture
def metrics() -> ArchiveMetrics:
    return ArchiveMetrics.create(CollectorRegistry())


OPEN: list[ArchiveStore] = []


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


def make(store: ArchiveStore, batches: list[Any], metrics: ArchiveMetrics) -> tuple[Archiver, FakeConsumer]:
    OPEN.append(store)
    consumer = FakeConsumer(batches, store)
    return Archiver(SETTINGS, store, consumer, metrics, archived_topics(SETTINGS)), consumer  # type: ignore[arg-type]


def run(archiver: Archiver, seconds: float = 0.3) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        await archiver.run(stop)

    asyncio.run(main())


def batch() -> dict[TopicPartition, list[Consumed]]:
    return {
        TopicPartition(D, 0): consumed(D, [make_decision(f"L{i}") for i in range(3)], first_offset=5),
        TopicPartition(F, 1): consumed(F, [make_deal("L0")], partition=1),
    }


def test_offsets_are_committed_after_the_database_has_the_rows(url: str, metrics: ArchiveMetrics) -> None:
    store = ArchiveStore(url)
    archiver, consumer = make(store, [batch()], metrics)
    run(archiver)
    assert consumer.commits == [({TopicPartition(D, 0): 8, TopicPartition(F, 1): 1}, 4)]
    assert metrics.registry.get_sample_value("leadrelay_archive_records_total", {"table": "decisions"}) == 3
    assert metrics.registry.get_sample_value("leadrelay_archive_records_total", {"table": "deals"}) == 1
    assert metrics.registry.get_sample_value("leadrelay_archive_committed_offset", {"topic": D, "partition": "0"}) == 8
    assert metrics.registry.get_sample_value("leadrelay_archive_lag_records", {"topic": D}) == 6


def test_a_failing_database_is_retried_and_nothing_is_committed_before_it_succeeds(
    url: str, metrics: ArchiveMetrics
) -> None:
    store = FlakyStore(url, failures=2)
    archiver, consumer = make(store, [batch()], metrics)
    run(archiver, seconds=2.5)  # backoff 0.5 s, then 1 s
    assert consumer.commits == [({TopicPartition(D, 0): 8, TopicPartition(F, 1): 1}, 4)]
    assert metrics.registry.get_sample_value("leadrelay_archive_errors_total", {"reason": "database"}) == 2
    assert archiver.healthy


def test_stopped_while_the_database_fails_commits_nothing(url: str, metrics: ArchiveMetrics) -> None:
    store = FlakyStore(url, failures=1000)
    archiver, consumer = make(store, [batch()], metrics)
    run(archiver, seconds=0.3)
    assert consumer.commits == [] and not archiver.healthy


def test_a_failed_commit_is_counted_and_the_loop_goes_on(url: str, metrics: ArchiveMetrics) -> None:
    store = ArchiveStore(url)
    archiver, consumer = make(store, [batch(), batch()], metrics)
    consumer.fail_commit = True
    run(archiver)
    assert metrics.registry.get_sample_value("leadrelay_archive_errors_total", {"reason": "commit_failed"}) == 2
    assert store.count("decisions") == 3, "the second copy of the batch wrote the same rows"


def test_bad_records_are_skipped_counted_and_their_offsets_committed(url: str, metrics: ArchiveMetrics) -> None:
    store = ArchiveStore(url)
    good = consumed(D, [make_decision("L1")])[0]
    bad = [Consumed(D, 0, 1, b"{oops"), Consumed(D, 0, 2, None), Consumed(D, 0, 3, b'{"lead_id": "L2"}')]
    archiver, consumer = make(store, [{TopicPartition(D, 0): [good, *bad]}], metrics)
    run(archiver)
    assert store.count("decisions") == 1
    assert consumer.commits[0][0] == {TopicPartition(D, 0): 4}
    assert metrics.registry.get_sample_value("leadrelay_archive_errors_total", {"reason": "invalid_record"}) == 3


def test_archived_topics_follow_the_settings() -> None:
    settings = Settings.from_env(
        {"LEADRELAY_TOPIC_ASSIGNMENTS": "x.decisions", "LEADRELAY_TOPIC_DEALS_CLOSED": "x.deals"}
    )
    assert archived_topics(settings) == {
        "x.decisions": DECISIONS,
        "x.deals": DEALS,
        "leads.activity": ACTIVITY,
        "leads.claim-results": CLAIMS,
    }
    # a topic this version has no setting for (yet) is left out; one that exists is one more entry
    later = ArchivedTopic("later", "topic_later", Column("later_id", "text"), "at", ())
    policies = ArchivedTopic("policies", "topic_policies", Column("id", "text"), "at", ())
    assert set(archived_topics(settings, (*ARCHIVED, later, policies))) == {
        "x.decisions",
        "x.deals",
        "leads.activity",
        "leads.claim-results",
        "routing.policies",
    }


def test_archive_metrics_pass_promtool(url: str, metrics: ArchiveMetrics) -> None:
    archiver, _ = make(ArchiveStore(url), [batch()], metrics)
    run(archiver)
    metrics.errors.labels(reason="database").inc()
    assert promtool_lint(generate_latest(metrics.registry).decode()) == {}


def test_rows_keep_where_they_were_read(url: str, metrics: ArchiveMetrics) -> None:
    archiver, _ = make(ArchiveStore(url), [], metrics)
    rows, offsets = archiver.rows_of(batch())
    assert all(isinstance(r, Row) for r in rows)
    assert [(r.topic, r.partition, r.offset) for r in rows][:3] == [(D, 0, 5), (D, 0, 6), (D, 0, 7)]
    assert offsets == {TopicPartition(D, 0): 8, TopicPartition(F, 1): 1}


def test_offsets_of_partitions_revoked_during_the_write_are_left_to_their_new_owner(
    url: str, metrics: ArchiveMetrics
) -> None:
    store = ArchiveStore(url)
    archiver, consumer = make(store, [batch()], metrics)
    consumer.assigned = {TopicPartition(D, 0)}  # deals partition 1 moved away while the batch was written
    run(archiver)
    assert consumer.commits == [({TopicPartition(D, 0): 8}, 4)]
    assert store.count("deals") == 1, "its rows are written all the same (the new owner writes them again)"
