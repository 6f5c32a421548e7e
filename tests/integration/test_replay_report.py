"""replay and report against the topics of a real run: totals as produced, history reproduced, no group touched."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from schemas.events import DealClosed, LeadCreated, RepUpdated
from streams.kafka.clients import produce
from streams.kafka.security import client_kwargs
from streams.tools import synthetic
from streams.tools.cli import main

pytestmark = pytest.mark.integration

POLICY = """
id: trial
version: 1
pool: a
strategies:
  default: {scorers: {load: 1.0}, tie_break: [rotation]}
  rotation: {scorers: {rotation: 1.0}}
experiment:
  id: ab
  variants: [{id: A, share: 0.5, strategy: default}, {id: B, share: 0.5, strategy: rotation}]
"""
T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


def _groups(settings) -> set[str]:
    async def listed() -> set[str]:
        admin = AIOKafkaAdminClient(**client_kwargs(settings))
        await admin.start()
        try:
            return {g[0] for g in await admin.list_consumer_groups()}
        finally:
            await admin.close()

    return asyncio.run(listed())


def _leads(first: int, count: int) -> list[LeadCreated]:
    return [
        LeadCreated(
            lead_id=f"R{n:03d}",
            created_at=T0 + timedelta(minutes=n),
            pool="a",
            industry=("saas", "retail")[n % 2],
            estimated_value=1000.0 + n,
        )
        for n in range(first, first + count)
    ]


def test_report_and_replay_read_back_what_was_produced(deployment_factory, tmp_path, monkeypatch, capsys) -> None:
    policy = tmp_path / "trial.yaml"
    policy.write_text(POLICY)
    dep = deployment_factory(extra={"LEADRELAY_POLICY_FILES": json.dumps([str(policy)])})
    dep.worker()
    # Positions fix the rotation order: reps published in the same instant join the pool log in an order
    # the roster topic's timestamps cannot tell (docs/evaluation.md, Replay).
    dep.send_roster(RepUpdated(rep_id=f"r{i}", pools=["a"], capacity=8, position=i, tier="mid") for i in range(3))
    dep.settle(2)
    send = lambda leads: asyncio.run(  # noqa: E731
        produce(
            dep.settings,
            dep.settings.topic_leads_new,
            ((x.lead_id.encode(), synthetic.wire(x)) for x in leads),
            rate=25,
        )
    )
    send(_leads(0, 30))  # 30 leads for 24 places: some are decided no_eligible_rep
    decisions = dep.decisions(at_least=30)
    assigned = [d for d in decisions if d.rep_id]
    assert len(assigned) == 24 and {d.variant for d in decisions} == {"A", "B"}
    rng = random.Random(3)
    deals = [
        DealClosed(lead_id=d.lead_id, outcome="won" if rng.random() < 0.4 else "lost", amount=100, closed_at=T0)
        for d in assigned[:16]
    ]
    dep.send_deals(deals)
    dep.settle(3)  # the deals free places before the next leads arrive
    boundary = datetime.now(UTC)
    send(_leads(30, 20))
    decisions = dep.decisions(at_least=50)
    dep.settle(2)
    for key, value in dep.env.items():
        monkeypatch.setenv(key, value)
    groups = _groups(dep.settings)

    assert main(["report", "--out", str(tmp_path / "report"), "--no-charts", "--period", "day"]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    t = report["totals"]
    assert t["leads"] == 50 and t["assigned"] == len([d for d in decisions if d.rep_id])
    assert (t["won"], t["lost"]) == (sum(d.outcome == "won" for d in deals), sum(d.outcome == "lost" for d in deals))
    assert sum(c["leads"] for c in report["by"]["variant"].values()) == 50
    assert report["experiments"]["ab"]["verdict"]["decision"] == "continue"  # a handful of leads per arm
    assert report["by"]["rep_tier"].keys() <= {"mid", "(unassigned)"}

    assert main(["replay", "--policy", str(policy), "--out", str(tmp_path / "replay"), "--no-charts"]) == 0
    replay = json.loads((tmp_path / "replay" / "replay.json").read_text())
    assert (replay["leads"], replay["compared"]) == (50, 50)
    assert replay["agreement"] == 1.0, replay["pools"]
    assert replay["conversion"]["n"] == len(deals)
    assert replay["conversion"]["diff"] == 0.0

    assert (
        main(["replay", "--policy", str(policy), "--since", boundary.isoformat(), "--out", str(tmp_path / "r2")]) == 0
    )
    assert json.loads((tmp_path / "r2" / "replay.json").read_text())["leads"] == 20
    assert (
        main(["replay", "--policy", str(policy), "--to-offset", "0", "--out", str(tmp_path / "r3"), "--no-charts"]) == 0
    )
    assert json.loads((tmp_path / "r3" / "replay.json").read_text())["leads"] == 0
    capsys.readouterr()
    assert _groups(dep.settings) == groups, "replay and report join no consumer group"
