"""Chaos fixtures: a real broker, isolated deployments, a background load and the verifier as the judge.

Every scenario runs the same way (the method of Kafka's own exactly-once system tests): start a load
from an independent producer, inject a fault while it flows, let the load finish, wait until every
valid lead is decided, then read every topic back and recompute (`streams.tools.verify`, I1-I5).

Size: LEADRELAY_CHAOS_SCALE (float, default 1.0) multiplies the lead counts; above 1 the rates stay,
so a larger scale means a longer load and more decisions per fault; below 1 the rates shrink too, so
faults still land mid-stream.
LEADRELAY_CHAOS_RESULTS: a file the scenario result tables are appended to (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from schemas.events import Contact, DealClosed, LeadCreated, RepUpdated
from streams.kafka.clients import read_all
from streams.kafka.security import client_kwargs
from streams.settings import Settings
from streams.tools import localkafka, synthetic
from streams.tools.supervise import WorkerProcess
from streams.tools.verify import Report, verify
from tests.integration.conftest import Deployment

SCALE = float(os.environ.get("LEADRELAY_CHAOS_SCALE", "1.0"))
PARTITIONS = 4
MAX_PAYLOAD = 4096
# A short group session lets the group notice a killed or frozen worker in seconds instead of half a
# minute (a restart after kill -9 took 32 s with the default session timeout, 7 s with these). 6 s is the broker's
# group.min.session.timeout.ms; the worker derives its heartbeat interval from it.
FAST_GROUP_ENV = {
    "LEADRELAY_SESSION_TIMEOUT_SECONDS": "6",
    "LEADRELAY_MAX_POLL_INTERVAL_SECONDS": "10",
}
# Every chaos deployment: a small payload limit (oversize records are cheap to make), and parked deals
# wait longer than any fault lasts (a deal dead-lettered as unknown_lead while its lead is merely
# delayed by a crash would be correct behaviour, but not the behaviour under test here).
CHAOS_ENV = {
    "LEADRELAY_MAX_PAYLOAD_BYTES": str(MAX_PAYLOAD),
    "LEADRELAY_UNKNOWN_LEAD_WAIT_SECONDS": "600",
    **FAST_GROUP_ENV,
}


def scaled(n: int, minimum: int = 20) -> int:
    return max(minimum, int(n * SCALE))


def _pools(n: int, partitions: int) -> tuple[str, ...]:
    """Pool names whose raw keys hash to n different partitions, so every worker owns some pools."""
    chosen: dict[int, str] = {}
    i = 0
    while len(chosen) < min(n, partitions):
        name = f"pool{i}"
        chosen.setdefault((murmur2(name.encode()) & 0x7FFFFFFF) % partitions, name)
        i += 1
    return tuple(chosen[p] for p in sorted(chosen))


POOLS = _pools(PARTITIONS, PARTITIONS)


def roster() -> list[RepUpdated]:
    """Three reps per pool with capacities below the load (so no_eligible_rep happens and deals free
    capacity), one rep in two pools, and one rep that is away (I4: never chosen)."""
    reps = [
        RepUpdated(rep_id=f"{pool}-r{j}", pools=[pool], capacity=scaled(12 + 6 * j, 4))
        for pool in POOLS
        for j in range(3)
    ]
    reps.append(RepUpdated(rep_id="floater", pools=list(POOLS[:2]), capacity=scaled(10, 3)))
    reps.append(RepUpdated(rep_id="away", pools=[POOLS[-1]], capacity=1000, availability="away"))
    return reps


# ---------------------------------------------------------------------------------------------- load


def lead(prefix: str, n: int, rng: random.Random, **kw: Any) -> LeadCreated:
    base = datetime.now(UTC).replace(microsecond=0)
    fields: dict[str, Any] = {
        "lead_id": f"{prefix}-{n:06d}",
        "created_at": base - timedelta(seconds=rng.randint(0, 600)),
        "pool": rng.choice(POOLS),
        "estimated_value": round(rng.lognormvariate(8.5, 1.1), 2),
        "country": rng.choice(synthetic.COUNTRIES),
        "contact": Contact(name=f"Person {n}", email=f"p{n}@example.com"),
    }
    return LeadCreated(**{**fields, **kw})


def bad_records(n: int, rng: random.Random) -> tuple[bytes, bytes | None]:
    """The n-th bad record of a load: each kind in turn (the fuzz test goes much further)."""
    created = datetime.now(UTC).isoformat()
    kinds: list[bytes | None] = [
        bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64))),  # random bytes
        None,  # tombstone
        b"",
        orjson.dumps({"lead_id": f"bad-{n}", "created_at": created, "estimated_value": "lots"}),  # wrong type
        orjson.dumps({"created_at": created}),  # no lead_id
        orjson.dumps({"lead_id": None, "created_at": created}),  # null id
        orjson.dumps({"lead_id": f"b\u202e{n}\u0000", "created_at": created}),  # odd unicode in the id
        b"[" * 2000 + b"]" * 2000,  # deep
        orjson.dumps({"lead_id": f"big-{n}", "created_at": created, "attributes": {"x": "y" * 250}})
        + b" " * MAX_PAYLOAD,
        b'{"lead_id": "nan-%d", "created_at": "%s", "estimated_value": NaN}' % (n, created.encode()),
    ]
    return f"bad-{n}".encode(), kinds[n % len(kinds)]


@dataclass
class Record:
    topic: str
    key: bytes | None
    value: bytes | None


@dataclass
class Plan:
    """What a load sends, in order: leads (some twice), deals for earlier leads, bad records."""

    records: list[Record] = field(default_factory=list)
    leads: list[LeadCreated] = field(default_factory=list)
    deals: list[DealClosed] = field(default_factory=list)
    bad: int = 0

    @property
    def lead_ids(self) -> set[str]:
        return {lead.lead_id for lead in self.leads}


def plan_load(
    settings: Settings,
    n_leads: int,
    *,
    prefix: str = "L",
    seed: int = 1,
    bad_every: int = 25,
    deal_every: int = 5,
    dup_every: int = 40,
) -> Plan:
    rng = random.Random(seed)
    plan = Plan()
    for i in range(n_leads):
        item = lead(prefix, i, rng)
        plan.leads.append(item)
        plan.records.append(Record(settings.topic_leads_new, item.lead_id.encode(), synthetic.wire(item)))
        if dup_every and i % dup_every == dup_every - 1:  # the same lead again, a little later
            again = plan.leads[rng.randrange(max(0, i - 10), i + 1)]
            plan.records.append(Record(settings.topic_leads_new, again.lead_id.encode(), synthetic.wire(again)))
        if deal_every and i % deal_every == deal_every - 1 and i >= 8:
            # a lead sent a few records ago: its decision may or may not be out yet
            target = plan.leads[rng.randrange(i - 8, i - 1)]
            deal = synthetic.deal_for(target, rng)
            plan.deals.append(deal)
            plan.records.append(
                Record(settings.topic_deals_closed, deal.lead_id.encode(), deal.model_dump_json().encode())
            )
        if bad_every and i % bad_every == bad_every // 2:
            key, value = bad_records(plan.bad, rng)
            plan.bad += 1
            plan.records.append(Record(settings.topic_leads_new, key, value))
    return plan


class Load(threading.Thread):
    """Sends a plan at `rate` records/s from an independent producer (acks=all, idempotent), on its own
    thread and event loop. A failed send is retried until it succeeds (as a connector would: so a broker
    restart can turn into a duplicate record, which the verifier counts as such)."""

    def __init__(self, settings: Settings, plan: Plan, rate: float, *, retry_for: float = 180.0) -> None:
        super().__init__(name="chaos-load", daemon=True)
        # Below scale 1 the rate shrinks with the counts, so a load lasts as long and every fault still
        # lands mid-stream (a restart takes ~7 s whatever the scale); above 1 the load just lasts longer.
        self.settings, self.plan, self.rate, self.retry_for = settings, plan, rate * min(1.0, SCALE), retry_for
        self.sent = 0
        self.retries = 0
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self.started_at = self.finished_at = 0.0

    @property
    def total(self) -> int:
        return len(self.plan.records)

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished_at = time.monotonic()
            self.finished.set()

    async def _main(self) -> None:
        self._producer = await self._start_producer()
        self.started_at = time.monotonic()
        try:
            for i, record in enumerate(self.plan.records):
                await self._send(record)
                self.sent = i + 1
                if self.rate > 0:
                    delay = self.started_at + (i + 1) / self.rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
        finally:
            await self._producer.stop()

    async def _start_producer(self) -> AIOKafkaProducer:
        deadline = time.monotonic() + self.retry_for
        while True:
            producer = AIOKafkaProducer(
                **client_kwargs(self.settings), acks="all", enable_idempotence=True, request_timeout_ms=15000
            )
            try:
                await producer.start()
                return producer
            except KafkaError:
                await producer.stop()
                if time.monotonic() > deadline:
                    raise
                self.retries += 1
                await asyncio.sleep(1)

    async def _send(self, record: Record) -> None:
        """Send one record until it is acknowledged. After a failure the producer is replaced: aiokafka's
        idempotent producer does not reset its sequence numbers when a batch expires (the Java client
        bumps the epoch, KIP-360), so after a broker outage longer than request_timeout_ms every later
        send fails with OutOfOrderSequenceNumber. A new producer id starts clean; the record may then
        be in the log twice, which is what a retrying connector does."""
        deadline = time.monotonic() + self.retry_for
        while True:
            try:
                await self._producer.send_and_wait(record.topic, key=record.key, value=record.value)
                return
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
                self.retries += 1
                await self._producer.stop()
                await asyncio.sleep(0.5)
                self._producer = await self._start_producer()

    # for the test thread
    def wait_sent(self, fraction: float, timeout: float = 180.0) -> None:
        """Block until `fraction` of the plan is sent; fail if the load ended (or broke) before."""
        goal = int(self.total * fraction)
        wait_for(lambda: self.sent >= goal or self.finished.is_set(), timeout, f"load to reach {fraction:.0%}")
        assert self.error is None, f"load failed: {self.error!r}"
        assert not self.finished.is_set() or self.sent >= goal, "the load ended early"

    def assert_running(self) -> None:
        """The fault is injected mid-stream: records are still to be sent."""
        assert not self.finished.is_set(), f"load already finished ({self.sent}/{self.total}): not mid-stream"

    def join_ok(self, timeout: float = 300.0) -> None:
        assert self.finished.wait(timeout), f"load not finished after {timeout}s ({self.sent}/{self.total})"
        assert self.error is None, f"load failed after {self.sent}/{self.total}: {self.error!r}"
        self.join(5)


# ----------------------------------------------------------------------------------------- helpers


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def decided(dep: Deployment) -> dict[str, set[str]]:
    """lead_id -> decision ids seen so far on the decision topic."""
    out: dict[str, set[str]] = {}
    for r in asyncio.run(read_all(dep.settings, dep.settings.topic_assignments, idle=1.0)):
        d = orjson.loads(r.value)
        out.setdefault(d["lead_id"], set()).add(d["decision_id"])
    return out


def wait_decided(dep: Deployment, lead_ids: set[str], timeout: float) -> None:
    """Until every one of lead_ids has a decision on the output topic."""
    missing: set[str] = set(lead_ids)

    def done() -> bool:
        nonlocal missing
        missing = missing - decided(dep).keys()
        return not missing

    try:
        wait_for(done, timeout, f"{len(lead_ids)} decisions", interval=2.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {len(missing)} undecided, e.g. {sorted(missing)[:5]}") from None


def publish_roster(dep: Deployment) -> list[RepUpdated]:
    """The chaos roster on reps.roster, returned once the route agent holds all of it."""
    reps = roster()
    dep.send_roster(reps)
    wait_roster(dep, reps)
    return reps


def wait_roster(dep: Deployment, reps: list[RepUpdated], timeout: float = 60.0) -> None:
    """Until the route agent holds every (pool, rep) of the roster (its reps table changelog says so)."""
    wanted = {f"{p}|{r.rep_id}" for r in reps for p in r.pools}
    missing: set[str] = set(wanted)

    def arrived() -> bool:
        nonlocal missing
        missing = wanted - dep.table("reps").keys()
        return not missing

    try:
        wait_for(arrived, timeout, "the roster to reach the route agent", 1.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; never applied: {sorted(missing)} (see verify's I3 for the pool log)") from None


def settle_and_verify(dep: Deployment, running: list[WorkerProcess], *, timeout: float = 120.0) -> Report:
    """Poll the verifier until the run is consistent (changelogs and parked deals catch up), at most
    `timeout`; check the `running` workers never died; stop them (each commits or aborts its open batch) and verify
    once more: that final report is the one the test judges. A real violation does not go away by
    waiting, and a transient one must not survive the final check."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if verify(dep.settings).ok:
            break
        time.sleep(3)
    dead = [w for w in running if not w.alive()]
    assert not dead, "worker(s) died:\n" + "\n".join(w.tail(60) for w in dead)
    dep.stop()
    return verify(dep.settings)


