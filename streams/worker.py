"""Running the worker: provision topics, publish the seed roster, hand over to Faust's Worker."""

from __future__ import annotations

import asyncio
import logging
import logging.config
import shutil
from pathlib import Path

import faust

from routing.policy import parse_policy
from schemas.events import RepUpdated
from streams.admin import ensure_topics
from streams.app import LeadRelay, create_app
from streams.codecs import dump
from streams.datadir import DataDirLock
from streams.logs import worker_logging
from streams.roster import load_roster
from streams.settings import Settings, SettingsError

log = logging.getLogger("leadrelay.worker")


async def publish_roster(relay: LeadRelay, reps: list[RepUpdated]) -> None:
    for rep in reps:
        await relay.ctx.topics.reps_roster.send(key=rep.rep_id.encode(), value=dump(rep))
    log.info("published %d reps from the roster file", len(reps))


CLEAN_STOP = ".leadrelay-clean-stop"


def open_store(tabledir: Path, *, rebuild_after_crash: bool) -> bool:
    """Before Faust opens the local table store: keep it only if the last worker on it stopped cleanly.
    RocksDB gets each table write at once, the changelog a moment later (buffered in the producer), so
    a worker killed in between leaves rows on disk its changelog never got; kept, they would mask an
    event that the next owner of the partition handles again, and the changelog would stay without
    them. Kafka Streams drops a store that was not closed cleanly under exactly-once for the same
    reason. Returns True when the store was dropped (rebuilt from the changelogs at assignment)."""
    mark = tabledir / CLEAN_STOP
    clean = mark.exists()
    mark.unlink(missing_ok=True)  # from now on the store is in use: only a clean stop marks it again
    if clean or not rebuild_after_crash or not tabledir.is_dir() or not any(tabledir.iterdir()):
        return False
    log.warning("the last worker on %s did not stop cleanly: rebuilding its tables from the changelogs", tabledir)
    shutil.rmtree(tabledir)
    return True


def mark_clean_stop(tabledir: Path) -> None:
    if tabledir.is_dir():
        (tabledir / CLEAN_STOP).touch()


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
    tabledir = Path(relay.app.conf.tabledir)
    logging.config.dictConfig(worker_logging(settings.log_level))  # Faust sets it up later: open_store logs
    # The transactional runtime's stores only ever hold committed rows (streams/runtime/store.py): no rebuild.
    faust_tables = relay.runtime is None
    if faust_tables:
        open_store(tabledir, rebuild_after_crash=settings.rebuild_after_crash)
    policies = [(p, parse_policy(p.read_text())) for p in settings.policy_files]  # fail fast on a bad file
    for path, policy in policies:
        if policy.pool is None:
            raise SettingsError(f"policy file {path}: name its pool (`pool:`) to publish it at start")
    if policies:

        @relay.app.task
        async def publish_policies() -> None:
            for _, policy in policies:
                await relay.ctx.topics.policies.send(
                    key=str(policy.pool).encode(), value=policy.model_dump_json().encode()
                )
            log.info("published %d policies from policy_files", len(policies))

    if settings.roster_file is not None:
        reps = load_roster(settings.roster_file)  # fail fast on a bad file, before joining the group

        @relay.app.task
        async def seed_roster() -> None:
            await publish_roster(relay, reps)

    worker = faust.Worker(
        relay.app,
        loglevel=settings.log_level.upper(),
        logging_config=worker_logging(settings.log_level),
        quiet=True,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if faust_tables and exc.code in (None, 0):  # stopped, not crashed: flushed, committed, stores closed
            mark_clean_stop(tabledir)
        raise
    return 0
