"""Broker-backed fixtures: one real Kafka per session, isolated topics and workers per test."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.events import AssignmentDecision, DealClosed, LeadCreated, RepUpdated
from streams.kafka.changelog import namespace, read_table
from streams.kafka.clients import produce, read_all
from streams.runtime.tables import MATCH_KINDS, ROUTE_KINDS, changelog_topic
from streams.settings import Settings
from streams.tools import synthetic
from streams.tools.supervise import WorkerProcess, free_port


@dataclass
class Deployment:
    """One isolated leadrelay installation: its own topics, consumer group, state dirs and workers."""

    bootstrap: str
    root: Path
    partitions: int = 4
    extra: dict[str, str] = field(default_factory=dict)
    workers: list[WorkerProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ns = f"t{uuid.uuid4().hex[:10]}"
        self.env = {
            "LEADRELAY_BOOTSTRAP_SERVERS": self.bootstrap,
            "LEADRELAY_APP_ID": f"lr-{self.ns}",
            "LEADRELAY_PARTITIONS": str(self.partitions),
            "LEADRELAY_LOG_LEVEL": "info",
            **Settings.namespaced_topics(self.ns),
            **self.extra,
        }
        self.settings = Settings.from_env(self.env)

    def worker(self, name: str = "w1", **env: str) -> WorkerProcess:
        """Start a worker (same group as the others) and wait until it is ready."""
        data = self.root / name / "tables"
        worker_env = {
            **self.env,
            "LEADRELAY_DATA_DIR": str(data),
            "LEADRELAY_WEB_PORT": str(free_port()),
            **env,
        }
        worker = WorkerProcess(worker_env, self.root / name / "worker.log")
        self.workers.append(worker)
        worker.start().wait_ready()
        return worker

    # producing, as an independent client would
    def send(self, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
        return asyncio.run(produce(self.settings, topic, records))

    def send_roster(self, reps: Iterable[RepUpdated]) -> None:
        self.send(self.settings.topic_reps_roster, ((r.rep_id.encode(), r.model_dump_json().encode()) for r in reps))

    def send_leads(self, leads: Iterable[LeadCreated]) -> None:
        self.send(self.settings.topic_leads_new, ((lead.lead_id.encode(), synthetic.wire(lead)) for lead in leads))

    def send_deals(self, deals: Iterable[DealClosed]) -> None:
        self.send(self.settings.topic_deals_closed, ((d.lead_id.encode(), d.model_dump_json().encode()) for d in deals))

    # reading back
    def records(self, topic: str, *, at_least: int, timeout: float = 60.0) -> list[Any]:
        """All records of a topic once there are at least `at_least` (fails the test on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            found = asyncio.run(read_all(self.settings, topic))
            if len(found) >= at_least or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert len(found) >= at_least, f"{topic}: {len(found)} records after {timeout}s, wanted {at_least}"
        return found

    def decisions(self, *, at_least: int, timeout: float = 60.0) -> list[AssignmentDecision]:
        found = self.records(self.settings.topic_assignments, at_least=at_least, timeout=timeout)
        return [AssignmentDecision.model_validate_json(r.value) for r in found]

    def table(self, name: str) -> dict[str, Any]:
        """A table (or a kind of row: `ledger`, `loads`, ...) as its changelog says, read the way recovery
        reads it (streams/kafka/changelog.py: whole events, newest value per key, tombstones remove)."""
        table = "route" if name in ROUTE_KINDS else "match" if name in MATCH_KINDS else name
        topic = changelog_topic(self.settings.app_id, table)
        rows = read_table(asyncio.run(read_all(self.settings, topic)))
        if table != name:
            rows = namespace(rows, name)
        return {key: orjson.loads(value) for key, value in rows.items()}

    def settle(self, seconds: float = 3.0) -> None:
        """Give the worker time to flush table changelogs (Faust sends them asynchronously)."""
        time.sleep(seconds)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


@pytest.fixture
def deployment(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Deployment]:
    dep = Deployment(kafka_bootstrap, tmp_path)
    try:
        yield dep
    finally:
        dep.stop()


@pytest.fixture
def deployment_factory(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Any]:
    made: list[Deployment] = []

    def make(**kwargs: Any) -> Deployment:
        dep = Deployment(kafka_bootstrap, tmp_path / f"d{len(made)}", **kwargs)
        made.append(dep)
        return dep

    try:
        yield make
    finally:
        for dep in made:
            dep.stop()
