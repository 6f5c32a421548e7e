"""route and match_deals re-read records their consumer skipped, before handling the current one."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from streams import gaps
from tests.agents.conftest import LEAD_EVENTS, POOL_EVENTS, Kit

pytestmark = pytest.mark.asyncio


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch, kit: Kit) -> list[tuple[str, int, int, int]]:
    calls: list[tuple[str, int, int, int]] = []
    records = {POOL_EVENTS: kit.lead_arrived("p", "lead-skipped"), LEAD_EVENTS: b"{not json"}

    async def fake_fetch(ctx, topic, partition, start, end):  # the broker-backed read is tested elsewhere
        calls.append((topic, partition, start, end))
        return [SimpleNamespace(key=b"k", value=records[topic], offset=o) for o in range(start, end)]

    monkeypatch.setattr(gaps, "fetch_range", fake_fetch)
    for name in ("route", "match_deals"):
        kit.agent(name).tracker.clear()
    return calls


async def test_route_handles_a_skipped_lead_in_log_order(kit: Kit, fetched) -> None:
    async with kit.agent("route").test_context() as agent:
        for rep in ("rep-a", "rep-b"):
            await agent.put(value=kit.rep_changed("p", rep), key=b"p")
        await agent.put(value=kit.lead_arrived("p", "lead-1"), key=b"p")
        agent.sent_offset += 1  # the consumer never delivers offset 3
        await agent.put(value=kit.lead_arrived("p", "lead-2"), key=b"p")
    assert fetched == [(POOL_EVENTS, 0, 3, 4)]
    assert [s.json()["lead_id"] for s in kit.sent("assignments")] == ["lead-1", "lead-skipped", "lead-2"]
    registry = kit.ctx.metrics.registry
    assert registry.get_sample_value("leadrelay_offset_gap_records_total", {"topic": POOL_EVENTS}) == 1


async def test_a_bad_skipped_record_is_dead_lettered_with_its_own_offset(kit: Kit, fetched) -> None:
    async with kit.agent("match_deals").test_context() as agent:
        await agent.put(value=kit.lead_indexed("lead-1", "p"), key=b"lead-1")
        agent.sent_offset += 2
        await agent.put(value=kit.lead_indexed("lead-2", "p"), key=b"lead-2")
        assert dict(agent.results) == {0: True, 1: True}, "the current record is still handled"
    assert fetched == [(LEAD_EVENTS, 0, 1, 3)]
    dead = kit.sent("dlq")
    assert [d.header("x-leadrelay-source-offset") for d in dead] == ["1", "2"]
    assert {d.header("x-leadrelay-reason") for d in dead} == {"invalid_json"}


async def test_a_skip_right_after_assignment_is_found_from_the_committed_offset(
    kit: Kit, fetched, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def committed(ctx, topic, partition):
        return 0  # the group had committed nothing: offset 0 is the first record to handle

    monkeypatch.setattr(gaps, "committed_offset", committed)
    async with kit.agent("route").test_context() as agent:
        agent.sent_offset = 1  # the consumer starts at 1: offset 0 was never delivered
        await agent.put(value=kit.lead_arrived("p", "lead-1"), key=b"p")
    assert fetched == [(POOL_EVENTS, 0, 0, 1)]
    assert [s.json()["lead_id"] for s in kit.sent("assignments")] == ["lead-skipped", "lead-1"]
