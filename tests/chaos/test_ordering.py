"""Duplicates and order, under load: the same lead twice, deals before their lead's decision, deals for
unknown leads, producer retries, event and record timestamps skewed by minutes, and roster and policy
changes racing the leads. Judged by the verifier (which replays each pool's log for I2 and I4) plus the
specific promise of each case."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from schemas.events import AssignmentDecision, DealClosed, LeadCreated
from streams.kafka.clients import read_all
from streams.kafka.security import client_kwargs
from streams.settings import Settings
from streams.tools import synthetic
from tests.chaos.conftest import (
    POOLS,
    Load,
    plan_load,
    publish,
    publish_roster,
    scaled,
    settle_and_verify,
    wait_decided,
    wait_for,
)
from tests.integration.conftest import Deployment

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

MINUTE_MS = 60_000


def send_raw(
    s: Settings, records: list[tuple[str, bytes | None, bytes | None, int | None]], *, idempotent: bool
) -> None:
    """(topic, key, value, timestamp_ms) in order. idempotent=False: a producer like an old connector,
    whose retries are visible as duplicate records."""

    async def go() -> None:
        producer = AIOKafkaProducer(**client_kwargs(s), acks="all", enable_idempotence=idempotent)
        await producer.start()
        try:
            for topic, key, value, ts in records:
                await producer.send_and_wait(topic, key=key, value=value, timestamp_ms=ts)
        finally:
            await producer.stop()

    asyncio.run(go())


def decisions_of(dep: Deployment) -> dict[str, list[AssignmentDecision]]:
    out: dict[str, list[AssignmentDecision]] = {}
    for r in asyncio.run(read_all(dep.settings, dep.settings.topic_assignments, idle=1.0)):
        d = AssignmentDecision.model_validate_json(r.value)
        out.setdefault(d.lead_id, []).append(d)
    return out


def dlq_reasons(dep: Deployment) -> dict[bytes | None, str]:
    return {
        r.key: dict(r.headers)["x-leadrelay-reason"].decode()
        for r in asyncio.run(read_all(dep.settings, dep.settings.topic_dlq, idle=1.0))
    }


def test_duplicates_early_and_unknown_deals_and_skewed_clocks(chaos: Callable[..., Deployment]) -> None:
    t0 = time.monotonic()
    dep = chaos(LEADRELAY_UNKNOWN_LEAD_WAIT_SECONDS="10", LEADRELAY_HOUSEKEEPING_INTERVAL_SECONDS="1")
    worker = dep.worker("w1")
    publish_roster(dep)
    s = dep.settings
    load = Load(s, plan_load(s, scaled(300), prefix="bg", seed=3), rate=25)
    load.start()
    now = datetime.now(UTC).replace(microsecond=0)
    now_ms = int(now.timestamp() * 1000)
    pool = POOLS[0]

    def lead(lead_id: str, **kw: object) -> LeadCreated:
        return LeadCreated(lead_id=lead_id, created_at=kw.pop("created_at", now), pool=pool, **kw)  # type: ignore[arg-type]

    def rec(item: LeadCreated | DealClosed, ts: int | None = None) -> tuple[str, bytes, bytes, int | None]:
        topic = s.topic_leads_new if isinstance(item, LeadCreated) else s.topic_deals_closed
        raw = synthetic.wire(item) if isinstance(item, LeadCreated) else item.model_dump_json().encode()
        return (topic, item.lead_id.encode(), raw, ts)

    twice = lead("dup-1", estimated_value=100)
    early = lead("early-1", estimated_value=200)
    early_deal = DealClosed(lead_id="early-1", outcome="won", amount=150, closed_at=now + timedelta(days=2))
    ghost_deal = DealClosed(lead_id="ghost-1", outcome="lost", closed_at=now)
    closed_then_again = lead("again-1", estimated_value=300)
    skewed = [
        lead("skew-past", created_at=now - timedelta(minutes=15)),
        lead("skew-future", created_at=now + timedelta(minutes=10)),
    ]
    load.wait_sent(0.2)
    load.assert_running()
    # 1. the same lead twice in a row (a producer retry without idempotence), then again changed.
    send_raw(s, [rec(twice), rec(twice)], idempotent=False)
    # 2. a deal before its lead exists (CRM faster than us): parked, applied once the lead is decided.
    send_raw(s, [rec(early_deal), rec(early_deal)], idempotent=False)  # and that deal twice
    send_raw(s, [rec(early)], idempotent=True)
    # 3. a deal for a lead nobody ever sent: waits, then DLQ unknown_lead.
    send_raw(s, [rec(ghost_deal)], idempotent=True)
    # 4. record and event timestamps minutes off the worker's clock, both ways.
    send_raw(
        s,
        [rec(skewed[0], now_ms - 12 * MINUTE_MS), rec(skewed[1], now_ms + 9 * MINUTE_MS), rec(closed_then_again)],
        idempotent=True,
    )
    wait_decided(dep, {"dup-1", "early-1", "again-1", "skew-past", "skew-future"}, timeout=120)
    deal_again = DealClosed(lead_id="again-1", outcome="won", amount=10, closed_at=now - timedelta(minutes=30))
    send_raw(s, [rec(deal_again, now_ms - 7 * MINUTE_MS)], idempotent=True)
    load.assert_running()
    # 5. a closed lead arrives again, changed: the stored decision is re-emitted, nothing re-opens.
    changed = lead("dup-1", estimated_value=999_999, country="JP")
    wait_for(lambda: dep.table("ledger").get(f"{pool}|again-1", {}).get("status") == "won", 60, "again-1 closed")
    send_raw(s, [rec(changed), rec(closed_then_again)], idempotent=True)
    load.join_ok()
    wait_for(lambda: dlq_reasons(dep).get(b"ghost-1") == "unknown_lead", 90, "the ghost deal in the DLQ", 1.0)
    wait_for(lambda: len(decisions_of(dep).get("again-1", [])) >= 2, 60, "again-1 re-emitted")

    report = settle_and_verify(dep, [worker], timeout=120)
    notes = (
        f"Background load {load.total} records at 25/s; injected: a lead twice (non-idempotent producer) and"
        " again changed, a deal before its lead (twice), a deal for an unknown lead, leads with event/record"
        " timestamps -15/+10 min, a deal closed 30 min in the past, a closed lead sent again."
    )
    publish("duplicates, early/unknown deals, skewed timestamps", report, time.monotonic() - t0, notes)
    assert report.ok, report.table()
    assert report.internal_errors == 0

    decided = decisions_of(dep)
    for lead_id in ("dup-1", "again-1"):
        assert len({(d.decision_id, d.rep_id) for d in decided[lead_id]}) == 1, decided[lead_id]
    assert len(decided["dup-1"]) >= 3 and len(decided["again-1"]) >= 2
    ledger = dep.table("ledger")
    assert ledger[f"{pool}|early-1"]["status"] == "won", "the early deal was applied once its lead was decided"
    assert ledger[f"{pool}|again-1"]["status"] == "won", "a closed lead sent again stays closed"
    assert {"skew-past", "skew-future"} <= decided.keys()
    assert dlq_reasons(dep)[b"ghost-1"] == "unknown_lead"


def test_roster_and_policy_changes_race_the_leads(chaos: Callable[..., Deployment]) -> None:
    """While leads flow: reps go away and come back, lose capacity below what they hold, leave and
    rejoin pools, are deleted (tombstone) and re-created; a pool's policy moves through new versions,
    a stale version (DLQ) and a deletion. The verifier replays each pool's log: no lead went to a rep
    that was unavailable or full at that point (I4, I2)."""
    t0 = time.monotonic()
    dep = chaos()
    worker = dep.worker("w1")
    reps = publish_roster(dep)
    s = dep.settings
    load = Load(s, plan_load(s, scaled(500), prefix="race", seed=5, deal_every=4), rate=30)
    load.start()
    rng = random.Random(11)
    base = {r.rep_id: r for r in reps if r.availability == "available"}
    changes = 0
    stop = threading.Event()

    def policy(version: int, scorers: dict[str, float]) -> bytes:
        body = {"id": "race", "version": version, "pool": POOLS[0], "strategies": {"default": {"scorers": scorers}}}
        return orjson.dumps(body)

    policy_steps = [
        (POOLS[0].encode(), policy(2, {"rotation": 1.0})),
        (POOLS[0].encode(), policy(3, {"load": 1.0, "fairness": 0.5})),
        (POOLS[0].encode(), policy(2, {"load": 1.0})),  # stale: refused (DLQ), v3 stays
        (POOLS[0].encode(), None),  # deleted: the default applies again
        (POOLS[0].encode(), policy(4, {"load": 1.0, "rotation": 0.2})),
    ]

    def churn() -> None:
        nonlocal changes
        step = 0
        while not stop.is_set():
            rep = base[rng.choice(sorted(base))]
            kind = rng.choice(["away", "offline", "capacity", "leave", "inactive", "tombstone"])
            if kind == "tombstone":
                first: bytes | None = None
            else:
                update = {
                    "away": {"availability": "away"},
                    "offline": {"availability": "offline"},
                    "capacity": {"capacity": rng.randint(0, 3)},
                    "leave": {"pools": []},
                    "inactive": {"active": False},
                }[kind]
                first = rep.model_copy(update=update).model_dump_json().encode()
            records = [(s.topic_reps_roster, rep.rep_id.encode(), first, None)]
            records.append((s.topic_reps_roster, rep.rep_id.encode(), rep.model_dump_json().encode(), None))
            if step % 2 == 0 and step // 2 < len(policy_steps):
                key, value = policy_steps[step // 2]
                records.insert(1, (s.topic_policies, key, value, None))
            send_raw(s, records[:1], idempotent=True)
            time.sleep(rng.uniform(0.2, 1.0))  # the rep stays changed while leads arrive
            send_raw(s, records[1:], idempotent=True)
            changes += 1
            step += 1
            time.sleep(rng.uniform(0.1, 0.5))

    churner = threading.Thread(target=churn, daemon=True)
    churner.start()
    try:
        load.join_ok()
    finally:
        stop.set()
        churner.join(30)
    assert changes >= 10, "the roster hardly changed during the load"

    # After the race, the last policy (v4) is the one in force for pool 0.
    wait_for(lambda: (dep.table("policies").get(POOLS[0]) or {}).get("version") == 4, 60, "policy v4 in force")
    last = LeadCreated(lead_id="after-race", created_at=datetime.now(UTC), pool=POOLS[0])
    send_raw(s, [(s.topic_leads_new, b"after-race", synthetic.wire(last), None)], idempotent=True)
    wait_decided(dep, {"after-race"}, timeout=60)
    report = settle_and_verify(dep, [worker], timeout=120)
    notes = f"{changes} roster changes (each reverted after 0.2-1 s) and 5 policy updates for {POOLS[0]}"
    notes += f" during a load of {load.total} records at 30/s."
    publish("roster and policy changes racing the leads", report, time.monotonic() - t0, notes)
    assert report.ok, report.table()
    assert report.internal_errors == 0
    [after] = {d.decision_id: d for d in decisions_of(dep)["after-race"]}.values()
    assert (after.policy_id, after.policy_version) == ("race", 4)
    assert dlq_reasons(dep).get(POOLS[0].encode()) == "stale_policy_version"
