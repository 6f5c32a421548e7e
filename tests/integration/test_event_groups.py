"""An event whose changelog rows were cut short is left out at recovery and handled again, on a real
broker and a real worker (streams/changelog.py, docs/reliability.md finding 7)."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import orjson
from aiokafka import AIOKafkaProducer

from schemas.events import AssignmentDecision, RepUpdated
from streams.changelog import GROUP_HEADER, STAMP_HEADER, stamp_of
from streams.clients import read_all
from streams.security import client_kwargs
from streams.settings import Settings
from streams.tables import changelog_topic
from tests.integration.test_spine import lead

CUT = "leadrelay_incomplete_event_changelog_records_total"


async def _send_row(settings: Settings, topic: str, partition: int, key: str, value: bytes, stamp: str) -> None:
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all")
    await producer.start()
    try:
        headers = [(STAMP_HEADER, stamp.encode()), (GROUP_HEADER, b"999999999")]
        await producer.send_and_wait(topic, key=orjson.dumps(key), value=value, partition=partition, headers=headers)
    finally:
        await producer.stop()


def _metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in body.splitlines() if line.startswith(name + "{"))


def test_a_decision_cut_short_in_the_changelog_is_made_again_from_the_state_before_it(deployment) -> None:
    """The worker deciding lead 2 got the ledger row out (a decision for `ghost`) and died before the
    load, the pool state and the terminator. The next worker must not take lead 2 for decided: it leaves
    the row out, decides lead 2 itself, and counts it once in the rep's load."""
    dep = deployment
    worker = dep.worker(LEADRELAY_RUNTIME="faust")
    dep.send_roster([RepUpdated(rep_id="solo", pools=["emea"], capacity=5)])
    dep.settle(2)
    dep.send_leads([lead(1, "emea")])
    [first] = dep.decisions(at_least=1)
    dep.settle()
    assert worker.stop() == 0  # a clean stop: its local store is kept and recovery reads only the tail

    topic = changelog_topic(dep.settings.app_id, "route")
    rows = asyncio.run(read_all(dep.settings, topic))
    ledger_1 = next(r for r in rows if r.key == orjson.dumps("ledger|emea|L00001"))
    partition = ledger_1.partition
    epoch, generation = max(s for r in rows if r.partition == partition and (s := stamp_of(r.headers)))
    entry = orjson.loads(ledger_1.value)
    ghost = first.model_copy(update={"lead_id": "L00002", "rep_id": "ghost"})
    entry.update(decision=orjson.loads(ghost.model_dump_json()), rep_id="ghost")
    # Same writer as the worker's last rows (its stamp), a new event group, and nothing after it.
    stamp = f"{epoch}:{generation}:999999999"
    asyncio.run(_send_row(dep.settings, topic, partition, "ledger|emea|L00002", orjson.dumps(entry), stamp))
    dep.send_leads([lead(2, "emea")])  # the lead of that event, not yet handled for good

    restarted = dep.worker("w1", LEADRELAY_RUNTIME="faust")
    try:
        decisions = dep.decisions(at_least=2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{restarted.tail()}") from None
    second = [d for d in decisions if d.lead_id == "L00002"]
    assert second and {d.rep_id for d in second} == {"solo"}, [d.rep_id for d in second]
    assert all(isinstance(d, AssignmentDecision) for d in second)
    deadline = time.monotonic() + 30
    while dep.table("loads").get("emea|solo", {}).get("open") != 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert dep.table("loads")["emea|solo"]["open"] == 2, "lead 2 counted once, lead 1 still open"
    assert dep.table("ledger")["emea|L00002"]["rep_id"] == "solo", "the changelog, read as recovery reads it"
    assert _metric(restarted.web_port, CUT) == 1, "the row left out is counted"
