"""Every agent re-reads records its consumer skipped and handles them before the current one."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from streams import gaps
from tests.agents.conftest import LEAD_EVENTS, POOL_EVENTS, Kit

pytestmark = pytest.mark.asyncio

TS_MS = 1_717_243_200_250  # what aiokafka gives: milliseconds


class FakeBroker:
    """fetch_range answers from these records (the broker-backed read is tested in integration)."""

    def __init__(self) -> None:
        self.records: dict[str, list[bytes]] = {}  # topic -> value of offset i (b"" = no record there)
        self.calls: list[tuple[str, int, int, int]] = []

    async def fetch(self, ctx: Any, topic: str, partition: int, start: int, end: int) -> list[Any]:
        self.calls.append((topic, partition, start, end))
        log = self.records.get(topic, [])
        return [
            SimpleNamespace(topic=topic, partition=partition, offset=o, key=b"k", value=log[o], timestamp=TS_MS)
            for o in range(start, min(end, len(log)))
            if log[o]
        ]


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> FakeBroker:
    fake = FakeBroker()
    monkeypatch.setattr(gaps, "fetch_range", fake.fetch)
    return fake


def gap_records(kit: Kit, topic: str) -> float | None:
    return kit.ctx.metrics.registry.get_sample_value("leadrelay_offset_gap_records_total", {"topic": topic})


async def test_route_handles_a_skipped_lead_in_log_order(kit: Kit, broker: FakeBroker) -> None:
    broker.records[POOL_EVENTS] = [b"", b"", b"", kit.lead_arrived("p", "lead-skipped")]
    async with kit.agent("route").test_context() as agent:
        for rep in ("rep-a", "rep-b"):
            await agent.put(value=kit.rep_changed("p", rep), key=b"p")
        await agent.put(value=kit.lead_arrived("p", "lead-1"), key=b"p")
        agent.sent_offset += 1  # the consumer never delivers offset 3
        await agent.put(value=kit.lead_arrived("p", "lead-2"), key=b"p")
    assert broker.calls == [(POOL_EVENTS, 0, 3, 4)]
    assert [s.json()["lead_id"] for s in kit.sent("assignments")] == ["lead-1", "lead-skipped", "lead-2"]
    assert gap_records(kit, POOL_EVENTS) == 1


async def test_a_bad_skipped_record_is_dead_lettered_with_its_own_offset(kit: Kit, broker: FakeBroker) -> None:
    broker.records[LEAD_EVENTS] = [b"", b"{not json", b"{not json"]
    async with kit.agent("match_deals").test_context() as agent:
        await agent.put(value=kit.lead_indexed("lead-1", "p"), key=b"lead-1")
        agent.sent_offset += 2
        await agent.put(value=kit.lead_indexed("lead-2", "p"), key=b"lead-2")
        assert dict(agent.results) == {0: True, 1: True}, "the current record is still handled"
    assert broker.calls == [(LEAD_EVENTS, 0, 1, 3)]
    dead = kit.sent("dlq")
    assert [d.header("x-leadrelay-source-offset") for d in dead] == ["1", "2"]
    assert {d.header("x-leadrelay-reason") for d in dead} == {"invalid_json"}


async def test_a_skip_right_after_assignment_is_found_from_the_committed_offset(
    kit: Kit, broker: FakeBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def committed(ctx, topic, partition):
        return 0  # the group had committed nothing: offset 0 is the first record to handle

    monkeypatch.setattr(gaps, "committed_offset", committed)
    broker.records[POOL_EVENTS] = [kit.lead_arrived("p", "lead-skipped")]
    async with kit.agent("route").test_context() as agent:
        agent.sent_offset = 1  # the consumer starts at 1: offset 0 was never delivered
        await agent.put(value=kit.lead_arrived("p", "lead-1"), key=b"p")
    assert broker.calls == [(POOL_EVENTS, 0, 0, 1)]
    assert [s.json()["lead_id"] for s in kit.sent("assignments")] == ["lead-skipped", "lead-1"]


async def test_ingress_re_reads_skipped_leads_with_their_own_origin_and_time(kit: Kit, broker: FakeBroker) -> None:
    """The case CI caught: after kill -9 and a rebuild, Faust committed past leads.new records."""
    topic = kit.agent("ingest_leads").channel.get_topic_name()
    broker.records[topic] = [b"", kit.raw(kit.lead(lead_id="lead-skipped", pool="p")), b"{bad"]
    async with kit.agent("ingest_leads").test_context() as agent:
        await agent.put(value=kit.raw(kit.lead(lead_id="lead-0", pool="p")), key=b"lead-0")
        agent.sent_offset += 2
        await agent.put(value=kit.raw(kit.lead(lead_id="lead-3", pool="p")), key=b"lead-3")
    arrived = [json.loads(s.value) for s in kit.sent("lead_events")]
    assert [a["lead"]["lead_id"] for a in arrived] == ["lead-0", "lead-skipped", "lead-3"]
    skipped = arrived[1]
    assert skipped["origin"] == {"topic": topic, "partition": 0, "offset": 1}
    assert skipped["received_at"].startswith("2024-06-01T12:00:00.25")  # Kafka time, ms -> s
    [dead] = kit.sent("dlq")
    assert dead.header("x-leadrelay-source-offset") == "2"
    assert gap_records(kit, topic) == 2


async def test_a_jump_over_compacted_offsets_is_not_counted(kit: Kit, broker: FakeBroker) -> None:
    """Compaction and transaction markers leave offsets without records: nothing to handle, no alarm."""
    topic = kit.agent("ingest_roster").channel.get_topic_name()
    async with kit.agent("ingest_roster").test_context() as agent:
        await agent.put(value=kit.raw({"rep_id": "r1", "pools": ["p"], "capacity": 5}), key=b"r1")
        agent.sent_offset += 40
        await agent.put(value=kit.raw({"rep_id": "r2", "pools": ["p"], "capacity": 5}), key=b"r2")
        assert dict(agent.results) == {0: True, 1: True}
    assert broker.calls == [(topic, 0, 1, 41)]
    assert not gap_records(kit, topic)


async def test_a_failed_re_read_is_counted_and_the_current_record_still_handled(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: Any) -> list[Any]:
        raise OSError("broker unreachable")

    monkeypatch.setattr(gaps, "fetch_range", broken)
    topic = kit.agent("ingest_deals").channel.get_topic_name()
    async with kit.agent("ingest_deals").test_context() as agent:
        await agent.put(value=kit.raw(kit.deal(lead_id="lead-1")), key=b"lead-1")
        agent.sent_offset += 3
        await agent.put(value=kit.raw(kit.deal(lead_id="lead-2")), key=b"lead-2")
        assert dict(agent.results) == {0: True, 1: True}
    registry = kit.ctx.metrics.registry
    assert registry.get_sample_value("leadrelay_offset_gap_unread_total", {"topic": topic}) == 1
