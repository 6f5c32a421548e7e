"""No contact data leaves `leads.new` except into the DLQ: logs, metrics, tables and outputs are scanned.

A real worker (debug logging, so every log call of ours is live) gets leads whose contact block holds
canary values: valid ones (assigned, so they pass ingest, route, the tables and the decision topic; one
contact, so with the pool's dedupe on they are duplicates whose keyed hashes reach the tables),
re-sent duplicates, and invalid ones that reach the DLQ and the error paths in every way a contact block
can break (bad field inside it, unknown key named like an e-mail, flattened to the top level, broken
JSON, too large), plus a deal carrying a contact block, and updates carrying it (one moving a lead to
another pool, one for a lead not seen before, one invalid). Then nothing may contain any canary: the worker's
log, its /metrics (and health) pages, every table changelog and internal topic of the app, the decision
topic, the local RocksDB table stores, and the DLQ's headers. The DLQ's payloads hold the raw records by
design: the canaries must be found there, which proves the scan would find them anywhere else.
"""

from __future__ import annotations

import asyncio
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from schemas.events import RepUpdated
from streams.kafka.clients import read_all
from streams.kafka.security import client_kwargs
from streams.settings import Settings

pytestmark = pytest.mark.integration

NAME, EMAIL, PHONE = "Zed Quux-PII", "pii-canary@example.invalid", "+99 999 999 9999"
CONTACT = {"name": NAME, "email": EMAIL, "phone": PHONE}
SECRET = "dedupe-secret-canary-0123456789"  # the dedupe HMAC key: never logged or stored either
# Whole values and distinctive fragments (a truncated or re-encoded value must be caught too). The
# digits-only phone is left out: a run of nines turns up in any float of /metrics.
CANARIES = (NAME, "Quux-PII", EMAIL, "pii-canary", PHONE, "999 999 9999", SECRET)
# Dedupe on in the pool the valid leads go to: their keyed hashes travel, the contact does not.
DEDUPE_POLICY = {"id": "pii-dedupe", "version": 1, "dedupe": {"keys": ["email", "phone", "domain"]}}
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def lead(lead_id: str, n: int, **fields: Any) -> dict[str, Any]:
    return {
        "lead_id": lead_id,
        "created_at": (T0 + timedelta(seconds=n)).isoformat(),
        "country": "DE",
        "estimated_value": 1000.0 + n,
        "contact": CONTACT,
        **fields,
    }


def wire(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data)


VALID = [lead(f"PII-OK-{i}", i) for i in range(4)]
INVALID: list[tuple[str, bytes]] = [
    # a non-contact field is wrong; the contact block itself is fine
    ("PII-BAD-value", wire(lead("PII-BAD-value", 10, estimated_value=-5))),
    # a contact field breaks its contract (too long), and has the wrong type
    ("PII-BAD-long", wire(lead("PII-BAD-long", 11, contact={**CONTACT, "email": EMAIL + " " + "x" * 300}))),
    ("PII-BAD-type", wire(lead("PII-BAD-type", 12, contact={"name": [NAME], "phone": PHONE}))),
    # an unknown key inside contact that is itself personal data
    ("PII-BAD-key", wire(lead("PII-BAD-key", 13, contact={EMAIL: NAME, PHONE: True}))),
    # contact flattened to the top level by a broken upstream
    ("PII-BAD-flat", wire({**lead("PII-BAD-flat", 14), "contact": None, **CONTACT})),
    # not JSON at all (truncated), and too large
    ("PII-BAD-json", wire(lead("PII-BAD-json", 15))[:-20]),
    ("PII-BAD-size", wire(lead("PII-BAD-size", 16, source="web" + " " * 10)) + b" " * 70_000),
]


def roster() -> list[RepUpdated]:
    return [RepUpdated(rep_id=f"pii-r{i}", pools=["default"], capacity=10) for i in range(2)]


def found(blob: bytes | str) -> list[str]:
    text = blob.decode(errors="replace") if isinstance(blob, bytes) else blob
    return [c for c in CANARIES if c in text]


def record_bytes(record: Any, *, headers: bool = True, value: bool = True) -> bytes:
    parts = [record.key or b""]
    if value:
        parts.append(record.value or b"")
    if headers:
        parts += [k.encode() + b"=" + (v or b"") for k, v in record.headers or ()]
    return b"\n".join(parts)


