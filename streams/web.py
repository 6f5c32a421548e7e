"""Web endpoints on the worker's port: /metrics (Faust's sensors + ours), /healthz, /readyz.

- /healthz (liveness): the event loop answers and the app has not crashed. It stays 200 during table
  recovery and rebalances: restarting a recovering worker only makes the recovery start over.
  It turns 503 when the worker has been out of its group since a stall (GC/VM pause, freeze) for
  longer than a rejoin takes: that worker is wedged, and a restart brings it back.
- /readyz (readiness): 200 once the tables are recovered from their changelogs, no rebalance is in
  progress and the worker is not out of its group after a stall, else 503. The same value is
  exported as `leadrelay_worker_ready` for alerting.
- /metrics: one registry holding our metrics (streams/metrics.py), the consumer lag (streams/lag.py)
  and Faust's sensors, registered here with the fixed prefix `leadrelay_faust` (the app id varies per
  installation; metric names must not).

Faust's sensor names are kept as Faust defines them: dashboards shared by Faust users rely on them, and
renaming means forking the sensor. Some break Prometheus conventions: Faust observes its latencies in
milliseconds (`*_latency` histograms, `leadrelay_faust_events_runtime_ms`), and a few counters repeat
"total" (`leadrelay_faust_total_events_total`). `promtool check metrics` reports only what
FAUST_LINT_FINDINGS lists (metric -> part of promtool's message); our own metrics have no finding. The
tests fail on any other finding, so a Faust or promtool upgrade that changes this is noticed. Our
dashboard and alerts use only our own metrics and the process metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust
from faust.sensors.prometheus import setup_prometheus_sensors

from streams.fence import StallFence
from streams.metrics import Metrics

FAUST_PREFIX = "leadrelay_faust"

# promtool's findings on Faust's own sensor names (metric -> part of the message), accepted above.
FAUST_LINT_FINDINGS: dict[str, str] = {
    f"{FAUST_PREFIX}_events_runtime_ms": "should not contain abbreviated units",
}


def is_live(app: faust.App, fence: StallFence | None = None) -> bool:
    """The app has not crashed (a wedged event loop cannot answer the probe at all), and it has not
    been out of the group since a stall for longer than a rejoin takes (streams/fence.py)."""
    return not app.crashed and not (fence is not None and fence.wedged())


def is_ready(app: faust.App, fence: StallFence | None = None) -> bool:
    """Ready once tables are recovered from their changelogs and no rebalance is in progress.

    `recovery.completed` is set at the end of the first recovery and stays set; every later rebalance
    (including its recovery) runs between `on_rebalance_start` and `on_rebalance_end`, which is what
    `app.rebalancing` reflects.
    """
    recovered = app.tables.recovery.completed.is_set() and not app.rebalancing and not app.crashed
    return bool(recovered and not (fence is not None and fence.out_of_group()))


def current_partition() -> tuple[str, int] | None:
    """(topic, partition) of the event the calling agent is handling, if any."""
    event = faust.current_event()
    if event is None:
        return None
    return (event.message.topic, event.message.partition)


def register(
    app: faust.App,
    metrics: Metrics,
    fence: StallFence | None = None,
    *,
    ready: Callable[[], bool] | None = None,
    detail: Callable[[], dict[str, Any]] | None = None,
) -> None:
    """`ready`/`detail`: readiness of a worker whose own loop consumes (streams/runtime), instead of
    Faust's table recovery."""
    setup_prometheus_sensors(app, pattern="/metrics", registry=metrics.registry, name_prefix=FAUST_PREFIX)
    metrics.locate = current_partition
    if ready is None:

        def ready() -> bool:
            return is_ready(app, fence)

    if detail is None:

        def detail() -> dict[str, Any]:
            return {
                "ready": is_ready(app, fence),
                "recovered": app.tables.recovery.completed.is_set(),
                "rebalancing": bool(app.rebalancing),
                "in_group": not (fence is not None and fence.out_of_group()),
            }

    metrics.ready.set_function(lambda: 1.0 if ready() else 0.0)

    async def drop_moved_pools(sender: Any, assigned: Any, **kwargs: Any) -> None:
        metrics.retain_partitions(assigned)

    app.on_partitions_assigned.connect(drop_moved_pools)

    @app.page("/healthz")
    async def healthz(self: Any, request: Any) -> Any:
        live = is_live(app, fence)
        status = "ok" if live else "crashed" if app.crashed else "out_of_group"
        return self.json({"status": status}, status=200 if live else 503)

    @app.page("/readyz")
    async def readyz(self: Any, request: Any) -> Any:
        body = detail()
        return self.json(body, status=200 if body["ready"] else 503)
