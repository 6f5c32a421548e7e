"""The transactional runtime's stages without a broker: the Harness and the records tests feed it.

One Task per (stage, partition), built as the runtime builds them (`streams.runtime.stages.build`); its
sends are caught in place of the transactional producer and its rows committed to a real local
PartitionStore after every record, as a committed transaction would leave them. Offsets count from 0
per input partition; a record's timestamp is `at` (default NOW).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from routing.policy import DEFAULT_POLICY, Policy, parse_policy
from schemas.events import DealClosed, LeadCreated, RepUpdated
from schemas.internal import DealArrived, DealUnrouted, LeadArrived, Origin, PolicyChanged, RepChanged
from streams.kafka.topics import lead_events_topic, pool_events_topic
from streams.runtime.loop import Event, Message, Outbox, Stage, Task
from streams.runtime.stages import build
from streams.runtime.store import Overlay, PartitionStore
from streams.settings import Settings
from streams.web.metrics import Metrics

APP_ID = "t-agents"
PARTITIONS = 4
MAX_PAYLOAD = 1024  # small, so "payload_too_large" needs no megabyte test records
RULES = [{"pool": "emea", "name": "emea-region", "match": {"region": ["EMEA"]}}]
NOW = datetime.now(UTC).replace(microsecond=0)
LONG_AGO = datetime(2020, 1, 15, 9, 30, tzinfo=UTC)
TABLE_OF = {"leads": "match", "route": "route", "roster": "rep-pools"}


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes] = field(default_factory=dict)
    timestamp_ms: int | None = None
    partition: int | None = None

    def json(self) -> Any:
        return orjson.loads(self.value) if self.value else None

    def header(self, name: str) -> str:
        return self.headers[name].decode()


class CaughtOutbox(Outbox):
    def __init__(self) -> None:
        self.sent: list[Sent] = []

    async def send(self, topic: str, *, key: bytes | None, value: bytes | None, **kw: Any) -> None:
        self.sent.append(
            Sent(topic, key, value, dict(kw.get("headers") or ()), kw.get("timestamp_ms"), kw.get("partition"))
        )


def partition_of(key: bytes | None, partitions: int = PARTITIONS) -> int:
    """Where the producer's default partitioner puts `key` (partition 0 for no key, instead of a random one)."""
    if key is None:
        return 0
    return int(DefaultPartitioner()(key, list(range(partitions)), []))


def home(lead_id: str) -> int:
    """A lead's partition of leads.new, deals.closed, lead-events and the lead index."""
    return partition_of(lead_id.encode())


def leads_at(partition: int, n: int) -> list[str]:
    """`n` lead ids whose home is `partition`: leads that share one task."""
    ids = (f"lead-{i}" for i in range(10_000))
    found = [lead_id for lead_id in ids if home(lead_id) == partition]
    return found[:n]


