"""Web endpoints on the worker's port: /metrics (Faust's sensors + ours), /healthz, /readyz.

- /healthz (liveness): the event loop answers and the app has not crashed (the processing loop crashes
  the app when it breaks). It stays 200 while tasks restore and during rebalances: restarting a
  restoring worker only makes the restore start over.
- /readyz (readiness): 200 once the worker is in its group, no rebalance is running and every task has
  restored its table and is consuming, else 503. The same value is exported as
  `leadrelay_worker_ready` for alerting.
- /metrics: one registry holding our metrics (streams/web/metrics.py) and Faust's sensors, registered
  here with the fixed prefix `leadrelay_faust` (the app id varies per installation; metric names must
  not).

Faust's sensor names are kept as Faust defines them: dashboards shared by Faust users rely on them, and
renaming means forking the sensor. Some break Prometheus conventions: Faust observes its latencies in
milliseconds (`*_latency` histograms, `leadrelay_faust_events_runtime_ms`), and a few counters repeat
"total" (`leadrelay_faust_total_events_total`). `promtool check metrics` reports only what
FAUST_LINT_FINDINGS lists (metric -> part of promtool's message); our own metrics have no finding. The
tests fail on any other finding, so a Faust or promtool upgrade that changes this is noticed. Our
dashboard and alerts use only our own metrics and the process metrics.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.sensors.prometheus import setup_prometheus_sensors

from streams.runtime.loop import Runtime
from streams.web.metrics import Metrics

FAUST_PREFIX = "leadrelay_faust"

# promtool's findings on Faust's own sensor names (metric -> part of the message), accepted above.
FAUST_LINT_FINDINGS: dict[str, str] = {
    f"{FAUST_PREFIX}_events_runtime_ms": "should not contain abbreviated units",
}


def readiness(runtime: Runtime) -> dict[str, Any]:
    return {
        "ready": runtime.ready,
        "recovered": all(t.ready for t in runtime.tasks.values()) and runtime.joined,
        "rebalancing": runtime.rebalancing,
        "in_group": runtime.joined,
    }


def register(app: faust.App, metrics: Metrics, runtime: Runtime) -> None:
    setup_prometheus_sensors(app, pattern="/metrics", registry=metrics.registry, name_prefix=FAUST_PREFIX)
    metrics.ready.set_function(lambda: 1.0 if runtime.ready else 0.0)

    @app.page("/healthz")
    async def healthz(self: Any, request: Any) -> Any:
        live = not app.crashed
        return self.json({"status": "ok" if live else "crashed"}, status=200 if live else 503)

    @app.page("/readyz")
    async def readyz(self: Any, request: Any) -> Any:
        body = readiness(runtime)
        return self.json(body, status=200 if body["ready"] else 503)
