"""The ingress benchmark (issue 13): signed POSTs against `leadrelay ingress` on one local broker, next to a
plain aiohttp echo server in the same run.

    python -m bench ingress [--seconds S] [--concurrency C] [--batch N] [--bootstrap HOST:PORT]

Rows, each a separate server process driven by this one for S seconds by C concurrent clients:

1. echo: a bare aiohttp server that reads the body and answers 202 (no validation, no Kafka);
2. ingress: `leadrelay ingress`: HMAC check, replay guard, validation with the contract, an idempotent
   acks=all produce, and the 202 only after the acknowledgement;
3./4. the same two with JSON-lines batches of N leads per request (records per second).

Every client signs every request (HMAC-SHA256), for the echo server too, so both rows carry the same
client cost. Reported: requests/s (and records/s), p50 and p99 latency, non-2xx answers, and the ratio
ingress/echo. The broker is started here unless --bootstrap names one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from bench.worker import _revision
from streams.ingress.auth import signed_headers
from streams.kafka.admin import ensure_topics
from streams.settings import Settings
from streams.tools import localkafka
from streams.tools.supervise import WorkerProcess, free_port

SECRET = b"bench-secret-0123456789abcdef"
NDJSON = "application/x-ndjson"


@dataclass
class Row:
    name: str
    requests: int = 0
    records: int = 0
    errors: int = 0
    seconds: float = 0.0
    ms: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.ms:
            return float("nan")
        return statistics.quantiles(self.ms, n=1000, method="inclusive")[int(q * 1000) - 1]


def lead_line(i: int, run: str) -> bytes:
    return orjson.dumps(
        {
            "lead_id": f"{run}-{i}",
            "created_at": "2026-01-05T09:00:00Z",
            "pool": "dach",
            "country": "DE",
            "estimated_value": 12000,
            "contact": {"email": "lead@example.com"},
        }
    )


async def drive(url: str, seconds: float, concurrency: int, batch: int, name: str) -> Row:
    """`concurrency` clients POST signed requests back to back for `seconds`."""
    row, run = Row(name), uuid.uuid4().hex[:8]
    counter = iter(range(10**12))
    ctype = NDJSON if batch > 1 else "application/json"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        # warm-up: connections open, producer connected and metadata known
        for _ in range(3):
            body = lead_line(next(counter), run)
            async with session.post(
                url, data=body, headers={"Content-Type": "application/json"} | signed_headers("bench", SECRET, body)
            ) as r:
                await r.read()
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            while time.perf_counter() < deadline:
                body = b"\n".join(lead_line(next(counter), run) for _ in range(batch))
                headers = {"Content-Type": ctype, **signed_headers("bench", SECRET, body)}
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    ok = resp.status == 202
                row.ms.append((time.perf_counter() - started) * 1000)
                row.requests += 1
                row.records += batch if ok else 0
                row.errors += 0 if ok else 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        row.seconds = time.perf_counter() - started
    return row


# --- the echo baseline, a process of its own -----------------------------------------------------


def echo_server(port: int) -> None:
    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"status": "accepted"}, status=202)

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/v1/leads", accept)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def start_echo(port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.ingress", "echo", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        time.sleep(0.1)
    raise RuntimeError("echo server did not start")


def report(rows: list[Row], revision: str, concurrency: int, batch: int) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print()
    print(
        f"ingress benchmark: one local Kafka {localkafka.KAFKA_VERSION} broker, {os.cpu_count()} cores, "
        "every request HMAC-signed"
    )
    print(f"code: {revision}; {concurrency} concurrent clients; load average at the end: {load}")
    print(f"{'row':<34}{'req/s':>9}{'rec/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non-202':>9}   vs echo (req/s, p99)")
    by = {r.name: r for r in rows}
    for r in rows:
        base = by["echo" if "batch" not in r.name else f"echo, batch {batch}"]
        ratio = f"{r.rps / base.rps:.2f}x, {r.pct(0.99) / base.pct(0.99):.1f}x" if r is not base else "1.00x, 1.0x"
        print(
            f"{r.name:<34}{r.rps:>9.0f}{r.records_per_s:>9.0f}{r.pct(0.5):>9.2f}{r.pct(0.99):>9.2f}"
            f"{r.errors:>9}   {ratio}"
        )


def main(argv: list[str] | None = None) -> None:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(prog="python -m bench ingress", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds per row (default 15)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--batch", type=int, default=100, help="leads per batch request (default 100)")
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    args = parser.parse_args(argv or [])
    tmp = Path(".state") / "bench" / time.strftime("ingress-%Y%m%d-%H%M%S")
    tmp.mkdir(parents=True)
    revision = _revision()
    state = tmp / "kafka"
    bootstrap = args.bootstrap or localkafka.start(state).bootstrap
    echo: subprocess.Popen[bytes] | None = None
    ingress: WorkerProcess | None = None
    try:
        ns = f"bench{uuid.uuid4().hex[:6]}"
        env = {
            "LEADRELAY_BOOTSTRAP_SERVERS": bootstrap,
            "LEADRELAY_APP_ID": f"bench-{ns}",
            "LEADRELAY_LOG_LEVEL": "warning",
            **Settings.namespaced_topics(ns),
        }
        asyncio.run(ensure_topics(Settings.from_env(env)))
        (tmp / "sources.yaml").write_text(f"bench: {SECRET.decode()}\n")
        api_port, echo_port = free_port(), free_port()
        ingress = WorkerProcess(
            {
                **env,
                "LEADRELAY_WEB_PORT": str(free_port()),
                "LEADRELAY_INGRESS_PORT": str(api_port),
                "LEADRELAY_INGRESS_SOURCES_FILE": str((tmp / "sources.yaml").resolve()),
                "LEADRELAY_INGRESS_MAX_IN_FLIGHT": "100000",
                "LEADRELAY_INGRESS_REPLAY_WINDOW_SECONDS": "3600",
            },
            tmp / "ingress.log",
            command=("ingress",),
        )
        ingress.start().wait_ready(60)
        echo = start_echo(echo_port, tmp / "echo.log")
        rows = []
        plan = [
            ("echo", echo_port, 1, args.concurrency),
            ("ingress", api_port, 1, args.concurrency),
            (f"echo, batch {args.batch}", echo_port, args.batch, max(1, args.concurrency // 4)),
            (f"ingress, batch {args.batch}", api_port, args.batch, max(1, args.concurrency // 4)),
        ]
        for name, port, batch, clients in plan:
            row = asyncio.run(drive(f"http://127.0.0.1:{port}/v1/leads", args.seconds, clients, batch, name))
            print(f"[bench] {name}: {row.rps:.0f} req/s, p99 {row.pct(0.99):.1f} ms", file=sys.stderr, flush=True)
            rows.append(row)
        report(rows, revision, args.concurrency, args.batch)
    finally:
        if echo is not None:
            echo.terminate()
            echo.wait(10)
        if ingress is not None:
            ingress.stop()
        if not args.bootstrap:
            localkafka.stop(state)
            shutil.rmtree(state / "data", ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["echo"]:
        echo_server(int(sys.argv[2]))
    else:
        main(sys.argv[1:])
