"""streams/runtime/loop.py: which tasks a turn of the loop handles (no broker: _handle is recorded)."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from streams.runtime.loop import Runtime, Stage, Task
from streams.settings import Settings

pytestmark = pytest.mark.asyncio


async def _noop(ctx: Any, *args: Any) -> None:
    return None


def runtime_with(tasks: int, monkeypatch: pytest.MonkeyPatch) -> tuple[Runtime, list[tuple[str, bool, int]]]:
    stage = Stage("route", ("pool-events",), _noop, housekeeping=_noop)
    runtime = Runtime(Settings(housekeeping_interval_seconds=30), [stage], lambda task: None)
    runtime.consumer = object()  # type: ignore[assignment]  # _step only asserts there is one
    for p in range(tasks):
        runtime.tasks[("route", p)] = Task(stage, p, [], None, None, ready=True)
    handled: list[tuple[str, bool, int]] = []

    async def record(task: Task, records: Any, *, now: datetime | None = None) -> None:
        handled.append((task.name, now is not None, len(list(records))))

    monkeypatch.setattr(runtime, "_handle", record)
    return runtime, handled


async def test_one_task_housekeeps_per_turn_and_every_task_gets_its_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks that start together fall due together; their sweeps must not all block one turn."""
    runtime, handled = runtime_with(4, monkeypatch)
    for turn in range(4):
        await runtime._step()
        assert [h for h in handled if h[1]] == [(f"route-{p}", True, 0) for p in range(turn + 1)]
    await runtime._step()  # every task swept once: none is due again before the interval
    assert len(handled) == 4


async def test_records_are_not_held_back_by_another_tasks_housekeeping(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, handled = runtime_with(3, monkeypatch)
    for task in runtime.tasks.values():
        task.backlog = [SimpleNamespace(topic="pool-events", offset=0)]
    await runtime._step()
    assert handled == [("route-0", True, 1), ("route-1", False, 1), ("route-2", False, 1)]
