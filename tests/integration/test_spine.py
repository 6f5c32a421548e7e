"""Topic contracts of the streaming spine, on a real broker with several partitions and pools."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from schemas.events import Contact, DealClosed, LeadCreated, RepUpdated
from streams.tools import synthetic
from streams.tools.verify import verify

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
POOLS = ("dach", "emea", "americas")


def roster() -> list[RepUpdated]:
    reps = []
    for i, pool in enumerate(POOLS):
        for j in range(3):
            reps.append(RepUpdated(rep_id=f"{pool}-r{j}", pools=[pool], capacity=5 + 5 * j + i))
    reps.append(RepUpdated(rep_id="floater", pools=["dach", "emea"], capacity=4))
    reps.append(RepUpdated(rep_id="away", pools=["americas"], capacity=50, availability="away"))
    return reps


def lead(n: int, pool: str | None = None, **kw: object) -> LeadCreated:
    return LeadCreated(
        lead_id=f"L{n:05d}",
        created_at=T0 + timedelta(seconds=n),
        pool=pool or POOLS[n % len(POOLS)],
        estimated_value=1000.0 + n,
        contact=Contact(name="Jane Roe", email=f"jane{n}@example.com", phone="+1 555 0100"),
        **kw,  # type: ignore[arg-type]
    )


def replay_open(decisions: list, deals: list[DealClosed]) -> Counter:
    """Open leads per pool|rep from the decision log alone (first decision per lead counts)."""
    owner = {}
    for d in decisions:
        owner.setdefault(d.lead_id, d)
    open_ = Counter()
    for d in owner.values():
        if d.rep_id:
            open_[f"{d.pool}|{d.rep_id}"] += 1
    for deal in deals:
        d = owner.get(deal.lead_id)
        if d and d.rep_id:
            open_[f"{d.pool}|{d.rep_id}"] -= 1
    return open_


def test_every_lead_gets_exactly_one_decision_within_capacity(deployment) -> None:
    deployment.worker()
    reps = roster()
    deployment.send_roster(reps)
    deployment.settle(2)
    n = 150
    deployment.send_leads(lead(i) for i in range(n))
    decisions = deployment.decisions(at_least=n)

    assert len(decisions) == n
    assert Counter(d.lead_id for d in decisions) == Counter(f"L{i:05d}" for i in range(n))
    assert len({d.decision_id for d in decisions}) == n
    capacity = {r.rep_id: r.capacity for r in reps}
    held = Counter(f"{d.pool}|{d.rep_id}" for d in decisions if d.rep_id)
    for key, count in held.items():
        assert count <= capacity[key.split("|")[1]], key
    assert all(d.rep_id != "away" for d in decisions)
    # 9 pool reps + floater in two pools: total capacity per pool is exceeded, so some are unassigned
    reasons = Counter(d.reason for d in decisions)
    assert reasons["assigned"] == sum(held.values()) and reasons["no_eligible_rep"] == n - sum(held.values())
    for d in decisions:
        assert d.explanation.summary and d.policy_id and d.pool == f"{POOLS[int(d.lead_id[1:]) % 3]}"
        if d.rep_id:
            assert d.explanation.chosen and d.explanation.chosen.rep_id == d.rep_id

    deployment.settle()
    loads = deployment.table("loads")
    assert {k: v["open"] for k, v in loads.items() if v["open"]} == +replay_open(decisions, [])
    ledger = deployment.table("ledger")
    assert len(ledger) == n


def test_decision_within_a_second_and_no_contact_data_leaves(deployment) -> None:
    deployment.worker()
    deployment.send_roster(roster())
    deployment.settle(2)
    deployment.send_leads([lead(1, "emea")])  # warm-up: partitions assigned, producer connected
    deployment.decisions(at_least=1)
    deployment.send_leads([lead(2, "emea")])
    records = deployment.records(deployment.settings.topic_assignments, at_least=2)
    leads_in = {r.key: r.timestamp for r in deployment.records(deployment.settings.topic_leads_new, at_least=2)}
    latest = next(r for r in records if r.key == b"L00002")
    assert latest.timestamp - leads_in[b"L00002"] < 1000, "lead -> decision took a second or more"
    for r in records:
        assert b"example.com" not in r.value and b"Jane" not in r.value and b"555" not in r.value


def test_bad_input_goes_to_dlq_and_valid_leads_around_it_are_assigned(deployment_factory) -> None:
    dep = deployment_factory(extra={"LEADRELAY_MAX_PAYLOAD_BYTES": "2048"})
    worker = dep.worker()
    dep.send_roster(roster())
    dep.settle(2)
    topic = dep.settings.topic_leads_new
    good = [lead(i) for i in range(6)]
    bad = [
        (b"b1", b"\x00\xffnot json"),
        (b"b2", orjson.dumps({"created_at": T0.isoformat()})),  # lead_id missing
        (b"b3", orjson.dumps({"lead_id": "L9", "created_at": T0.isoformat(), "estimated_value": "lots"})),
        (b"b4", orjson.dumps({"lead_id": "L8", "created_at": T0.isoformat(), "attributes": {"x": "y" * 4000}})),
        (b"b5", b"[" * 50_000 + b"]" * 50_000),
        (b"b6", None),
    ]
    records = []
    for i, g in enumerate(good):
        records.append((g.lead_id.encode(), g.model_dump_json().encode()))
        if i < len(bad):
            records.append(bad[i])
    dep.send(topic, records)

    decisions = dep.decisions(at_least=len(good))
    assert sorted(d.lead_id for d in decisions) == sorted(g.lead_id for g in good)
    dlq = dep.records(dep.settings.topic_dlq, at_least=len(bad))
    assert len(dlq) == len(bad), [{k: v[:300] for k, v in r.headers} for r in dlq]
    by_key = {r.key: {k: v.decode() for k, v in r.headers} for r in dlq}
    assert by_key[b"b1"]["x-leadrelay-reason"] == "invalid_json"
    assert by_key[b"b2"]["x-leadrelay-reason"] == "schema_violation"
    assert by_key[b"b2"]["x-leadrelay-error-field"] == "lead_id"
    assert by_key[b"b3"]["x-leadrelay-error-field"] == "estimated_value"
    assert by_key[b"b4"]["x-leadrelay-reason"] == "payload_too_large"
    assert by_key[b"b5"]["x-leadrelay-reason"] == "payload_too_large"
    assert by_key[b"b6"]["x-leadrelay-reason"] == "invalid_json"
    for headers in by_key.values():
        assert headers["x-leadrelay-source-topic"] == topic
        assert int(headers["x-leadrelay-source-offset"]) >= 0
    raw = {r.key: r.value for r in dlq}
    assert raw[b"b1"] == b"\x00\xffnot json", "the DLQ keeps the payload exactly as it arrived"
    assert worker.alive()


def test_same_lead_twice_is_one_effective_decision(deployment) -> None:
    deployment.worker()
    deployment.send_roster(roster())
    deployment.settle(2)
    first = lead(7, "dach")
    deployment.send_leads([first, first])
    deployment.send_leads([first])
    decisions = deployment.decisions(at_least=3)
    assert len({(d.decision_id, d.rep_id, d.attempt) for d in decisions}) == 1
    deployment.settle()
    loads = deployment.table("loads")
    assert sum(v["open"] for v in loads.values()) == 1


def test_closed_deal_releases_load_and_moves_performance(deployment) -> None:
    deployment.worker()
    deployment.send_roster([RepUpdated(rep_id="solo", pools=["emea"], capacity=1)])
    deployment.settle(2)
    deployment.send_leads([lead(1, "emea")])
    [first] = deployment.decisions(at_least=1)
    assert first.rep_id == "solo"
    deployment.send_leads([lead(2, "emea")])
    second = next(d for d in deployment.decisions(at_least=2) if d.lead_id == "L00002")
    assert second.rep_id is None and second.reason == "no_eligible_rep"
    assert second.explanation.excluded == {"at_capacity": 1}

    # No pool on the deal: it is matched through the lead index built from the decisions.
    won = DealClosed(lead_id="L00001", outcome="won", amount=5000, closed_at=T0 + timedelta(days=3))
    deployment.send_deals([won])
    deployment.settle(4)
    assert deployment.table("loads")["emea|solo"]["open"] == 0
    buckets = deployment.table("performance")["emea|solo"]
    assert buckets == {"2026-11-05": [1, 0, 5000.0]}
    assert deployment.table("ledger")["emea|L00001"]["status"] == "won"

    deployment.send_leads([lead(3, "emea")])
    third = next(d for d in deployment.decisions(at_least=3) if d.lead_id == "L00003")
    assert third.rep_id == "solo", "capacity freed by the closed deal is usable again"


def test_deal_for_unknown_lead_goes_to_dlq_after_waiting(deployment_factory) -> None:
    dep = deployment_factory(
        extra={"LEADRELAY_UNKNOWN_LEAD_WAIT_SECONDS": "1", "LEADRELAY_HOUSEKEEPING_INTERVAL_SECONDS": "1"}
    )
    dep.worker()
    ghost = DealClosed(lead_id="GHOST-1", outcome="lost", closed_at=T0)
    dep.send_deals([ghost])
    [dead] = dep.records(dep.settings.topic_dlq, at_least=1, timeout=30)
    headers = {k: v.decode() for k, v in dead.headers}
    assert headers["x-leadrelay-reason"] == "unknown_lead"
    assert headers["x-leadrelay-source-topic"] == dep.settings.topic_deals_closed
    assert DealClosed.model_validate_json(dead.value) == ghost


@pytest.mark.parametrize("wipe_local_state", [False, True], ids=["same-dir", "state-deleted"])
def test_state_survives_worker_restart(deployment, wipe_local_state: bool) -> None:
    import shutil

    worker = deployment.worker()
    deployment.send_roster([RepUpdated(rep_id="solo", pools=["emea"], capacity=1)])
    deployment.settle(2)
    deployment.send_leads([lead(1, "emea")])
    assert deployment.decisions(at_least=1)[0].rep_id == "solo"
    deployment.settle()
    assert worker.stop() == 0
    if wipe_local_state:
        shutil.rmtree(worker.env["LEADRELAY_DATA_DIR"])  # recovery must come from the changelogs
    restarted = deployment.worker("w1")
    assert restarted.alive()
    deployment.send_leads([lead(1, "emea"), lead(2, "emea")])
    decisions = deployment.decisions(at_least=3)
    again = [d for d in decisions if d.lead_id == "L00001"]
    assert len({d.decision_id for d in again}) == 1 and {d.rep_id for d in again} == {"solo"}
    second = [d for d in decisions if d.lead_id == "L00002"]
    assert [d.reason for d in second] == ["no_eligible_rep"], "the load from before the restart still counts"


def test_a_lead_re_sent_with_another_pool_keeps_its_first_decision_and_load(deployment) -> None:
    """Issue 9 item 2: the first decision stands; the re-send (new explicit pool, or attributes that a
    territory rule now places elsewhere) is a duplicate of it, never a second decision in another pool
    under the same decision id. Keys differ on purpose: the producer's key must not matter."""
    deployment.worker()
    deployment.send_roster(roster())
    deployment.settle(2)
    first = [lead(n, pool="dach") for n in range(12)]
    deployment.send_leads(first)
    decided = {d.lead_id: d for d in deployment.decisions(at_least=12)}
    moved = [x.model_copy(update={"pool": "americas"}) for x in first]
    deployment.send(deployment.settings.topic_leads_new, [(None, x.model_dump_json().encode()) for x in moved])
    decisions = deployment.decisions(at_least=24)
    deployment.settle(3)
    assert {d.pool for d in decisions} == {"dach"}
    for d in decisions:
        assert d == decided[d.lead_id], f"{d.lead_id} was decided again"
    report = verify(deployment.settings)
    assert report.ok, report.table()
    assert report.duplicate_decisions == 12


