"""The worker benchmark of issue 10: one run, one local broker, baselines measured next to leadrelay.

    python -m bench worker [--quick] [--leads N] [--ledger N] [--latency-seconds S] [--pairs K]

Rows (docs/benchmarks.md says what each one measures and how):

1. plain aiokafka copy: consume N records, produce each to another topic;
2. bare Faust agent forwarding each record (bench/faustagent.py, its own process);
3. the same agent writing one table row per record, under at_least_once and under exactly_once;
4. leadrelay's backfill of N leads (4 pools, 200 reps, already on leads.new when the worker starts),
   against row 3 under the same guarantee (exactly_once: one Kafka transaction per batch); 4b: K pairs
   of (row 3 exactly_once, row 4) run back to back, and the median of their ratios;
5. lead-to-committed-decision latency at 500 leads/s offered against the running worker;
6. a worker that lost its disk, with N_LEDGER ledger entries in its route changelog: start to /readyz
   and resident memory once ready.

Every output is read with isolation_level=read_committed; every rate is records per second of wall time.
Rows 1-4 also report the CPU time the process under test spent per 1,000 records (user + system, from
/proc): on a shared 2-core machine a neighbour's load moves wall-clock rates by 2x between rows of one
run, while the CPU a record costs its own process barely moves, so that ratio is the one to trust.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench import ledgerseed
from bench.faustagent import first_mark
from bench.kafkaio import count_until, create_topics, produce_bulk, reader
from schemas.events import RepUpdated
from streams.kafka.admin import ensure_topics
from streams.settings import Settings
from streams.tools import localkafka, synthetic
from streams.tools.supervise import WorkerProcess, free_port

POOLS = ("dach", "emea", "americas", "apac")
REPS = 200
RUNTIMES = ("transactional",)  # leadrelay 0.1 also had a Faust runtime; the rows keep their label
GUARANTEE = {"transactional": "exactly_once"}  # the bare row leadrelay is held to
TARGET_RATIO = 0.7
TARGET_P99_MS = 250.0
TARGET_READY_S = 60.0
TARGET_RSS_MB = 500.0
RATE = 500.0  # leads/s offered in the latency phase


@dataclass
class Params:
    leads: int = 20_000
    ledger: int = 1_000_000
    latency_seconds: float = 20.0
    runtimes: tuple[str, ...] = RUNTIMES
    ready_timeout: float = 600.0  # start -> /readyz with N_LEDGER entries; beyond it the row says so
    # Pairs (bare exactly_once agent, leadrelay backfill) measured back to back; the verdict is the median
    # ratio. One pair's ratio moved between 0.55x and 1.26x on a machine shared with test runs.
    pairs: int = 3
    recover: bool = True  # row 6 after the backfill (off for the extra pairs)


@dataclass
class Rate:
    """A throughput row: records per second of wall time, and the process's CPU ms per 1,000 records."""

    rate: float
    cpu_ms: float | None = None


@dataclass
class Backfill:
    rate: float = 0.0
    cpu_ms: float | None = None  # the worker's CPU per 1,000 leads, from ready to the last decision read
    ready_s: float = 0.0
    total_s: float = 0.0
    reasons: Counter[str] = field(default_factory=Counter)
    error: str | None = None


@dataclass
class Latency:
    sent: int = 0
    decided: int = 0
    seconds: float = 0.0  # first send to last decision read
    ms: list[float] = field(default_factory=list)
    error: str | None = None


@dataclass
class Recovery:
    existing: int = 0
    seeded: int = 0
    seed_s: float = 0.0
    value_bytes: int = 0
    ready_s: float | None = None
    rss_mb: float | None = None
    hwm_mb: float | None = None
    answer: str = "not tried (nothing seeded)"  # a re-sent seeded lead: its stored decision again, or not
    error: str | None = None


# --- inputs --------------------------------------------------------------------------------------