class Harness:
    """One task per (stage, partition), built as the runtime builds them; every record is one commit."""

    def __init__(self, tmp: Path, default_policy: Policy = DEFAULT_POLICY, **settings: Any) -> None:
        base: dict[str, Any] = {
            "app_id": APP_ID,
            "partitions": PARTITIONS,
            "data_dir": tmp,
            "max_payload_bytes": MAX_PAYLOAD,
            "territory_rules": RULES,
        }
        self.settings = Settings(**(base | settings))
        self.registry = CollectorRegistry()
        self.metrics = Metrics.for_settings(self.settings, self.registry)
        self.default_policy = default_policy
        self.tmp = tmp
        self.topics = {
            "assignments": self.settings.topic_assignments,
            "dlq": self.settings.topic_dlq,
            "pool_events": pool_events_topic(self.settings),
            "lead_events": lead_events_topic(self.settings),
        }
        self.outputs = {"claim_results": self.settings.topic_claim_results}  # not in sent_total()
        self.offsets: dict[tuple[str, int], int] = {}
        self.log: list[Sent] = []  # everything sent, in order, since the last forget()
        self.tasks: dict[tuple[str, int], Task] = {}
        self._build()

    def _build(self) -> None:
        stages, self.bind = build(self.settings, self.metrics, self.default_policy)
        self.stages: dict[str, Stage] = {s.name: s for s in stages}

    def task(self, stage: str, partition: int) -> Task:
        if (stage, partition) not in self.tasks:
            s = self.stages[stage]
            store = PartitionStore(self.tmp / f"{s.table}-{partition}.db") if s.table else None
            task = Task(s, partition, [], store, Overlay(store) if store else None)
            task.outbox = CaughtOutbox()
            task.ctx = self.bind(task)
            self.tasks[(stage, partition)] = task
        return self.tasks[(stage, partition)]

    def restart(self) -> None:
        """A new worker on the same local stores: fresh stages, contexts and caches, committed rows only."""
        self.close()
        self.tasks.clear()
        self._build()

    def close(self) -> None:
        for task in self.tasks.values():
            if task.store is not None:
                task.store.close()

    # --- feeding ---------------------------------------------------------------------------------

    async def feed(
        self,
        stage: str,
        topic: str,
        partition: int,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        at: datetime = NOW,
    ) -> list[Sent]:
        """Handle one record as a batch of its own (after_batch included, as the loop does) and commit;
        return what it sent."""
        task = self.task(stage, partition)
        offset = self.offsets.get((topic, partition), 0)
        self.offsets[(topic, partition)] = offset + 1
        message = Message(topic, partition, offset, at.timestamp(), key, value, tuple(headers or ()))
        await task.stage.handle(task.ctx, Event(message))
        if task.stage.after_batch is not None:
            task.stage.after_batch(task.ctx, partition)
        return self.commit(task)

    async def housekeep(self, stage: str, partition: int, now: datetime) -> list[Sent]:
        task = self.task(stage, partition)
        assert task.stage.housekeeping is not None
        await task.stage.housekeeping(task.ctx, now)
        if task.stage.after_batch is not None:
            task.stage.after_batch(task.ctx, partition)
        return self.commit(task)

    async def housekeep_everywhere(self, now: datetime) -> list[Sent]:
        """One housekeeping step of every leads and route task."""
        sent = []
        for stage in ("leads", "route"):
            for partition in range(PARTITIONS):
                sent += await self.housekeep(stage, partition, now)
        return sent

    def commit(self, task: Task) -> list[Sent]:
        assert isinstance(task.outbox, CaughtOutbox)
        sent, task.outbox.sent = task.outbox.sent, []
        if task.store is not None and task.overlay is not None:
            task.store.apply(task.overlay.changes(), (task.store.checkpoint or 0) + 1)
            task.overlay.clear()
        self.log += sent
        return sent

    async def deliver(self, sent: list[Sent], at: datetime = NOW) -> list[Sent]:
        """Feed what went to an internal topic on to the stage that reads it, hop after hop; return what
        every hop sent, in order."""
        out = []
        for s in sent:
            out.append(s)
            if s.topic == self.topics["pool_events"]:
                p = s.partition if s.partition is not None else partition_of(s.key)
                out += await self.deliver(await self.feed("route", s.topic, p, s.value, s.key, at=at), at)
            elif s.topic == self.topics["lead_events"]:
                p = s.partition if s.partition is not None else partition_of(s.key)
                out += await self.deliver(await self.feed("leads", s.topic, p, s.value, s.key, at=at), at)
        return out

    async def lead(
        self, value: bytes | None, key: bytes | None, partition: int | None = None, at: datetime = NOW
    ) -> list[Sent]:
        """A leads.new record all the way: leads stage, then (on the pool key's partition) route."""
        p = partition_of(key) if partition is None else partition
        return await self.deliver(await self.feed("leads", self.settings.topic_leads_new, p, value, key, at=at), at)

    async def deal(
        self, value: bytes | None, key: bytes | None, partition: int | None = None, at: datetime = NOW
    ) -> list[Sent]:
        """A deals.closed record all the way (parked deals stay parked)."""
        p = partition_of(key) if partition is None else partition
        return await self.deliver(await self.feed("leads", self.settings.topic_deals_closed, p, value, key, at=at), at)

    async def route(self, *values: bytes, pool: str = "p", at: datetime = NOW) -> list[Sent]:
        """Pool-log records of one pool, in order, to the route task of the pool key's partition."""
        sent = []
        for value in values:
            sent += await self.feed(
                "route", self.topics["pool_events"], self.pool_partition(pool), value, pool.encode(), at=at
            )
        return sent

    async def roster(self, value: bytes | None, key: bytes | None) -> list[Sent]:
        return await self.feed("roster", self.settings.topic_reps_roster, partition_of(key), value, key)

    async def policy(self, value: bytes | None, key: bytes | None) -> list[Sent]:
        return await self.feed("policies", self.settings.topic_policies, 0, value, key)

    # --- observing -------------------------------------------------------------------------------

    @staticmethod
    def pool_partition(pool: str) -> int:
        return partition_of(pool.encode())

    def sent(self, *names: str) -> list[Sent]:
        """What went to these topics (by their short name: dlq, assignments, pool_events, lead_events)."""
        topics = {(self.topics | self.outputs)[n] for n in names}
        return [s for s in self.log if s.topic in topics]

    def sent_total(self) -> dict[str, int]:
        return {name: len(self.sent(name)) for name in self.topics}

    def nothing_sent(self) -> bool:
        return self.log == []

    def forget(self) -> None:
        self.log.clear()

    def rows(self, stage: str, partition: int) -> dict[str, Any]:
        store = self.task(stage, partition).store
        assert store is not None
        return dict(store.items())

    def table(self, kind: str) -> dict[str, Any]:
        """One kind of row (`ledger`, `lead-index`, ...) over every partition, keys without the kind."""
        stage = "leads" if kind in ("lead-index", "parked-deals", "parked-activity") else "route"
        prefix = f"{kind}|"
        out = {}
        for partition in range(PARTITIONS):
            for k, v in self.rows(stage, partition).items():
                if k.startswith(prefix):
                    out[k[len(prefix) :]] = v
        return out

    def decisions(self, lead_id: str) -> list[dict[str, Any]]:
        """The decisions sent for one lead, in order."""
        return [s.json() for s in self.sent("assignments") if s.key == lead_id.encode()]

    def entry(self, pool: str, lead_id: str) -> dict[str, Any]:
        """The lead's ledger entry."""
        entry: dict[str, Any] = self.table("ledger")[f"{pool}|{lead_id}"]
        return entry

    def open_leads(self, pool: str) -> dict[str, int]:
        """Open leads per rep of the pool, as the loads table has them."""
        return {k.split("|")[1]: v["open"] for k, v in self.table("loads").items() if k.startswith(f"{pool}|")}

    def snapshot(self) -> dict[tuple[str, int], dict[str, Any]]:
        return {(stage, p): self.rows(stage, p) for stage in TABLE_OF for p in range(PARTITIONS)}

    # --- seeding ---------------------------------------------------------------------------------

    def seed(self, stage: str, partition: int, rows: dict[str, Any]) -> None:
        """Rows as if restored from the changelog (None deletes); the stage drops its caches, as after a
        restore."""
        task = self.task(stage, partition)
        assert task.store is not None
        task.store.apply(
            {k: None if v is None else orjson.dumps(v) for k, v in rows.items()}, (task.store.checkpoint or 0) + 1
        )
        if task.stage.on_reset is not None:
            task.stage.on_reset()

    def seed_route(self, pool: str, rows: dict[str, Any]) -> None:
        """Route rows of one pool: `{"loads|rep-a": {...}}` is stored as `loads|<pool>|rep-a`."""
        keyed = {}
        for k, v in rows.items():
            kind, _, rest = k.partition("|")
            keyed[f"{kind}|{pool}|{rest}" if rest else f"{kind}|{pool}"] = v
        self.seed("route", self.pool_partition(pool), keyed)

    def seed_parked(self, lead_id: str, *deals: DealUnrouted) -> None:
        """Deals parked as the leads stage keeps them (a list per lead)."""
        self.seed("leads", home(lead_id), {f"parked-deals|{lead_id}": [d.model_dump(mode="json") for d in deals]})

    def close_long_ago(self, pool: str, lead_id: str, at: datetime = LONG_AGO) -> None:
        """Pretend the worker closed this ledger entry at `at` (retention counts from released_at)."""
        entry = self.table("ledger")[f"{pool}|{lead_id}"]
        assert entry["status"] in ("won", "lost"), entry["status"]
        self.seed_route(pool, {f"ledger|{lead_id}": {**entry, "released_at": at.isoformat()}})


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


