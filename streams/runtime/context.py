"""What a handler sees: settings, metrics, its task's table rows and its task's sends.

A context is bound to one task (stage x partition, streams/runtime/loop.py): `ctx.tables.<kind>` reads
and writes that task's rows through its overlay (streams/runtime/store.py), `ctx.topics.<name>.send`
goes into the task's open transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from streams.kafka.topics import lead_events_topic, pool_events_topic
from streams.runtime.loop import Outbox, Task
from streams.runtime.store import Overlay
from streams.runtime.tables import MATCH_KINDS, ROUTE_KINDS, SEP
from streams.settings import Settings
from streams.web.metrics import Metrics


@dataclass
class Sender:
    """`ctx.topics.<name>.send(...)`, into the task's open transaction."""

    task: Task
    topic: str

    async def send(
        self,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        outbox = self.task.outbox
        assert isinstance(outbox, Outbox), f"task {self.task.name} has no open transaction"
        await outbox.send(
            self.topic, key=key, value=value, headers=headers, timestamp_ms=timestamp_ms, partition=partition
        )


class View:
    """One kind of row of a task's table (`ledger|<pool>|<lead>` ...), as a mapping over its overlay."""

    def __init__(self, overlay: Overlay, kind: str | None) -> None:
        self.overlay = overlay
        self.prefix = f"{kind}{SEP}" if kind else ""
        self._swept_to: str | None = None

    def get(self, key: str, default: Any = None) -> Any:
        value = self.overlay.get(self.prefix + key)
        return default if value is None else value

    def __getitem__(self, key: str) -> Any:
        value = self.overlay.get(self.prefix + key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self.overlay.set(self.prefix + key, value)

    def __delitem__(self, key: str) -> None:
        self.overlay.delete(self.prefix + key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.overlay.get(self.prefix + key) is not None

    def items(self) -> Iterator[tuple[str, Any]]:
        n = len(self.prefix)
        return ((k[n:], v) for k, v in self.overlay.items(self.prefix))

    def scan(self, after: str | None, limit: int) -> tuple[list[tuple[str, Any]], str | None]:
        """Up to `limit` rows after the key `after` (None: from the start), and where to go on from (None:
        the end was reached)."""
        n = len(self.prefix)
        start = None if after is None else self.prefix + after
        rows = list(islice(((k[n:], v) for k, v in self.overlay.items(self.prefix, start)), limit))
        return rows, (rows[-1][0] if len(rows) == limit else None)

    def prefixed(self, sub: str, limit: int) -> list[tuple[str, Any]]:
        """Up to `limit` rows whose key (within the kind) starts with `sub`, in key order."""
        n = len(self.prefix)
        return [(k[n:], v) for k, v in self.overlay.ordered(self.prefix + sub, limit)]

    def sweep(self, limit: int) -> list[tuple[str, Any]]:
        """The next `limit` rows of a sweep that wraps around: housekeeping looks at a bounded number of
        rows per step, so it never stalls the loop however large the table grows."""
        rows, self._swept_to = self.scan(self._swept_to, limit)
        return rows

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self.items())

    def __len__(self) -> int:
        return sum(1 for _ in self.items())


class Tables:
    """The kinds of row a task's table holds, by the names handlers use (`ctx.tables.ledger`, ...)."""

    def __init__(self, task: Task) -> None:
        overlay = task.overlay
        table = task.stage.table
        self.overlay = overlay  # for guarded(): a failed record's own writes are undone
        if overlay is None:
            return
        kinds = {"route": ROUTE_KINDS, "match": MATCH_KINDS}.get(table or "", {})
        for kind in kinds:
            setattr(self, kind.replace("-", "_"), View(overlay, kind))
        if table == "rep-pools":
            self.rep_pools = View(overlay, None)

    def __getattr__(self, name: str) -> View:  # the kinds are set per table in __init__
        raise AttributeError(f"this task's table has no rows of kind {name!r}")


class Topics:
    def __init__(self, settings: Settings, task: Task) -> None:
        self.assignments = Sender(task, settings.topic_assignments)
        self.dlq = Sender(task, settings.topic_dlq)
        self.claim_results = Sender(task, settings.topic_claim_results)
        self.pool_events = Sender(task, pool_events_topic(settings))
        self.lead_events = Sender(task, lead_events_topic(settings))


@dataclass(frozen=True)
class Context:
    settings: Settings
    topics: Topics
    tables: Tables
    metrics: Metrics
    partition: int = 0  # the task's partition (its stage's caches are per partition)


def binder(settings: Settings, metrics: Metrics) -> Callable[[Task], Context]:
    def bind(task: Task) -> Context:
        topics, tables = Topics(settings, task), Tables(task)
        return Context(settings=settings, topics=topics, tables=tables, metrics=metrics, partition=task.partition)

    return bind
