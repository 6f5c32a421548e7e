"""After a stall, an agent writes nothing for an event whose partition moved while it stood still."""

from __future__ import annotations

from typing import Any

import pytest

from tests.agents.conftest import Kit

pytestmark = pytest.mark.asyncio


def evicted(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The fence saw a stall, and the group coordinator no longer lists this worker."""
    fence = kit.ctx.fence
    assert fence is not None
    fence.suspect = True
    asked: list[bool] = []

    async def not_a_member() -> bool:
        asked.append(True)
        return False

    monkeypatch.setattr(fence, "_still_member", not_a_member)
    monkeypatch.setattr("streams.fence.RETRY_SECONDS", 0.0)
    return asked


async def test_a_zombie_drops_the_lead_it_held_and_writes_no_state(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    async with kit.agent("route").test_context() as agent:
        await agent.put(value=kit.rep_changed("p", "rep-a"), key=b"p")
        before = kit.tables_snapshot()
        kit.forget_sent()
        asked = evicted(kit, monkeypatch)
        await agent.put(value=kit.lead_arrived("p", "lead-1"), key=b"p")
        assert agent.results[1] is False
    assert asked == [True]
    assert kit.tables_snapshot() == before, "no table row written by the evicted worker"
    assert kit.sent_total() == dict.fromkeys(kit.sent_total(), 0), "nothing sent, not even a dead letter"
    registry = kit.ctx.metrics.registry
    assert registry.get_sample_value("leadrelay_fenced_events_total", {"agent": "route"}) == 1


async def test_a_worker_still_in_the_group_goes_on_after_a_stall(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    fence = kit.ctx.fence
    assert fence is not None
    fence.suspect = True

    async def member() -> bool:
        return True

    monkeypatch.setattr(fence, "_still_member", member)
    async with kit.agent("route").test_context() as agent:
        await agent.put(value=kit.rep_changed("p", "rep-a"), key=b"p")
        await agent.put(value=kit.lead_arrived("p", "lead-1"), key=b"p")
    assert [s.json()["rep_id"] for s in kit.sent("assignments")] == ["rep-a"]
    assert not fence.suspect


async def test_a_stall_during_the_sends_of_match_deals_stops_the_table_write(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deal parked for lead-1 is forwarded; the worker freezes in that send; the delete of the parked
    row must not follow when the partition moved meanwhile (its new owner forwards and deletes)."""
    async with kit.agent("match_deals").test_context() as agent:
        await agent.put(value=kit.encode(kit.deal_unrouted("lead-1")), key=b"lead-1")
        parked = kit.table("parked_deals")
        assert list(parked) == ["lead-1"]
        send = kit.ctx.topics.pool_events.send
        asked: list[bool] = []

        async def frozen_send(*args: Any, **kwargs: Any) -> None:
            asked.extend(evicted(kit, monkeypatch))  # the stall is noticed while this send is under way

        send.side_effect = frozen_send
        try:
            await agent.put(value=kit.lead_indexed("lead-1", "p"), key=b"lead-1")
        finally:
            send.side_effect = None
        assert agent.results[1] is False
        assert send.await_count == 1, "the parked deal was forwarded before the stall"
    assert list(kit.table("parked_deals")) == ["lead-1"], "the parked row stays for the partition's owner"
    assert kit.sent("dlq") == []


class FrozenDuringDecision:
    """route's decision, with the worker frozen for 18 s in the middle of it (as SIGSTOP would)."""

    def __init__(self, kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
        import agents.route

        fence = kit.ctx.fence
        assert fence is not None
        self.now = 1000.0
        monkeypatch.setattr(fence, "_clock", lambda: self.now)
        self.calls = 0
        real = agents.route.assign

        def frozen_assign(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == 1:
                self.now += 18
            return real(*args, **kwargs)

        monkeypatch.setattr(agents.route, "assign", frozen_assign)


async def test_a_stall_inside_a_decision_is_settled_and_the_decision_redone(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    fence = kit.ctx.fence
    assert fence is not None

    async def member() -> bool:
        return True

    monkeypatch.setattr(fence, "_still_member", member)
    async with kit.agent("route").test_context() as agent:
        await agent.put(value=kit.rep_changed("p", "rep-a"), key=b"p")
        frozen = FrozenDuringDecision(kit, monkeypatch)
        await agent.put(value=kit.lead_arrived("p", "lead-1"), key=b"p")
        assert agent.results[1] is True
    assert frozen.calls == 2, "decided again after the membership check"
    assert [s.json()["rep_id"] for s in kit.sent("assignments")] == ["rep-a"]
    assert kit.table("loads")["p|rep-a"]["open"] == 1, "written once"
    assert kit.ctx.metrics.registry.get_sample_value("leadrelay_stalls_total") == 1


async def test_a_stall_inside_a_decision_of_an_evicted_worker_writes_nothing(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with kit.agent("route").test_context() as agent:
        await agent.put(value=kit.rep_changed("p", "rep-a"), key=b"p")
        before = kit.tables_snapshot()
        kit.forget_sent()
        asked = evicted(kit, monkeypatch)
        kit.ctx.fence.suspect = False  # type: ignore[union-attr]  # the stall happens inside the decision
        frozen = FrozenDuringDecision(kit, monkeypatch)
        await agent.put(value=kit.lead_arrived("p", "lead-1"), key=b"p")
        assert agent.results[1] is False
    assert frozen.calls == 1 and asked == [True]
    assert kit.tables_snapshot() == before
    assert kit.sent_total() == dict.fromkeys(kit.sent_total(), 0)
