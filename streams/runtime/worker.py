"""Running the worker: provision topics, publish the seed roster and policies, hand over to Faust's Worker."""

from __future__ import annotations

import asyncio
import logging
import logging.config

import faust

from routing.policy import parse_policy
from schemas.events import RepUpdated
from streams.codecs import dump
from streams.kafka.admin import ensure_topics
from streams.runtime.app import LeadRelay, create_app
from streams.runtime.datadir import DataDirLock
from streams.settings import Settings, SettingsError
from streams.tools.roster import load_roster
from streams.web.logs import worker_logging

log = logging.getLogger("leadrelay.worker")


async def publish_roster(relay: LeadRelay, topic: str, reps: list[RepUpdated]) -> None:
    for rep in reps:
        await relay.publish(topic, rep.rep_id.encode(), dump(rep))
    log.info("published %d reps from the roster file", len(reps))


def run(settings: Settings) -> int:
    # Before anything else: a second worker on a live worker's directory would wipe its store below.
    lock = DataDirLock.acquire(settings.data_dir)
    try:
        return _run(settings)
    finally:
        lock.release()


def _run(settings: Settings) -> int:
    if settings.create_topics:
        asyncio.run(ensure_topics(settings))
    relay = create_app(settings)
    policies = [(p, parse_policy(p.read_text())) for p in settings.policy_files]  # fail fast on a bad file
    for path, policy in policies:
        if policy.pool is None:
            raise SettingsError(f"policy file {path}: name its pool (`pool:`) to publish it at start")
    if policies:

        @relay.app.task
        async def publish_policies() -> None:
            for _, policy in policies:
                await relay.publish(
                    settings.topic_policies, str(policy.pool).encode(), policy.model_dump_json().encode()
                )
            log.info("published %d policies from policy_files", len(policies))

    if settings.roster_file is not None:
        reps = load_roster(settings.roster_file)  # fail fast on a bad file, before joining the group

        @relay.app.task
        async def seed_roster() -> None:
            await publish_roster(relay, settings.topic_reps_roster, reps)

    faust_worker(relay.app, settings).execute_from_commandline()
    return 0


def faust_worker(app: faust.App, settings: Settings) -> faust.Worker:
    worker = faust.Worker(
        app,
        loglevel=settings.log_level.upper(),
        logging_config=worker_logging(settings.log_level),
        quiet=True,
    )
    # Faust's terminal spinner, on at WARNING and above, sets the root logger to DEBUG so that it spins
    # on every record: every logger.debug() in the process then builds a record the handler drops
    # (measured: 3-4% of a backfill) and the log file gets terminal escape codes. A worker is a service.
    worker.spinner = None
    return worker
