"""create_app(settings): the whole topology in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust
from prometheus_client import CollectorRegistry

from agents import ingest_deals, ingest_leads, ingest_policies, ingest_roster, match_deals, route, sweep
from routing.policy import DEFAULT_POLICY, Policy, parse_policy
from streams import lag, web
from streams.context import Context, Topics
from streams.fence import TICK_SECONDS, StallFence
from streams.gaps import GapReader, rewind_uncommitted
from streams.metrics import Metrics
from streams.security import faust_credentials
from streams.settings import Settings
from streams.tables import Tables

INGRESS = (ingest_leads, ingest_deals, ingest_roster, ingest_policies, match_deals, sweep)


@dataclass(frozen=True)
class LeadRelay:
    app: faust.App
    ctx: Context
    agents: dict[str, Any]
    runtime: Any = None  # the transactional runtime's loop (streams/runtime), when it runs the stages


def default_policy(settings: Settings) -> Policy:
    """The policy of pools that have none of their own: from the settings file, else the built-in one."""
    if settings.default_policy_file is None:
        return DEFAULT_POLICY
    return parse_policy(settings.default_policy_file.read_text())


def app_options(settings: Settings) -> dict[str, Any]:
    """What every leadrelay faust.App is configured with, whichever runtime consumes."""
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
        # serve table rows (rep profiles, ledger entries) and the cluster layout to anyone on the port.
        "web_router_enabled": False,
        "web_tables_enabled": False,
        "web_graph_enabled": False,
        "web_stats_enabled": False,
        "web_metrics_enabled": False,
        "producer_linger": settings.producer_linger_ms / 1000,
        "autodiscover": False,
        "loghandlers": [],
    }


def create_app(settings: Settings, *, registry: CollectorRegistry | None = None) -> LeadRelay:
    if settings.runtime == "transactional":
        from streams.runtime.app import create_transactional_app

        return create_transactional_app(settings, registry=registry)
    app = faust.App(
        settings.app_id,
        **app_options(settings),
        store=settings.store,
        topic_allow_declare=True,
        processing_guarantee=settings.processing_guarantee,
        broker_max_poll_interval=settings.max_poll_interval_seconds,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_seconds / 3),
        broker_commit_interval=settings.commit_interval_seconds,
        table_standby_replicas=settings.standby_replicas,
        # One writer per pool: an agent handles its partitions' events strictly in order.
        stream_buffer_maxsize=4096,
    )
    metrics = Metrics.for_settings(settings, registry if registry is not None else CollectorRegistry())
    gaps = GapReader(settings)
    rewind_uncommitted(app)
    app.on_partitions_revoked.connect(gaps.forget)
    app.on_before_shutdown.connect(gaps.close)
    fence = StallFence(app, settings, metrics)
    app.on_before_shutdown.connect(fence.close)
    ctx = Context(
        settings=settings,
        topics=Topics.create(app, settings),
        tables=Tables.create(
            app,
            settings.partitions,
            on_stale=metrics.record_stale_row,
            on_cut=metrics.record_cut_rows,
            read_range=gaps.fetch,
        ),
        metrics=metrics,
        gaps=gaps,
        fence=fence,
    )
    for table in ctx.tables.all():
        fence.on_long_stall.append(table.distrust)
        fence.on_still_member.append(table.trust_again)
    web.register(app, metrics, fence)

    @app.timer(interval=TICK_SECONDS, name="leadrelay.stall_fence")
    async def stall_fence() -> None:
        fence.tick()

    lag.register(app, metrics)
    agents = {module.__name__.rsplit(".", 1)[-1]: module.register(app, ctx) for module in INGRESS}
    agents["route"] = route.register(app, ctx, default_policy(settings))
    return LeadRelay(app=app, ctx=ctx, agents=agents)