def lead_records(n: int, prefix: str, seed: int = 5) -> list[tuple[bytes, bytes]]:
    out = []
    for i, lead in enumerate(synthetic.leads(seed, prefix=prefix)):
        if i == n:
            break
        pooled = lead.model_copy(update={"pool": POOLS[i % len(POOLS)]})
        out.append((pooled.lead_id.encode(), synthetic.wire(pooled)))
    return out


def roster() -> list[tuple[bytes, bytes]]:
    reps = [RepUpdated(rep_id=f"r{i:03d}", pools=[POOLS[i % 4]], capacity=10_000) for i in range(REPS)]
    return [(r.rep_id.encode(), r.model_dump_json().encode()) for r in reps]


def leadrelay_env(bootstrap: str, ns: str) -> dict[str, str]:
    return {
        "LEADRELAY_BOOTSTRAP_SERVERS": bootstrap,
        "LEADRELAY_APP_ID": f"bench-{ns}",
        "LEADRELAY_LOG_LEVEL": "warning",
        **Settings.namespaced_topics(ns),
    }


# --- rows 1-3: baselines -------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15


async def plain_copy(bootstrap: str, source: str, sink: str, n: int) -> Rate:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        async with reader(bootstrap, source, max_partition_fetch_bytes=4 * 1024 * 1024) as consumer:
            start, cpu, done = time.perf_counter(), time.process_time(), 0
            while done < n:
                for records in (await consumer.getmany(timeout_ms=500, max_records=2000)).values():
                    for r in records:
                        await producer.send(sink, key=r.key, value=r.value)
                    done += len(records)
            await producer.flush()
            return Rate(n / (time.perf_counter() - start), (time.process_time() - cpu) * 1e6 / n)
    finally:
        await producer.stop()


def bare_agent(bootstrap: str, source: str, n: int, mode: str, guarantee: str, tmp: Path) -> Rate:
    """Rows 2 and 3: the agent's process from its first record to our reading its n-th output."""
    name = f"bare-{mode}-{guarantee}-{uuid.uuid4().hex[:6]}"
    sink = f"{name}.out"
    asyncio.run(create_topics(bootstrap, [sink]))
    log = tmp / f"{name}.log"
    argv = [sys.executable, "-m", "bench.faustagent", bootstrap, name, source, sink, mode, guarantee, str(tmp / name)]
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        end = asyncio.run(count_until(bootstrap, sink, n, alive=lambda: proc.poll() is None, timeout=600))
        cpu_end = cpu_seconds(proc.pid)
    except Exception as exc:
        raise RuntimeError(f"{name}: {exc}\n{_tail(log)}") from None
    finally:
        _stop(proc)
    mark = first_mark(str(tmp / name))
    if not mark.is_file():
        raise RuntimeError(f"{name}: no first-record mark\n{_tail(log)}")
    wall, cpu = (float(x) for x in mark.read_text().split())
    return Rate(n / (end - wall), (cpu_end - cpu) * 1e6 / n)


# --- rows 4-6: leadrelay -------------------------------------------------------------------------


def start_worker(env: dict[str, str], tmp: Path, tag: str) -> WorkerProcess:
    data = tmp / f"data-{tag}"
    worker = WorkerProcess(
        {**env, "LEADRELAY_DATA_DIR": str(data), "LEADRELAY_WEB_PORT": str(free_port())}, tmp / f"{tag}.log"
    )
    return worker.start()


async def backfill(worker: WorkerProcess, settings: Settings, n: int, t0: float) -> Backfill:
    """From worker start: /readyz, then the n-th decision read (read_committed)."""
    result = Backfill()

    def reason(record: object) -> None:
        value = getattr(record, "value", None)
        if value:
            result.reasons[orjson.loads(value).get("reason", "?")] += 1

    bootstrap, topic = settings.bootstrap_servers, settings.topic_assignments
    counting = asyncio.create_task(count_until(bootstrap, topic, n, alive=worker.alive, timeout=1800, on_record=reason))
    await asyncio.to_thread(worker.wait_ready, 300.0)
    ready = time.time()
    assert worker.proc is not None
    pid = worker.proc.pid
    cpu = cpu_seconds(pid)
    end = await counting
    result.cpu_ms = (cpu_seconds(pid) - cpu) * 1e6 / n
    result.ready_s, result.total_s = ready - t0, end - t0
    result.rate = n / max(end - ready, 1e-9)
    return result


