"""create_transactional_app(settings): Faust as the framework (App, web, sensors, timers), the
consume-process-produce loop ours (streams/runtime/loop.py), so Kafka transactions cover every write."""

from __future__ import annotations

import logging
from typing import Any

import faust
from faust.app.base import BootStrategy
from prometheus_client import CollectorRegistry

from streams import web
from streams.app import LeadRelay, app_options, default_policy
from streams.context import Context, Topics
from streams.metrics import Metrics
from streams.runtime.loop import Runtime
from streams.runtime.stages import build
from streams.settings import Settings

log = logging.getLogger("leadrelay.runtime")
LAG_INTERVAL_SECONDS = 10.0


class NoConsumer(BootStrategy):  # type: ignore[misc]
    """Faust starts its web server, sensors and producer, not its consumer: the runtime consumes."""

    enable_kafka_consumer = False


class App(faust.App):  # type: ignore[misc]
    BootStrategy = NoConsumer


def create_transactional_app(settings: Settings, *, registry: CollectorRegistry | None = None) -> Any:
    app = App(settings.app_id, **app_options(settings), store="memory://")
    metrics = Metrics.for_settings(settings, registry if registry is not None else CollectorRegistry())
    stages, bind = build(settings, metrics, default_policy(settings))
    runtime = Runtime(
        settings,
        stages,
        bind,
        on_record=metrics.record_read,
        on_abort=metrics.record_aborted,
        on_assigned=metrics.retain_partitions,
    )
    web.register(app, metrics, ready=lambda: runtime.ready, detail=lambda: _detail(runtime))
    metrics.locate = runtime.current  # pool gauges belong to the owner of the pool's partition

    @app.task
    async def run_stages() -> None:
        try:
            await runtime.run()
        except Exception as exc:  # the loop itself broke: /healthz turns 503 and the worker exits
            log.exception("the processing loop stopped: %s", type(exc).__name__)
            await app.crash(exc)

    async def stop(*_: Any, **__: Any) -> None:
        await runtime.stop()

    app.on_before_shutdown.connect(stop)

    @app.timer(interval=LAG_INTERVAL_SECONDS, name="leadrelay.consumer_lag")
    async def consumer_lag() -> None:
        try:
            metrics.set_consumer_lag(await runtime.lag())
        except Exception as exc:  # a broker hiccup must not kill the timer
            metrics.lag_errors.inc()
            log.warning("could not measure consumer lag: %s", type(exc).__name__)

    ctx = Context(settings=settings, topics=Topics.create(app, settings), tables=None, metrics=metrics)  # type: ignore[arg-type]
    return LeadRelay(app=app, ctx=ctx, agents={}, runtime=runtime)


def _detail(runtime: Runtime) -> dict[str, Any]:
    return {
        "ready": runtime.ready,
        "recovered": all(t.ready for t in runtime.tasks.values()) and runtime.joined,
        "rebalancing": runtime.rebalancing,
        "in_group": runtime.joined,
    }