async def app_topics(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """The app's own topics (name prefix `<app_id>-`), and the DLQ's topic configuration."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        topics = sorted(t for t in await admin.list_topics() if t.startswith(f"{settings.app_id}-"))
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, settings.topic_dlq)])
        [(_, _, _, _, entries)] = response.resources
        return topics, {entry[0]: entry[1] for entry in entries}
    finally:
        await admin.close()


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return resp.read().decode(errors="replace")


def rocksdb_values(data_dir: Path) -> tuple[int, list[str]]:
    """(records read, canaries found) over every local RocksDB table store of a stopped worker."""
    from rocksdict import AccessType, Options, Rdict

    count, hits = 0, []
    for path in sorted(p for p in data_dir.rglob("*.db") if p.is_dir()):
        db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            for key, value in db.items():
                count += 1
                hits += [f"{path.name}: {c}" for c in found(bytes(key) + b"\n" + bytes(value))]
        finally:
            db.close()
    return count, hits


def test_contact_data_never_leaves_the_input_except_into_the_dlq(deployment_factory) -> None:
    dep = deployment_factory(extra={"LEADRELAY_DEDUPE_SECRET": SECRET})
    settings = dep.settings
    worker = dep.worker(LEADRELAY_LOG_LEVEL="debug")
    dep.send_roster(roster())
    dep.send(settings.topic_policies, [(b"default", wire(DEDUPE_POLICY))])
    dep.settle(2)

    dep.send(settings.topic_leads_new, [(d["lead_id"].encode(), wire(d)) for d in VALID])
    dep.send(settings.topic_leads_new, [(key.encode(), value) for key, value in INVALID])
    dep.send(settings.topic_leads_new, [(VALID[0]["lead_id"].encode(), wire(VALID[0]))])  # a duplicate
    deal = {"lead_id": VALID[1]["lead_id"], "outcome": "won", "amount": 10.0, "closed_at": T0.isoformat()}
    dep.send(settings.topic_deals_closed, [(b"PII-OK-1", wire({**deal, "contact": CONTACT}))])

    decisions = dep.decisions(at_least=len(VALID))
    assert {d.lead_id for d in decisions} == {d["lead_id"] for d in VALID}
    assert any(d.rep_id for d in decisions)
    assert any(d.trigger == "duplicate_of" for d in decisions), "dedupe was on: one contact, one holder"
    updates = [
        (b"PII-OK-2", wire(lead("PII-OK-2", 2, pool="elsewhere"))),  # moved: released here, decided there
        (b"PII-UPD-new", wire(lead("PII-UPD-new", 20))),  # an update of a lead not seen before: its first sight
        (b"PII-UPD-bad", wire(lead("PII-UPD-bad", 21, estimated_value=-5))),  # dead-lettered
    ]
    dep.send(settings.topic_leads_updated, updates)
    decisions = dep.decisions(at_least=len(VALID) + 2)
    assert {(d.lead_id, d.pool) for d in decisions if d.attempt == 2} == {("PII-OK-2", "elsewhere")}
    dlq = dep.records(settings.topic_dlq, at_least=len(INVALID) + 2)
    dep.settle(3)  # table changelogs are flushed asynchronously

    # --- the worker's HTTP pages, while it runs
    pages = {path: get(worker.web_port, path) for path in ("/metrics", "/healthz", "/readyz")}
    assert "leadrelay_" in pages["/metrics"]
    assert 'reason="schema_violation"' in pages["/metrics"], "the invalid leads were counted"
    leaks = [f"{path}: {c}" for path, page in pages.items() for c in found(page)]

    worker.stop()  # flushes everything; the RocksDB stores can be opened once it is gone

    # --- the DLQ: payloads hold the raw records (the positive control), headers hold none of it
    dlq_keys = {r.key for r in dlq}
    assert {k.encode() for k, _ in INVALID} | {b"PII-OK-1", b"PII-UPD-bad"} <= dlq_keys
    payload_hits = {c for r in dlq for c in found(r.value or b"")}
    assert {NAME, EMAIL, PHONE} <= payload_hits, "the scan must find the canaries where they are (DLQ payloads)"
    leaks += [f"DLQ header of {r.key!r}: {c}" for r in dlq for c in found(record_bytes(r, value=False))]

    # --- the log: every line, including tracebacks
    log = worker.log_path.read_text(errors="replace")
    assert "dead-lettered" in log, "the error paths were logged (and so scanned)"
    leaks += [f"worker log: {c}" for c in found(log)]

    # --- every topic of the app (changelogs, internal pool/lead events, Faust's own) and the decisions
    topics, dlq_config = asyncio.run(app_topics(settings))
    assert dlq_config["retention.ms"] == str(14 * 24 * 3600 * 1000), "docs/security.md: the DLQ keeps 14 days"
    assert f"{settings.app_id}-pool-events" in topics and f"{settings.app_id}-lead-events" in topics
    assert f"{settings.app_id}-route-changelog" in topics
    scanned: dict[str, int] = {}
    for topic in [*topics, settings.topic_assignments]:
        records = asyncio.run(read_all(settings, topic))
        scanned[topic] = len(records)
        leaks += [f"{topic}: {c}" for r in records for c in found(record_bytes(r))]
    # the scan saw the data it is meant to check: the valid leads went through these topics
    for topic in (f"{settings.app_id}-pool-events", f"{settings.app_id}-route-changelog", settings.topic_assignments):
        assert scanned[topic] >= len(VALID), (topic, scanned[topic])
    pool_events = b"".join(record_bytes(r) for r in asyncio.run(read_all(settings, f"{settings.app_id}-pool-events")))
    assert all(d["lead_id"].encode() in pool_events for d in VALID)

    # --- the local table stores on disk
    stored, hits = rocksdb_values(dep.root / "w1" / "tables")
    assert stored > 0, "no RocksDB table store found under the worker's data dir"
    leaks += hits

    assert not leaks, "contact data leaked:\n" + "\n".join(sorted(set(leaks)))