FAILED_VERDICTS: list[str] = []  # printed at the end of the session (CI logs show no xfail output)


def publish(name: str, report: Report, seconds: float, notes: str = "") -> None:
    """Print the table (visible with -s) and append it to LEADRELAY_CHAOS_RESULTS if set."""
    text = f"\n### {name}\n\n{notes + chr(10) + chr(10) if notes else ''}{report.table()}\n\n({seconds:.0f} s)\n"
    print(text)
    problems = [f"  {label}: {item}" for label, items in report.problems().items() for item in items[:10]]
    print("\n".join(problems))
    if not report.ok:
        FAILED_VERDICTS.append("\n".join([text, *problems]))
    target = os.environ.get("LEADRELAY_CHAOS_RESULTS")
    if target:
        with Path(target).open("a") as fh:
            fh.write(text)


def pause(worker: WorkerProcess) -> None:
    assert worker.proc is not None
    os.kill(worker.proc.pid, signal.SIGSTOP)


def resume(worker: WorkerProcess) -> None:
    assert worker.proc is not None
    os.kill(worker.proc.pid, signal.SIGCONT)


def worker_logs(dep: Deployment, lines: int = 30) -> str:
    return "\n".join(f"--- {w.log_path} ---\n{w.tail(lines)}" for w in dep.workers)


# ---------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def chaos(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    """Make isolated deployments (own topics, group, state dirs) with the chaos settings."""
    made: list[Deployment] = []

    def make(bootstrap: str | None = None, **extra: str) -> Deployment:
        env = {**CHAOS_ENV, **extra}
        dep = Deployment(bootstrap or kafka_bootstrap, tmp_path / f"d{len(made)}", PARTITIONS, env)
        made.append(dep)
        return dep

    try:
        yield make
    finally:
        for dep in made:
            for worker in dep.workers:
                if worker.alive():
                    resume(worker)  # a test that failed while a worker was paused
            dep.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Path]:
    """A second, private broker (state dir returned) for tests that stop and restart it."""
    state = tmp_path / "own-kafka"
    localkafka.start(state, heap="384m")
    try:
        yield state
    finally:
        localkafka.stop(state)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Every failing verdict, xfailed ones included, so a CI log says which invariant broke and where."""
    if FAILED_VERDICTS:
        terminalreporter.section("chaos verdicts that failed")
        for text in FAILED_VERDICTS:
            terminalreporter.write_line(text)
