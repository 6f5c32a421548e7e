"""End-to-end worker throughput on a real local broker: a backfill of N leads, decided from a cold start.

Baseline, in the same run and on the same broker: a plain aiokafka pipe that reads the same leads,
validates them with the same contract and writes one record per lead. The ratio says what Faust,
the tables, the two hops through the pool log and the decisions cost on top of moving the bytes.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas.events import LeadCreated, RepUpdated
from streams import localkafka, synthetic
from streams.admin import ensure_topics
from streams.clients import produce, read_all
from streams.settings import Settings
from streams.supervise import WorkerProcess, free_port

LEADS = 20_000
POOLS = ("dach", "emea", "americas", "apac")


def _settings(bootstrap: str, ns: str) -> dict[str, str]:
    return {
        "LEADRELAY_BOOTSTRAP_SERVERS": bootstrap,
        "LEADRELAY_APP_ID": f"bench-{ns}",
        "LEADRELAY_LOG_LEVEL": "warning",
        **Settings.namespaced_topics(ns),
    }


def _leads(n: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i, lead in enumerate(synthetic.leads(5)):
        if i == n:
            break
        pooled = lead.model_copy(update={"pool": POOLS[i % len(POOLS)]})
        out.append((pooled.lead_id.encode(), synthetic.wire(pooled)))
    return out


async def _baseline(settings: Settings, out_topic: str, n: int) -> float:
    consumer = AIOKafkaConsumer(
        settings.topic_leads_new,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=f"baseline-{uuid.uuid4().hex[:6]}",
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    try:
        start, done = time.perf_counter(), 0
        while done < n:
            for records in (await consumer.getmany(timeout_ms=500, max_records=2000)).values():
                for r in records:
                    lead = LeadCreated.model_validate_json(r.value)
                    await producer.send(out_topic, key=r.key, value=lead.model_dump_json().encode())
                    done += 1
        await producer.flush()
        return n / (time.perf_counter() - start)
    finally:
        await consumer.stop()
        await producer.stop()


def main(n: int = LEADS) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "kafka"
        kafka = localkafka.start(state)
        try:
            env = _settings(kafka.bootstrap, uuid.uuid4().hex[:8])
            settings = Settings.from_env(env)
            asyncio.run(ensure_topics(settings))
            roster = [RepUpdated(rep_id=f"r{i:03d}", pools=[POOLS[i % 4]], capacity=10_000) for i in range(200)]
            asyncio.run(
                produce(
                    settings,
                    settings.topic_reps_roster,
                    [(r.rep_id.encode(), r.model_dump_json().encode()) for r in roster],
                )
            )
            asyncio.run(produce(settings, settings.topic_leads_new, _leads(n)))  # the backfill, all at once
            base = asyncio.run(_baseline(settings, f"{settings.topic_leads_new}.copy", n))
            worker = WorkerProcess(
                {**env, "LEADRELAY_DATA_DIR": f"{tmp}/w", "LEADRELAY_WEB_PORT": str(free_port())},
                Path(tmp) / "worker.log",
            )
            t0 = time.perf_counter()
            worker.start().wait_ready()
            ready = time.perf_counter() - t0
            while len(asyncio.run(read_all(settings, settings.topic_assignments))) < n:
                time.sleep(1)
            total = time.perf_counter() - t0
            worker.stop()
            rate = n / (total - ready)
            print(f"backfill of {n} leads, 4 pools, 200 reps, least-loaded policy, one worker process")
            print(f"{'':<34}{'leads/s':>10}")
            print(f"{'baseline: aiokafka validate+copy':<34}{base:>10.0f}")
            print(f"{'leadrelay worker (after ready)':<34}{rate:>10.0f}   ratio {rate / base:.2f}x")
            print(f"worker start to ready: {ready:.1f}s; start to last decision: {total:.1f}s")
        finally:
            localkafka.stop(state)
