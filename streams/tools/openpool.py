"""`leadrelay pool` and `leadrelay claim`: what the open pool holds, and a rep's claim with its answer."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.events import ClaimResult, LeadClaim
from streams.kafka.changelog import namespace, read_table
from streams.kafka.clients import READ_COMMITTED, partitions_of, produce, read_all
from streams.kafka.security import client_kwargs
from streams.runtime.tables import changelog_topic
from streams.settings import Settings


@dataclass(frozen=True)
class Claimable:
    pool: str
    lead_id: str
    since: str  # when the decision that sent it to the open pool was made
    attempt: int
    previous_holders: tuple[str, ...]
    value: float

    def line(self) -> str:
        held = ", ".join(self.previous_holders) or "-"
        return (
            f"{self.lead_id:<24} [{self.pool}] since {self.since}  attempt {self.attempt}"
            f"  value {self.value:g}  held by: {held}"
        )


@dataclass(frozen=True)
class Waiting:
    pool: str
    lead_id: str
    position: int  # 1 = the next lead its pool assigns when capacity frees
    since: str  # when the decision that made it wait was made
    value: float
    due: str | None  # when max_wait sends it to the open pool (None: no limit)

    def line(self) -> str:
        until = f"  open pool at {self.due}" if self.due else ""
        return f"#{self.position:<4} {self.lead_id:<24} [{self.pool}] since {self.since}  value {self.value:g}{until}"


async def _route_rows(settings: Settings) -> dict[str, bytes]:
    return read_table(await read_all(settings, changelog_topic(settings.app_id, "route")))


async def waiting(settings: Settings, pool: str | None = None) -> list[Waiting]:
    """The leads waiting for capacity, in the order their pool takes them (the `wait` rows' key order:
    highest value, then oldest), numbered per pool."""
    rows = await _route_rows(settings)
    ledger = namespace(rows, "ledger")
    out: list[Waiting] = []
    places: dict[str, int] = {}
    for key in sorted(namespace(rows, "wait")):
        where, lead_id = key.split("|", 1)[0], key.rsplit("|", 1)[1]
        raw = ledger.get(f"{where}|{lead_id}")
        entry = orjson.loads(raw) if raw else {}
        if entry.get("status") != "waiting" or (pool is not None and where != pool):
            continue  # a row left behind (the lead closed), dropped by the worker when it gets there
        places[where] = places.get(where, 0) + 1
        decided = str((entry.get("decision") or {}).get("decided_at", ""))
        value = float(entry.get("value") or 0.0)
        out.append(Waiting(where, lead_id, places[where], decided, value, entry.get("sla_due")))
    return out


async def claimable(settings: Settings, pool: str | None = None) -> list[Claimable]:
    """The claimable leads, as the route table's changelog (committed) says, oldest first."""
    rows = await _route_rows(settings)
    out = []
    for key, raw in namespace(rows, "ledger").items():
        entry = orjson.loads(raw)
        where, lead_id = key.split("|", 1)
        if entry.get("status") != "claimable" or (pool is not None and where != pool):
            continue
        decision = entry.get("decision") or {}
        out.append(
            Claimable(
                where,
                lead_id,
                str(decision.get("decided_at", "")),
                int(decision.get("attempt", 1)),
                tuple(entry.get("holders") or ()),
                float(entry.get("value") or 0.0),
            )
        )
    return sorted(out, key=lambda c: (c.since, c.pool, c.lead_id))


async def claim(
    settings: Settings, lead_id: str, rep_id: str, *, pool: str | None = None, timeout: float = 30.0
) -> tuple[LeadClaim, ClaimResult | None]:
    """Send one claim and wait for its answer (None: no answer within `timeout` seconds)."""
    record = LeadClaim(
        claim_id=f"cli-{uuid.uuid4().hex[:12]}",
        lead_id=lead_id,
        rep_id=rep_id,
        pool=pool,
        requested_at=datetime.now(UTC),
    )
    topic = settings.topic_claim_results
    parts = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False, isolation_level=READ_COMMITTED)
    try:
        await consumer.start()
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)
        for tp in parts:  # fix the positions before the claim goes out, so its answer cannot slip past
            await consumer.position(tp)
        await produce(settings, settings.topic_claims, [(lead_id.encode(), record.model_dump_json().encode())])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    answer = ClaimResult.model_validate_json(r.value)
                    if answer.claim_id == record.claim_id:
                        return record, answer
            await asyncio.sleep(0)
        return record, None
    finally:
        await consumer.stop()
