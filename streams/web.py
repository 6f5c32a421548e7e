"""Web endpoints on the worker's port: /metrics (Faust's sensors + ours), /healthz, /readyz."""

from __future__ import annotations

from typing import Any

import faust
from faust.sensors.prometheus import setup_prometheus_sensors

from streams.metrics import Metrics


def is_ready(app: faust.App) -> bool:
    """Ready once tables are recovered from their changelogs and no rebalance is in progress."""
    return bool(app.tables.recovery.completed.is_set() and not app.rebalancing)


def register(app: faust.App, metrics: Metrics) -> None:
    # A fixed prefix keeps Faust's metric names the same whatever the app id is.
    setup_prometheus_sensors(app, pattern="/metrics", registry=metrics.registry, name_prefix="leadrelay_faust")

    @app.page("/healthz")
    async def healthz(self: Any, request: Any) -> Any:
        return self.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(self: Any, request: Any) -> Any:
        ready = is_ready(app)
        return self.json({"ready": ready}, status=200 if ready else 503)
