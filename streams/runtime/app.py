"""create_app(settings): Faust as the framework the worker is written in (App, web server, sensors,
timers), the consume-process-produce loop ours (streams/runtime/loop.py), so one Kafka transaction
covers everything a batch writes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import faust
from faust.app.base import BootStrategy
from prometheus_client import CollectorRegistry

from routing.policy import DEFAULT_POLICY, Policy, parse_policy
from streams.kafka.security import faust_credentials
from streams.runtime.loop import Runtime
from streams.runtime.stages import build
from streams.settings import Settings
from streams.web import health
from streams.web.metrics import Metrics

log = logging.getLogger("leadrelay.runtime")
LAG_INTERVAL_SECONDS = 10.0


class NoConsumer(BootStrategy):
    """Faust starts its web server, sensors and producer, not its consumer: the runtime consumes."""

    enable_kafka_consumer = False


class App(faust.App):
    BootStrategy = NoConsumer


@dataclass(frozen=True)
class LeadRelay:
    app: faust.App
    runtime: Runtime
    metrics: Metrics

    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        """Seed records (roster, policies from files) through the app's own producer."""
        await self.app.producer.send_and_wait(topic, key, value, partition=None, timestamp=None, headers=None)


def default_policy(settings: Settings) -> Policy:
    """The policy of pools that have none of their own: from the settings file, else the built-in one."""
    if settings.default_policy_file is None:
        return DEFAULT_POLICY
    return parse_policy(settings.default_policy_file.read_text())


def app_options(settings: Settings) -> dict[str, Any]:
    return {
        "broker": settings.broker_url,
        "broker_credentials": faust_credentials(settings),
        "datadir": str(settings.data_dir),
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "web_host": settings.web_host,
        "web_port": settings.web_port,
        "web_in_thread": False,
        # Only the routes docs/operations.md lists: Faust's table, router, graph and stats views would
        # serve the cluster layout to anyone on the port.
        "web_router_enabled": False,
        "web_tables_enabled": False,
        "web_graph_enabled": False,
        "web_stats_enabled": False,
        "web_metrics_enabled": False,
        "producer_linger": settings.producer_linger_ms / 1000,
        "autodiscover": False,
        "loghandlers": [],
        "store": "memory://",  # Faust keeps no table: the runtime's stores are its own (streams/runtime/store.py)
    }


def create_app(settings: Settings, *, registry: CollectorRegistry | None = None) -> LeadRelay:
    app = App(settings.app_id, **app_options(settings))
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
    health.register(app, metrics, runtime)
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

    return LeadRelay(app=app, runtime=runtime, metrics=metrics)
