"""`leadrelay demo`: a local Kafka, a worker with the demo roster, live synthetic traffic, a summary."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from routing.ledger import OPEN
from schemas.events import AssignmentDecision, LeadCreated, RepUpdated
from streams.kafka.changelog import namespace, read_table
from streams.kafka.clients import one_line, read_all
from streams.kafka.security import client_kwargs
from streams.runtime.tables import changelog_topic
from streams.settings import Settings
from streams.tools import localkafka, synthetic
from streams.tools.roster import load_roster
from streams.tools.supervise import WorkerProcess, free_port
from streams.tools.verify import Report, verify

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "deploy" / "demo"
STATE = ROOT / ".state"
BAD_RECORDS = (b"not json at all", b'{"lead_id": "X-1"}', b'{"lead_id": 7, "created_at": "yesterday"}')


@dataclass
class Tally:
    sent_at: dict[str, float] = field(default_factory=dict)
    leads: dict[str, LeadCreated] = field(default_factory=dict)
    decisions: dict[str, AssignmentDecision] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    deals: dict[str, str] = field(default_factory=dict)  # lead -> outcome
    bad: int = 0


async def _traffic(settings: Settings, tally: Tally, seconds: float, rate: float, seed: int) -> None:
    """Leads at `rate`/s; about 70 % of the assigned ones close 1-3 s later; a few malformed records."""
    rng = random.Random(seed)
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all")
    try:
        await producer.start()
        stream = synthetic.leads(seed, prefix="DEMO")
        due: list[tuple[float, LeadCreated]] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            lead = next(stream)
            tally.leads[lead.lead_id] = lead
            tally.sent_at[lead.lead_id] = time.time()
            await producer.send(settings.topic_leads_new, key=lead.lead_id.encode(), value=synthetic.wire(lead))
            if rng.random() < 0.7:
                due.append((time.monotonic() + rng.uniform(1, 3), lead))
            if rng.random() < 0.01:
                tally.bad += 1
                await producer.send(settings.topic_leads_new, value=rng.choice(BAD_RECORDS))
            now = time.monotonic()
            for item in [d for d in due if d[0] <= now and d[1].lead_id in tally.decisions]:
                due.remove(item)
                deal = synthetic.deal_for(item[1], rng, now=datetime.now(UTC))
                tally.deals[deal.lead_id] = deal.outcome
                await producer.send(
                    settings.topic_deals_closed, key=deal.lead_id.encode(), value=deal.model_dump_json().encode()
                )
            await asyncio.sleep(1 / rate)
        await producer.flush()
    finally:
        await producer.stop()


async def _follow(settings: Settings, tally: Tally, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        settings.topic_assignments,
        **client_kwargs(settings),
        auto_offset_reset="earliest",
        isolation_level="read_committed",  # a decision counts once its transaction committed
    )
    try:
        await consumer.start()
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for record in records:
                    decision = AssignmentDecision.model_validate_json(record.value)
                    if decision.lead_id not in tally.decisions:
                        sent = tally.sent_at.get(decision.lead_id)
                        if sent:
                            tally.latencies.append(record.timestamp / 1000 - sent)
                        print(one_line(decision), flush=True)
                    tally.decisions[decision.lead_id] = decision
    finally:
        await consumer.stop()


def _summary(tally: Tally, roster: list[RepUpdated], dead_letters: int) -> str:
    capacity = {f"{pool}/{r.rep_id}": r.pool_capacity.get(pool, r.capacity) for r in roster for pool in r.pools}
    members = set(capacity)
    per_rep: Counter[str] = Counter()
    open_now: Counter[str] = Counter()
    won: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    for lead_id, d in tally.decisions.items():
        by_reason[d.reason] += 1
        if d.rep_id is None:
            continue
        key = f"{d.pool}/{d.rep_id}"
        per_rep[key] += 1
        outcome = tally.deals.get(lead_id, OPEN)
        {"won": won, "lost": lost}.get(outcome, open_now)[key] += 1
    rows = [f"{'pool/rep':<18} {'leads':>5} {'open/cap':>9} {'won':>4} {'lost':>4}"]
    for key in sorted(set(per_rep) | members):
        cap = capacity.get(key, 0)
        limit = "-" if cap is None else str(cap)  # no limit
        rows.append(f"{key:<18} {per_rep[key]:>5} {open_now[key]:>4}/{limit:<4} {won[key]:>4} {lost[key]:>4}")
    lat = sorted(tally.latencies)
    p50 = lat[len(lat) // 2] * 1000 if lat else float("nan")
    p99 = lat[int(len(lat) * 0.99)] * 1000 if lat else float("nan")
    missing = len(set(tally.leads) - set(tally.decisions))
    return "\n".join(
        [
            "",
            "=== summary ===",
            *rows,
            f"leads sent {len(tally.leads)}, decisions {len(tally.decisions)} ({dict(by_reason)}), "
            f"without decision {missing}",
            f"deals closed {len(tally.deals)}, malformed records sent {tally.bad}, dead letters {dead_letters}",
            f"lead -> decision latency: p50 {p50:.0f} ms, p99 {p99:.0f} ms",
        ]
    )


async def _run(settings: Settings, seconds: float, rate: float, seed: int) -> Tally:
    tally = Tally()
    stop = asyncio.Event()
    follower = asyncio.create_task(_follow(settings, tally, stop))
    await _traffic(settings, tally, seconds, rate, seed)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(set(tally.leads) - set(tally.decisions)) > 0:
        await asyncio.sleep(0.5)
    await asyncio.sleep(2)  # let the last deals land before reading the DLQ
    stop.set()
    await follower
    return tally


def _wait_for_roster(settings: Settings, entries: int, timeout: float = 60) -> None:
    """Traffic starts once every (pool, rep) profile is in the worker's reps (its route table's changelog)."""
    deadline = time.monotonic() + timeout
    topic = changelog_topic(settings.app_id, "route")
    while time.monotonic() < deadline:
        if len(namespace(read_table(asyncio.run(read_all(settings, topic))), "reps")) >= entries:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the worker did not apply the demo roster within {timeout}s")


def _verify_settled(settings: Settings, timeout: float = 30) -> Report:
    """`leadrelay verify` on the demo's topics, once the worker's last writes have landed: a healthy run
    converges (the last deals' load releases reach the changelog a moment after the decisions), a
    broken one stays broken and is reported after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        report = verify(settings)
        if report.ok or time.monotonic() > deadline:
            return report
        time.sleep(2)


def run_demo(
    *, seconds: float = 30, rate: float = 10, seed: int = 7, bootstrap: str | None = None, state: Path = STATE
) -> int:
    """The demo on a local Kafka (started under `state` unless `bootstrap` names a running one); ends
    with `leadrelay verify` over its topics. Exit 0 only if every lead was decided and verify passed."""
    started_kafka = bootstrap is None and localkafka.status(state / "kafka") is None
    if bootstrap is None:
        bootstrap = localkafka.start(state / "kafka").bootstrap
    run = time.strftime("%Y%m%d-%H%M%S")
    env = {
        "LEADRELAY_BOOTSTRAP_SERVERS": bootstrap,
        "LEADRELAY_APP_ID": f"leadrelay-demo-{run}",
        "LEADRELAY_DATA_DIR": str(state / f"demo-{run}" / "tables"),
        "LEADRELAY_WEB_PORT": str(free_port()),
        "LEADRELAY_ROSTER_FILE": str(DEMO / "roster.json"),
        **Settings.namespaced_topics(f"demo-{run}"),
    }
    settings = Settings.from_env(env, DEMO / "settings.yaml")
    roster = load_roster(DEMO / "roster.json")
    worker = WorkerProcess(env, state / f"demo-{run}" / "worker.log", config=DEMO / "settings.yaml")
    try:
        print(f"kafka at {bootstrap}; starting the worker (log: {worker.log_path})", flush=True)
        worker.start().wait_ready()
        _wait_for_roster(settings, sum(len(r.pools) for r in roster))
        print(f"worker ready, metrics on http://127.0.0.1:{worker.web_port}/metrics; {seconds:.0f}s of traffic")
        tally = asyncio.run(_run(settings, seconds, rate, seed))
        dead = len(asyncio.run(read_all(settings, settings.topic_dlq)))
        print(_summary(tally, roster, dead))
        report = _verify_settled(settings)
        print(f"\n=== leadrelay verify (delivery invariants I1-I5) ===\n{report.table()}")
        for name, items in report.problems().items():
            print(f"{name}: {items[:5]}")
        return 0 if report.ok and not set(tally.leads) - set(tally.decisions) else 1
    finally:
        worker.stop()
        if started_kafka:
            localkafka.stop(state / "kafka")