async def latency(settings: Settings, seconds: float, prefix: str) -> Latency:
    """Offer RATE leads/s for `seconds`; per lead, the time from send to our reading its decision."""
    bootstrap, topic = settings.bootstrap_servers, settings.topic_assignments
    leads = lead_records(int(RATE * seconds), prefix, seed=11)
    sent_at: dict[bytes, float] = {}
    got_at: dict[bytes, float] = {}
    done = asyncio.Event()

    async def read(consumer: AIOKafkaConsumer) -> None:
        while not done.is_set():
            batch = await consumer.getmany(timeout_ms=50)
            now = time.time()
            for records in batch.values():
                for r in records:
                    if r.key in sent_at:
                        got_at.setdefault(r.key, now)
            if len(got_at) == len(leads):
                return

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    async with reader(bootstrap, topic, from_end=True) as consumer:
        await _offer(settings, leads, producer, sent_at, asyncio.create_task(read(consumer)), done)
    ms = sorted((got_at[k] - sent_at[k]) * 1000 for k in got_at)
    first_sent = min(sent_at.values(), default=0.0)
    span = (max(got_at.values()) - first_sent) if got_at else 1.0
    return Latency(sent=len(sent_at), decided=len(got_at), seconds=span, ms=ms)


async def _offer(
    settings: Settings,
    leads: list[tuple[bytes, bytes]],
    producer: AIOKafkaProducer,
    sent_at: dict[bytes, float],
    reading: asyncio.Task[None],
    done: asyncio.Event,
) -> None:
    """Send at RATE per second, then give the stragglers 15 s."""
    try:
        start = time.time()
        for i, (key, value) in enumerate(leads):
            due = start + i / RATE
            if due > time.time():
                await asyncio.sleep(due - time.time())
            sent_at[key] = time.time()
            await producer.send(settings.topic_leads_new, key=key, value=value)
        await producer.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reading), timeout=15)
    finally:
        done.set()
        await reading
        await producer.stop()


async def recovery(env: dict[str, str], settings: Settings, p: Params, tmp: Path, tag: str) -> Recovery:
    """Seed the route changelog up to p.ledger ledger entries; a worker on an empty data dir: start ->
    /readyz, and its memory once ready."""
    topic = f"{settings.app_id}-route-changelog"
    seed = await ledgerseed.inspect(settings.bootstrap_servers, topic)
    result = Recovery(existing=seed.existing, value_bytes=seed.value_bytes)
    t = time.perf_counter()
    result.seeded = await ledgerseed.write(settings.bootstrap_servers, topic, seed, max(0, p.ledger - seed.existing))
    result.seed_s = time.perf_counter() - t
    worker = start_worker(env, tmp, f"{tag}-recovery")
    t0 = time.perf_counter()
    try:
        await asyncio.to_thread(worker.wait_ready, p.ready_timeout)
        result.ready_s = time.perf_counter() - t0
        assert worker.proc is not None
        result.rss_mb, result.hwm_mb = memory_mb(worker.proc.pid)
        if result.seeded:
            result.answer = await resend(settings, *ledgerseed.probe(seed, result.seeded))
    except TimeoutError:
        assert worker.proc is not None
        rss, _ = memory_mb(worker.proc.pid)
        result.error = f"not ready after {p.ready_timeout:.0f}s, RSS then {rss or 0:.0f} MB (log: {worker.log_path})"
    except RuntimeError as exc:
        result.error = f"worker exited: {str(exc).splitlines()[-1] if str(exc) else exc!r} (log: {worker.log_path})"
    finally:
        await asyncio.to_thread(worker.stop)
    return result


