"""Consumer lag per assigned input partition, as the gauge `leadrelay_consumer_lag_records{topic, partition}`.

A timer on every worker reads, for the partitions its consumer owns, the log end offset (one
ListOffsets request to the brokers) and the offset this worker has committed; lag = end - committed.
That is the number kafka-consumer-groups.sh shows, measured by the one process that knows it first.

- Table changelog partitions are left out: they are read for recovery and standbys, not consumed.
- Only partitions assigned to this worker get a series, so labels are bounded by partition counts and
  `sum()` across workers counts each partition once. Series of partitions that moved away are removed.
- While a rebalance or recovery runs, newly assigned partitions have no committed offset yet: their
  lag is not guessed, and partitions still owned keep their last value until the next measurement.
- A partition this group never committed is measured from the log start (Faust's auto offset reset
  is "earliest").
- The committed offsets come from Faust's consumer (`_committed_offset`: seeded from the broker when
  partitions are assigned, updated on every commit). tests/unit/test_metrics.py checks the attribute
  still exists on Faust's Consumer, so an upgrade that renames it fails loudly instead of going blind.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import faust

from streams.metrics import Metrics

log = logging.getLogger("leadrelay.lag")
INTERVAL_SECONDS = 10.0


def source_partitions(app: faust.App) -> list[Any]:
    """Assigned partitions of the topics the agents consume (not table changelogs)."""
    changelogs = app.tables.changelog_topics
    return sorted(tp for tp in app.consumer.assignment() if tp.topic not in changelogs)


async def measure(app: faust.App) -> dict[tuple[str, int], int]:
    """Lag of every assigned source partition whose committed offset is known."""
    consumer = app.consumer
    tps = source_partitions(app)
    if not tps:
        return {}
    committed: Mapping[Any, int | None] = consumer._committed_offset
    ends = await consumer.highwaters(*tps)
    never = [tp for tp in tps if not _known(committed.get(tp))]
    starts = await consumer.earliest_offsets(*never) if never else {}
    lag: dict[tuple[str, int], int] = {}
    for tp in tps:
        end = ends.get(tp)
        position = committed.get(tp)
        start = position if _known(position) else starts.get(tp)
        if end is None or start is None:
            continue
        lag[(tp.topic, tp.partition)] = max(0, int(end) - int(start))
    return lag


def _known(offset: int | None) -> bool:
    return offset is not None and offset >= 0


async def update(app: faust.App, metrics: Metrics) -> None:
    """One measurement. During a rebalance, only drop partitions that are no longer ours."""
    try:
        owned = [(tp.topic, tp.partition) for tp in source_partitions(app)]
        if app.rebalancing or not app.tables.recovery.completed.is_set():
            metrics.set_consumer_lag({}, keep=owned)
            return
        lag = await measure(app)
    except Exception as exc:  # a broker hiccup must not kill the timer; the next tick retries
        metrics.lag_errors.inc()
        log.warning("could not measure consumer lag: %s", type(exc).__name__)
        return
    metrics.set_consumer_lag(lag)


def register(app: faust.App, metrics: Metrics, *, interval: float = INTERVAL_SECONDS) -> Any:
    @app.timer(interval=interval, name="leadrelay.consumer_lag")
    async def consumer_lag() -> None:
        await update(app, metrics)

    return consumer_lag