# --- public records (bytes as upstream would publish them) -------------------------------------


def lead(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "lead_id": "lead-1",
        "created_at": (NOW - timedelta(minutes=5)).isoformat(),
        "source": "web",
        "estimated_value": 1200.0,
        "contact": {"name": "Jane Roe", "email": "jane.roe@example.com", "phone": "+1 555 0100"},
    }
    data.update(overrides)
    return data


def deal(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"lead_id": "lead-1", "outcome": "won", "amount": 5000.0, "closed_at": NOW.isoformat()}
    data.update(overrides)
    return data


def rep(rep_id: str = "rep-a", pools: list[str] | None = None, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"rep_id": rep_id, "pools": pools if pools is not None else ["p"], "capacity": 10}
    data.update(overrides)
    return data


def policy(**overrides: Any) -> dict[str, Any]:
    """A policy document as published on routing.policies (validated by the test that uses it)."""
    data: dict[str, Any] = {"id": "p-policy", "version": 2}
    data.update(overrides)
    return data


def raw(data: Any) -> bytes:
    return json.dumps(data).encode()


# --- internal records (what the stages send each other) ----------------------------------------


def encode(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()


def rep_changed(pool: str, rep_id: str, **profile: Any) -> bytes:
    updated = RepUpdated.model_validate(rep(rep_id, [pool], **profile))
    return encode(RepChanged(pool=pool, rep_id=rep_id, profile=updated))


def rep_left(pool: str, rep_id: str) -> bytes:
    return encode(RepChanged(pool=pool, rep_id=rep_id, profile=None))


def lead_arrived(pool: str, lead_id: str = "lead-1", **fields: Any) -> bytes:
    created = LeadCreated.model_validate(lead(lead_id=lead_id, **fields))
    origin = Origin(topic="leads.new", partition=0, offset=7)
    return encode(LeadArrived(pool=pool, lead=created, received_at=NOW, origin=origin))


def deal_arrived(pool: str, lead_id: str = "lead-1", **fields: Any) -> bytes:
    closed = DealClosed.model_validate(deal(lead_id=lead_id, **fields))
    return encode(DealArrived(pool=pool, deal=closed, origin=Origin(topic="deals.closed", partition=1, offset=9)))


def deal_unrouted(
    lead_id: str = "lead-1", *, first_seen_at: datetime = NOW, origin: Origin | None = None, **fields: Any
) -> DealUnrouted:
    closed = DealClosed.model_validate(deal(lead_id=lead_id, **fields))
    origin = origin or Origin(topic="deals.closed", partition=3, offset=42)
    return DealUnrouted(deal=closed, origin=origin, first_seen_at=first_seen_at)


def policy_changed(pool: str, doc: dict[str, Any] | None) -> bytes:
    body = parse_policy(doc).model_dump(mode="json") if doc is not None else None
    return encode(PolicyChanged(pool=pool, policy=body))
