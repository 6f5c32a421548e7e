"""Agent wiring tests without a broker: one Faust app per session, topics' send mocked, tables reset per test.

`agent.test_context()` feeds a private in-memory channel. Each `put()` builds a synthetic message:
topic = the agent's real input topic name, partition = 0 (unless given), offset = a counter starting at 0
for every new test context, timestamp = `time()` (unless given). `put()` waits for the agent's yield;
every agent here yields a bool per event (True handled, False dead-lettered), recorded in `results`.
Tables, the route agent's in-memory pool cache and the send mocks are reset around every test.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import AsyncMock

import faust
import pytest
import pytest_asyncio
from pydantic import BaseModel

from routing.policy import parse_policy
from schemas.events import DealClosed, LeadCreated, RepUpdated
from schemas.internal import (
    DealArrived,
    DealUnrouted,
    IndexExpired,
    LeadArrived,
    LeadIndexed,
    LedgerExpired,
    Origin,
    PendingExpired,
    PolicyChanged,
    RepChanged,
)
from streams.app import LeadRelay, create_app
from streams.context import Context
from streams.settings import Settings

APP_ID = "t-agents"
POOL_EVENTS = f"{APP_ID}-pool-events"
LEAD_EVENTS = f"{APP_ID}-lead-events"
MAX_PAYLOAD = 1024  # small, so "payload_too_large" needs no megabyte test records
RULES = [{"pool": "emea", "name": "emea-region", "match": {"region": ["EMEA"]}}]
NOW = datetime.now(UTC)
LONG_AGO = datetime(2020, 1, 15, 9, 30, tzinfo=UTC)


def _close_consumer_thread_loop(app: faust.App) -> None:
    """The first stream iteration creates app.consumer, whose (never started) thread owns an event loop.

    Nobody closes it, and under filterwarnings=error its ResourceWarning at garbage collection fails
    the session, so close it here.
    """
    consumer = getattr(app, "_consumer", None)
    thread = getattr(consumer, "_thread", None)
    loop = getattr(thread, "thread_loop", None)
    if loop is not None and not loop.is_closed():
        loop.close()


@pytest_asyncio.fixture(scope="session")
async def relay(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LeadRelay]:
    tmp = tmp_path_factory.mktemp("agents")
    settings = Settings.from_env(
        {
            # The agents' functions through Faust's test_context: the legacy runtime's wiring (the
            # transactional runtime's is tests/agents/test_stages.py).
            "LEADRELAY_RUNTIME": "faust",
            "LEADRELAY_STORE": "memory://",
            "LEADRELAY_DATA_DIR": str(tmp),
            "LEADRELAY_APP_ID": APP_ID,
            "LEADRELAY_MAX_PAYLOAD_BYTES": str(MAX_PAYLOAD),
            "LEADRELAY_TERRITORY_RULES": json.dumps(RULES),
        }
    )
    built = create_app(settings)
    built.app.finalize()
    built.app.flow_control.resume()
    for f in fields(built.ctx.topics):
        # A real send() would start the producer and fail without a broker.
        getattr(built.ctx.topics, f.name).send = AsyncMock(name=f"{f.name}.send")
    yield built
    _close_consumer_thread_loop(built.app)


@dataclass(frozen=True)
class Sent:
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]

    def json(self) -> Any:
        return json.loads(self.value)

    def header(self, name: str) -> str:
        return self.headers[name].decode()


class Kit:
    """What a test needs around the app: sent records, table contents, event builders."""

    def __init__(self, relay: LeadRelay) -> None:
        self.relay = relay
        self.ctx: Context = relay.ctx

    # --- observing -------------------------------------------------------------------------
    def agent(self, name: str) -> Any:
        return self.relay.agents[name]

    def sent(self, topic: str) -> list[Sent]:
        mock: AsyncMock = getattr(self.ctx.topics, topic).send
        out = []
        for call in mock.await_args_list:
            assert not call.args, "topics are sent to with keyword arguments only"
            headers = call.kwargs.get("headers") or []
            out.append(Sent(call.kwargs.get("key"), call.kwargs["value"], dict(headers)))
        return out

    def sent_total(self) -> dict[str, int]:
        return {f.name: len(self.sent(f.name)) for f in fields(self.ctx.topics)}

    def table(self, name: str) -> dict[str, Any]:
        return dict(self.ctx.tables.views()[name].data.items())

    def tables_snapshot(self) -> dict[str, dict[str, Any]]:
        return {name: json.loads(json.dumps(self.table(name))) for name in self.ctx.tables.views()}

    def write(self, table: str, key: str, value: Any) -> None:
        """Direct store write (memory store only): no event context, no changelog."""
        self.ctx.tables.views()[table].data[key] = value

    def closed_long_ago(self, ledger_key: str, at: datetime = LONG_AGO) -> None:
        """Pretend the worker closed this ledger entry at `at` (retention counts from released_at)."""
        entry = self.table("ledger")[ledger_key]
        assert entry["status"] in ("won", "lost"), entry["status"]
        self.write("ledger", ledger_key, {**entry, "released_at": at.isoformat()})

    def forget_sent(self) -> None:
        for f in fields(self.ctx.topics):
            getattr(self.ctx.topics, f.name).send.reset_mock()

    def reset(self) -> None:
        for f in fields(self.ctx.tables):
            getattr(self.ctx.tables, f.name).data.clear()
        # route keeps frames and parsed policies per pool in memory (the app lives for the whole session)
        self.agent("route").cache.clear()
        fence = self.ctx.fence  # time between tests is not a stall of the worker
        assert fence is not None
        fence.suspect, fence._last, fence._evicted_in = False, None, None
        for agent in self.relay.agents.values():  # offsets restart at 0 in every test context
            if hasattr(agent, "tracker"):  # every agent; sweep is a timer
                agent.tracker.clear()
        self.forget_sent()
        # Changelog writes queue up in the (never started) producer's buffer: drop them.
        pending = self.relay.app.producer.buffer.pending
        while not pending.empty():
            pending.get_nowait()

    # --- public records (bytes as upstream would publish them) -----------------------------
    @staticmethod
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

    @staticmethod
    def deal(**overrides: Any) -> dict[str, Any]:
        data: dict[str, Any] = {"lead_id": "lead-1", "outcome": "won", "amount": 5000.0, "closed_at": NOW.isoformat()}
        data.update(overrides)
        return data

    @staticmethod
    def rep(rep_id: str = "rep-a", pools: list[str] | None = None, **overrides: Any) -> dict[str, Any]:
        data: dict[str, Any] = {"rep_id": rep_id, "pools": pools if pools is not None else ["p"], "capacity": 10}
        data.update(overrides)
        return data

    @staticmethod
    def raw(data: Any) -> bytes:
        return json.dumps(data).encode()

    # --- internal events --------------------------------------------------------------------
    @staticmethod
    def encode(model: BaseModel) -> bytes:
        return model.model_dump_json().encode()

    def rep_changed(self, pool: str, rep_id: str, **profile: Any) -> bytes:
        updated = RepUpdated.model_validate(self.rep(rep_id, [pool], **profile))
        return self.encode(RepChanged(pool=pool, rep_id=rep_id, profile=updated))

    def rep_left(self, pool: str, rep_id: str) -> bytes:
        return self.encode(RepChanged(pool=pool, rep_id=rep_id, profile=None))

    def lead_arrived(self, pool: str, lead_id: str = "lead-1", **lead: Any) -> bytes:
        created = LeadCreated.model_validate(self.lead(lead_id=lead_id, **lead))
        origin = Origin(topic="leads.new", partition=0, offset=7)
        return self.encode(LeadArrived(pool=pool, lead=created, received_at=NOW, origin=origin))

    def deal_arrived(self, pool: str, lead_id: str = "lead-1", **deal: Any) -> bytes:
        closed = DealClosed.model_validate(self.deal(lead_id=lead_id, **deal))
        return self.encode(
            DealArrived(pool=pool, deal=closed, origin=Origin(topic="deals.closed", partition=1, offset=9))
        )

    def ledger_expired(self, pool: str, *lead_ids: str) -> bytes:
        return self.encode(LedgerExpired(pool=pool, lead_ids=list(lead_ids)))

    def lead_indexed(self, lead_id: str, pool: str, rep_id: str | None = "rep-a") -> bytes:
        return self.encode(LeadIndexed(lead_id=lead_id, pool=pool, rep_id=rep_id, decision_id=f"d-{lead_id}"))

    def deal_unrouted(
        self, lead_id: str = "lead-1", *, first_seen_at: datetime = NOW, origin: Origin | None = None, **deal: Any
    ) -> DealUnrouted:
        closed = DealClosed.model_validate(self.deal(lead_id=lead_id, **deal))
        origin = origin or Origin(topic="deals.closed", partition=3, offset=42)
        return DealUnrouted(deal=closed, origin=origin, first_seen_at=first_seen_at)

    def pending_expired(self, lead_id: str) -> bytes:
        return self.encode(PendingExpired(lead_id=lead_id))

    def index_expired(self, *lead_ids: str) -> bytes:
        return self.encode(IndexExpired(lead_ids=list(lead_ids)))

    def park(self, lead_id: str, *deals: DealUnrouted) -> None:
        """Parked deals as match_deals stores them (a list per lead), written straight into the table."""
        self.write("parked_deals", lead_id, [d.model_dump(mode="json") for d in deals])

    # --- policies -------------------------------------------------------------------------------
    @staticmethod
    def policy(**overrides: Any) -> dict[str, Any]:
        """A policy document as published on routing.policies (validated by the test that uses it)."""
        data: dict[str, Any] = {"id": "p-policy", "version": 2}
        data.update(overrides)
        return data

    def policy_changed(self, pool: str, policy: dict[str, Any] | None) -> bytes:
        body = parse_policy(policy).model_dump(mode="json") if policy is not None else None
        return self.encode(PolicyChanged(pool=pool, policy=body))


@pytest.fixture
def kit(relay: LeadRelay) -> Iterator[Kit]:
    k = Kit(relay)
    k.reset()
    yield k
    k.reset()


@pytest.fixture(autouse=True)
def no_committed_offsets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gap repair asks the broker for the group's committed offset at a partition's first record; here
    there is no broker, so the answer is "unknown" (tests/agents/test_gaps.py sets its own)."""
    from streams import gaps

    async def unknown(*_: Any) -> None:
        return None

    monkeypatch.setattr(gaps, "committed_offset", unknown)