def test_leads_on_a_leads_topic_with_more_partitions_than_the_tables_are_decided(deployment) -> None:
    """leads.new is upstream's topic and may have more partitions than leadrelay's tables: a lead on a
    partition with no table of its own is passed on to its home partition and decided like any other."""
    import asyncio

    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from streams.kafka.security import client_kwargs

    s = deployment.settings

    async def create() -> None:
        admin = AIOKafkaAdminClient(**client_kwargs(s))
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(s.topic_leads_new, num_partitions=s.partitions + 2, replication_factor=1)]
            )
        finally:
            await admin.close()

    async def send() -> None:
        producer = AIOKafkaProducer(**client_kwargs(s), acks="all")
        await producer.start()
        try:
            for n in range(s.partitions + 2):  # one lead on every partition, the tableless ones too
                await producer.send_and_wait(s.topic_leads_new, synthetic.wire(lead(n, "dach")), partition=n)
        finally:
            await producer.stop()

    asyncio.run(create())
    deployment.worker()
    deployment.send_roster(roster())
    deployment.settle(3)  # the roster reaches the pool log before the leads
    asyncio.run(send())
    decisions = deployment.decisions(at_least=s.partitions + 2)
    assert sorted({d.lead_id for d in decisions}) == [f"L{n:05d}" for n in range(s.partitions + 2)]
    assert all(d.rep_id for d in decisions)