async def resend(settings: Settings, lead_id: str, pool: str, stored: str) -> str:
    """Send a seeded lead again; the recovered worker must answer with the decision it stores."""
    async with reader(settings.bootstrap_servers, settings.topic_assignments, from_end=True) as consumer:
        lead = orjson.loads(lead_records(1, "P")[0][1]) | {"lead_id": lead_id, "pool": pool}
        await produce_bulk(
            settings.bootstrap_servers, settings.topic_leads_new, [(lead_id.encode(), orjson.dumps(lead))]
        )
        sent, deadline = time.perf_counter(), time.monotonic() + 60
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    if r.key == lead_id.encode():
                        took = (time.perf_counter() - sent) * 1000
                        same = orjson.loads(r.value)["decision_id"] == stored
                        return f"stored decision in {took:.0f} ms" if same else "NEW decision (entry not recovered)"
        return "no answer in 60 s"


def memory_mb(pid: int) -> tuple[float | None, float | None]:
    """VmRSS and VmHWM (peak resident) of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields.get("VmRSS"), fields.get("VmHWM")


def run_runtime(
    bootstrap: str, runtime: str, p: Params, tmp: Path, tag: str | None = None
) -> tuple[Backfill, Latency, Recovery]:
    ns = f"{runtime[:5]}{uuid.uuid4().hex[:6]}"
    env = leadrelay_env(bootstrap, ns)
    settings = Settings.from_env(env)
    asyncio.run(ensure_topics(settings))
    asyncio.run(produce_bulk(bootstrap, settings.topic_reps_roster, roster()))
    asyncio.run(produce_bulk(bootstrap, settings.topic_leads_new, lead_records(p.leads, f"B{runtime[0]}")))
    worker = start_worker(env, tmp, tag or runtime)
    t0 = time.time()
    fill, lat, rec = Backfill(), Latency(), Recovery()
    try:
        fill = asyncio.run(backfill(worker, settings, p.leads, t0))
        if p.latency_seconds > 0:
            lat = asyncio.run(latency(settings, p.latency_seconds, f"T{runtime[0]}"))
            # Drain what the worker could not keep up with, so that the recovering worker starts idle.
            total = p.leads + lat.sent
            asyncio.run(count_until(bootstrap, settings.topic_assignments, total, alive=worker.alive, timeout=600))
    except Exception as exc:
        fill.error = fill.error or f"{type(exc).__name__}: {exc}"
        print(f"[{runtime}] backfill/latency failed: {exc}\n--- worker log ---\n{worker.tail(60)}", file=sys.stderr)
    finally:
        worker.stop()
    if not p.recover:
        rec.error = "not measured in this pair"
    elif fill.error is None:
        rec = asyncio.run(recovery(env, settings, p, tmp, runtime))
        if rec.error:
            print(f"[{runtime}] recovery: {rec.error}", file=sys.stderr)
    else:
        rec.error = "skipped (no backfill)"
    return fill, lat, rec


# --- the table -----------------------------------------------------------------------------------


def report_pairs(pairs: list[tuple[Rate, Backfill]]) -> None:
    """The verdict on the backfill target: each pair ran back to back, so a neighbour's load hits both."""
    ok = [(eos, fill) for eos, fill in pairs if not fill.error]
    if not ok:
        return
    wall = [fill.rate / eos.rate for eos, fill in ok]
    cpu = [eos.cpu_ms / fill.cpu_ms for eos, fill in ok if eos.cpu_ms and fill.cpu_ms]
    print(f"\n4b. leadrelay backfill / bare exactly_once agent, {len(ok)} pairs, each run back to back")
    for name, ratios in (("wall-clock rate", wall), ("CPU per record", cpu)):
        if ratios:
            median = statistics.median(ratios)
            each = ", ".join(f"{r:.2f}" for r in ratios)
            print(
                f"  by {name:<16} {each:<24} median {median:.2f}x "
                f"(target >= {TARGET_RATIO}x: {_met(median >= TARGET_RATIO)})"
            )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(
    p: Params, revision: str, base: dict[str, Rate], results: dict[str, tuple[Backfill, Latency, Recovery]]
) -> None:
    copy = base["copy"].rate
    load = os.getloadavg()
    kafka = f"one local Kafka {localkafka.KAFKA_VERSION} broker"
    print(f"\nworker benchmark: {kafka}, one process per row, {os.cpu_count()} cores")
    print(f"code: {revision} at the start; load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"\n1-4. throughput, {p.leads:,} records already on the input topic (4 partitions)")
    print(f"{'':<52}{'rec/s':>8}{'vs copy':>9}{'CPU ms/1k':>11}   vs bare table row, same guarantee")
    rows = [
        ("plain aiokafka copy", "copy"),
        ("bare Faust agent, forward (at_least_once)", "forward"),
        ("bare Faust agent + table row, at_least_once", "at_least_once"),
        ("bare Faust agent + table row, exactly_once", "exactly_once"),
    ]
    for label, key in rows:
        row = base[key]
        print(f"{label:<52}{row.rate:>8.0f}{row.rate / copy:>8.3f}x{_ms(row.cpu_ms):>11}")
    for runtime, (fill, _, _) in results.items():
        label = "leadrelay backfill"
        if fill.error:
            print(f"{label:<52}{'failed':>8}   {fill.error.splitlines()[0][:100]}")
            continue
        ref = base[GUARANTEE[runtime]]
        print(
            f"{label:<52}{fill.rate:>8.0f}{fill.rate / copy:>8.3f}x{_ms(fill.cpu_ms):>11}   "
            f"{fill.rate / ref.rate:.2f}x of {GUARANTEE[runtime]} (one pair; the verdict is 4b)"
        )
    for runtime, (fill, _, _) in results.items():
        if not fill.error:
            decided = ", ".join(f"{k} {v}" for k, v in sorted(fill.reasons.items()))
            print(
                f"  {runtime}: start to ready {fill.ready_s:.1f}s, start to last decision {fill.total_s:.1f}s; "
                f"decisions: {decided}"
            )
    print(f"\n5. lead -> committed decision at {RATE:.0f} leads/s offered for {p.latency_seconds:.0f}s (send to read)")
    print(
        f"{'runtime':<16}{'sent':>7}{'decided':>9}{'decided/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        "   target p99 <= 250 ms"
    )
    for runtime, (_, lat, _) in results.items():
        if not lat.ms:
            print(f"{runtime:<16}{lat.sent:>7}{lat.decided:>9}   no measurement {lat.error or ''}")
            continue
        p50 = statistics.median(lat.ms)
        p99 = lat.ms[min(len(lat.ms) - 1, int(len(lat.ms) * 0.99))]
        missing = "" if lat.decided == lat.sent else f" ({lat.sent - lat.decided} undecided 15 s after the last send)"
        print(
            f"{runtime:<16}{lat.sent:>7}{lat.decided:>9}{lat.decided / lat.seconds:>11.0f}"
            f"{p50:>9.0f}{p99:>9.0f}{lat.ms[-1]:>9.0f}   "
            f"{_met(p99 <= TARGET_P99_MS and lat.decided == lat.sent)}{missing}"
        )
    print(f"\n6. a worker that lost its disk, {p.ledger:,} ledger entries in its route changelog")
    print(
        f"{'runtime':<16}{'entries':>10}{'seeded in':>11}{'start->ready':>14}{'RSS MB':>8}{'peak MB':>9}"
        f"   targets: ready <= {TARGET_READY_S:.0f} s, RSS <= {TARGET_RSS_MB:.0f} MB"
    )
    for runtime, (_, _, rec) in results.items():
        entries = rec.existing + rec.seeded
        head = f"{runtime:<16}{entries:>10,}{rec.seed_s:>10.0f}s"
        if rec.ready_s is None or rec.rss_mb is None:
            print(f"{head}   {rec.error}")
            continue
        print(
            f"{head}{rec.ready_s:>13.1f}s{rec.rss_mb:>8.0f}{rec.hwm_mb or 0:>9.0f}   "
            f"ready {_met(rec.ready_s <= TARGET_READY_S)}, RSS {_met(rec.rss_mb <= TARGET_RSS_MB)}; "
            f"re-sent seeded lead: {rec.answer}"
        )
    sizes = {r: rec.value_bytes for r, (_, _, rec) in results.items() if rec.value_bytes}
    if sizes:
        print("  one ledger entry: " + ", ".join(f"{r} {b:,} bytes" for r, b in sizes.items()))


def main(argv: list[str] | None = None) -> None:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # retried NotLeader... on fresh topics: noise
    parser = argparse.ArgumentParser(prog="python -m bench worker", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N for development (2,000 leads, 20,000 entries)")
    parser.add_argument("--leads", type=int, help="records per throughput row (default 20,000)")
    parser.add_argument("--ledger", type=int, help="ledger entries for row 6 (default 1,000,000)")
    parser.add_argument("--latency-seconds", type=float, help="seconds of offered load in row 5 (default 20)")
    parser.add_argument("--pairs", type=int, help="back-to-back pairs behind the backfill verdict (default 3)")
    args = parser.parse_args(argv or [])
    p = Params()
    if args.quick:
        p.leads, p.ledger, p.latency_seconds = 2_000, 20_000, 5.0
    p.leads = args.leads or p.leads
    p.ledger = args.ledger if args.ledger is not None else p.ledger
    p.latency_seconds = args.latency_seconds if args.latency_seconds is not None else p.latency_seconds
    p.pairs = max(1, args.pairs or p.pairs)
    # Logs stay (worker, agents, broker); data dirs and the broker's log segments go at the end.
    tmp = Path(".state") / "bench" / time.strftime("worker-%Y%m%d-%H%M%S")
    tmp.mkdir(parents=True)
    revision = _revision()  # the workers run the code of the working tree as it is when each one starts
    _progress(f"logs in {tmp}")
    state = tmp / "kafka"
    kafka = localkafka.start(state)
    try:
        bootstrap = kafka.bootstrap
        source = "bench.source"
        asyncio.run(create_topics(bootstrap, [source, "bench.copy"]))
        asyncio.run(produce_bulk(bootstrap, source, lead_records(p.leads, "S")))
        base = {"copy": asyncio.run(plain_copy(bootstrap, source, "bench.copy", p.leads))}
        _progress(f"plain copy {base['copy'].rate:.0f}/s")
        base["forward"] = bare_agent(bootstrap, source, p.leads, "forward", "at_least_once", tmp)
        _progress(f"bare forward {base['forward'].rate:.0f}/s")
        for guarantee in ("at_least_once", "exactly_once"):
            base[guarantee] = bare_agent(bootstrap, source, p.leads, "table", guarantee, tmp)
            _progress(f"bare table row {guarantee} {base[guarantee].rate:.0f}/s")
        results = {}
        for runtime in p.runtimes:
            results[runtime] = run_runtime(bootstrap, runtime, p, tmp)
            _progress(f"leadrelay {runtime} done")
        pairs = [(base["exactly_once"], results["transactional"][0])]
        extra = replace(p, latency_seconds=0.0, recover=False)
        for i in range(1, p.pairs):
            eos = bare_agent(bootstrap, source, p.leads, "table", "exactly_once", tmp)
            fill, _, _ = run_runtime(bootstrap, "transactional", extra, tmp, tag=f"pair{i}")
            pairs.append((eos, fill))
            _progress(f"pair {i + 1}: bare exactly_once {eos.rate:.0f}/s, leadrelay {fill.rate:.0f}/s")
        report(p, revision, base, results)
        report_pairs(pairs)
    finally:
        localkafka.stop(state)
        for path in tmp.iterdir():
            if path.is_dir():
                shutil.rmtree(path / "data" if path == state else path, ignore_errors=True)


def _revision() -> str:
    """The commit the run measured, and whether the working tree differed from it."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"
    return head + (" with uncommitted changes" if dirty else "")


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()


def _progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
