"""The edges on a real broker: HTTP ingress -> worker -> CRM sink, signatures, and a sink killed -9."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from routing.ids import decision_id
from schemas.events import AssignmentDecision, Explanation, RepUpdated
from streams.ingress.auth import signed_headers
from streams.kafka.admin import ensure_topics
from streams.kafka.clients import read_all
from streams.tools.supervise import WorkerProcess, free_port
from tests.fakecrm import Act, FakeCrm
from tests.integration.conftest import Deployment

pytestmark = pytest.mark.integration
SECRET = b"webform-secret-0123456789"
NOW = datetime.now(UTC)


def sources(tmp_path: Path) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(f"webform: {SECRET.decode()}\n")
    return path


def start(dep: Deployment, name: str, command: tuple[str, ...], **env: str) -> WorkerProcess:
    proc = WorkerProcess({**dep.env, "LEADRELAY_WEB_PORT": str(free_port()), **env}, dep.root / f"{name}.log")
    proc.command = command
    dep.workers.append(proc)  # stopped with the deployment
    proc.start().wait_ready(60)
    return proc


def ingress(dep: Deployment, tmp_path: Path) -> tuple[WorkerProcess, str]:
    port = free_port()
    proc = start(
        dep,
        "ingress",
        ("ingress",),
        LEADRELAY_INGRESS_PORT=str(port),
        LEADRELAY_INGRESS_SOURCES_FILE=str(sources(tmp_path)),
    )
    return proc, f"http://127.0.0.1:{port}"


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def lead(lead_id: str) -> bytes:
    contact = {"email": "jane.roe@example.com"}
    return orjson.dumps({"lead_id": lead_id, "created_at": NOW.isoformat(), "pool": "dach", "contact": contact})


def test_a_posted_lead_is_decided_and_delivered_to_the_crm_exactly_once(deployment: Deployment, tmp_path: Path) -> None:
    crm = FakeCrm().start()
    try:
        asyncio.run(ensure_topics(deployment.settings))
        deployment.send_roster(RepUpdated(rep_id=r, pools=["dach"]) for r in ("anna", "bernd"))
        deployment.worker()
        _, api = ingress(deployment, tmp_path)
        start(
            deployment,
            "sink",
            ("sink", "webhook"),
            LEADRELAY_SINK_URL=f"{crm.url}/hook",
            LEADRELAY_SINK_GROUP_ID=f"{deployment.ns}-sink",
        )
        body = lead("web-42")
        status, answer = post(f"{api}/v1/leads", body, signed_headers("webform", SECRET, body))
        assert status == 202 and answer["lead_id"] == "web-42" and answer["offset"] >= 0
        crm.wait_applied(1, timeout=40)
        time.sleep(2)  # room for a duplicate to show up
        [applied] = crm.applied.values()
        assert applied.key == decision_id("web-42", 1) and crm.duplicates == 0
        assert applied.body["lead_id"] == "web-42" and applied.body["rep_id"] in {"anna", "bernd"}
        assert "jane" not in orjson.dumps(crm.requests[0]["json"]).decode(), "no contact data leaves"
    finally:
        crm.stop()


def test_forged_old_and_replayed_requests_are_refused_and_nothing_reaches_kafka(
    deployment: Deployment, tmp_path: Path
) -> None:
    asyncio.run(ensure_topics(deployment.settings))
    _, api = ingress(deployment, tmp_path)
    url = f"{api}/v1/leads"
    forged = lead("forged-1")
    assert (
        post(url, forged, signed_headers("webform", b"guessed-secret-0000000", forged))[1]["reason"] == "bad_signature"
    )
    old = lead("old-1")
    assert post(url, old, signed_headers("webform", SECRET, old, now=time.time() - 301))[1]["reason"] == (
        "stale_timestamp"
    )
    good = lead("good-1")
    headers = signed_headers("webform", SECRET, good)
    assert post(url, good, headers)[0] == 202
    status, answer = post(url, good, headers)
    assert (status, answer["reason"]) == (401, "replayed")
    records = asyncio.run(read_all(deployment.settings, deployment.settings.topic_leads_new))
    assert [(r.key, r.value) for r in records] == [(b"good-1", good)], "only the authentic request was published"


def decisions(leads: int, attempts: int) -> list[AssignmentDecision]:
    out = []
    for attempt in range(1, attempts + 1):
        for i in range(leads):
            lead_id = f"refuse-{i}" if i < 2 else f"lead-{i}"
            out.append(
                AssignmentDecision(
                    decision_id=decision_id(lead_id, attempt),
                    lead_id=lead_id,
                    pool="dach",
                    rep_id=f"rep-{(i + attempt) % 3}",
                    reason="assigned",
                    attempt=attempt,
                    policy_id="p",
                    policy_version=1,
                    explanation=Explanation(strategy="s", summary="x"),
                    lead_created_at=NOW,
                    decided_at=NOW,
                )
            )
    return out


def test_a_sink_killed_mid_delivery_loses_and_duplicates_nothing_at_the_crm(
    deployment: Deployment, tmp_path: Path
) -> None:
    sent = decisions(leads=12, attempts=3)
    kill_at = 15  # the 15th request: applied on arrival, answered only after the sink is dead
    counter = {"n": 0}

    def script(key: str, n: int, request: dict[str, Any]) -> Act:
        counter["n"] += 1
        if request["json"]["lead_id"].startswith("refuse-"):
            return Act(422, body=b'{"message": "FIELD_INTEGRITY_EXCEPTION"}')
        if counter["n"] == kill_at:
            return Act(204, delay=30, apply_first=True)
        bucket = int(key[:2], 16) % 5
        if n == 1 and bucket == 0:
            return Act(429, retry_after="1")
        if n == 1 and bucket == 1:
            return Act(503)
        if n == 1 and bucket == 2:
            return Act(204, delay=2.0)  # the sink times out first (0.5 s) and tries again
        return Act(204, delay=0.05)

    crm = FakeCrm(script=script).start()
    try:
        asyncio.run(ensure_topics(deployment.settings))
        deployment.send(
            deployment.settings.topic_assignments, ((d.lead_id.encode(), d.model_dump_json().encode()) for d in sent)
        )
        env = {
            "LEADRELAY_SINK_URL": f"{crm.url}/hook",
            "LEADRELAY_SINK_GROUP_ID": f"{deployment.ns}-sink",
            "LEADRELAY_SINK_TIMEOUT_SECONDS": "0.5",
            "LEADRELAY_SINK_BACKOFF_INITIAL_SECONDS": "0.1",
            "LEADRELAY_SINK_BACKOFF_MAX_SECONDS": "0.5",
            "LEADRELAY_SESSION_TIMEOUT_SECONDS": "6",
            "LEADRELAY_MAX_POLL_INTERVAL_SECONDS": "20",
        }
        first = start(deployment, "sink1", ("sink", "webhook"), **env)
        deadline = time.monotonic() + 30
        while counter["n"] < kill_at and time.monotonic() < deadline:
            time.sleep(0.02)
        assert counter["n"] >= kill_at, "the sink never got that far"
        first.kill()  # kill -9 while the CRM holds an applied, unanswered request
        applied_at_kill = len(crm.applied)
        start(deployment, "sink2", ("sink", "webhook"), **env)

        deliverable = [d for d in sent if not d.lead_id.startswith("refuse-")]
        crm.wait_applied(len(deliverable), timeout=45)
        time.sleep(1)
        assert set(crm.applied) == {d.decision_id for d in deliverable}, "every decision applied, nothing else"
        assert crm.duplicates >= 1, "the decision in flight at the kill was delivered again (and deduped)"
        assert 0 < applied_at_kill < len(deliverable)
        order: dict[str, list[int]] = defaultdict(list)
        for a in sorted(crm.applied.values(), key=lambda a: a.seq):
            order[a.body["lead_id"]].append(a.body["attempt"])
        assert all(attempts == sorted(attempts) for attempts in order.values()), f"reordered: {dict(order)}"

        refused = [d for d in sent if d.lead_id.startswith("refuse-")]
        dlq = deployment.records(deployment.settings.topic_sink_dlq, at_least=len(refused), timeout=20)
        by_id = {dict(r.headers)["x-leadrelay-decision-id"].decode(): dict(r.headers) for r in dlq}
        assert set(by_id) == {d.decision_id for d in refused}
        for headers in by_id.values():
            assert headers["x-leadrelay-reason"] == b"crm_refused" and headers["x-leadrelay-http-status"] == b"422"
            assert b"FIELD_INTEGRITY_EXCEPTION" in headers["x-leadrelay-http-body"]
    finally:
        crm.stop()
