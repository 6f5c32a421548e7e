"""The ACLs of docs/security.md, applied verbatim to a broker that enforces them.

A broker with StandardAuthorizer (deny unless allowed) and one SCRAM user per documented principal gets
exactly the `kafka-acls.sh` commands of the doc (run with Kafka's own AclCommand from the broker's jars).
Then, each principal over SASL_SSL: `leadrelay topics` provisions as leadrelay-admin, a worker runs as
leadrelay with create_topics off, upstream principals produce, the CRM principal reads the decisions;
and nobody but the operators reads the DLQ, the inputs or the tables. Errors, never skips, when the
broker or the JVM is missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import TopicAuthorizationFailedError

from schemas.events import AssignmentDecision, LeadCreated, RepUpdated
from streams.kafka.clients import produce
from streams.kafka.security import client_kwargs
from streams.settings import Settings
from streams.tools import localkafka, synthetic
from streams.tools.supervise import WorkerProcess, free_port
from tests.security.certs import Certs, generate
from tests.security.support import run_refusable

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
PRINCIPALS = ("leadrelay", "leadrelay-admin", "crm-sync", "lead-intake", "crm-outcomes", "hr-sync", "leadrelay-ops")
PARTITIONS = 2
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def documented_acl_commands() -> list[list[str]]:
    """The argument lists of every `kafka-acls.sh $B --add ...` line in the doc's ACL block."""
    text = DOC.read_text()
    block = text.split("## ACLs", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = block.replace("\\\n", " ").splitlines()
    commands = [line.split()[2:] for line in lines if line.startswith("kafka-acls.sh $B --add")]
    assert len(commands) >= 10, "the ACL block of docs/security.md was not found"
    return commands


@dataclass(frozen=True)
class AclKafka:
    handle: localkafka.KafkaHandle
    certs: Certs

    def env(self, principal: str) -> dict[str, str]:
        assert self.handle.sasl_ssl_bootstrap
        return {
            "LEADRELAY_BOOTSTRAP_SERVERS": self.handle.sasl_ssl_bootstrap,
            "LEADRELAY_SECURITY_PROTOCOL": "SASL_SSL",
            "LEADRELAY_SASL_USERNAME": principal,
            "LEADRELAY_SASL_PASSWORD": f"{principal}-pw",
            "LEADRELAY_SSL_CAFILE": str(self.certs.ca),
            "LEADRELAY_PARTITIONS": str(PARTITIONS),
        }

    def settings(self, principal: str) -> Settings:
        return Settings.from_env(self.env(principal))


@pytest.fixture(scope="module")
def acl_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclKafka]:
    root = tmp_path_factory.mktemp("acl-kafka")
    certs = generate(root / "certs")
    setup = localkafka.SecuritySetup(
        keystore=certs.broker_keystore,
        truststore=certs.ca,
        mtls=False,
        scram_users={p: f"{p}-pw" for p in PRINCIPALS},
        acls=True,
    )
    state = root / "kafka"
    handle = localkafka.start(state, security=setup)
    try:
        libs = localkafka.ensure_jars()
        java = [*localkafka._java(libs, "128m"), "-XX:TieredStopAtLevel=1", "kafka.admin.AclCommand"]
        for args in documented_acl_commands():
            # $B: the PLAINTEXT listener, whose User:ANONYMOUS is this test broker's super user
            proc = subprocess.run(
                [*java, "--bootstrap-server", handle.bootstrap, *args], capture_output=True, text=True, check=False
            )
            assert proc.returncode == 0, f"kafka-acls {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
        yield AclKafka(handle, certs)
    finally:
        localkafka.stop(state)


async def _read(settings: Settings, topic: str) -> int:
    """Records of the topic this principal can read; 0 when it may not even Describe it."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described["error_code"] == TopicAuthorizationFailedError.errno:
        return 0  # (a consumer would wait for metadata it never gets)
    assert described["error_code"] == 0, described
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        count = 0
        for _ in range(3):
            batch = await consumer.getmany(timeout_ms=700)
            count += sum(len(records) for records in batch.values())
        return count
    finally:
        await consumer.stop()


def readable(kafka: AclKafka, principal: str, topic: str) -> int:
    """Records the principal can read from the topic; 0 when refused (no Describe, or Describe without
    Read: the fetch fails with TopicAuthorizationFailed)."""
    count, error = run_refusable(_read(kafka.settings(principal), topic))
    if error is not None:
        assert isinstance(error, TopicAuthorizationFailedError), repr(error)
        return 0
    return int(count)


def test_documented_acls_run_the_worker_and_keep_the_dlq_to_operators(acl_kafka: AclKafka, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "streams.tools.cli"]
    topics = subprocess.run(
        [*cli, "topics"],
        check=False,
        env={**os.environ, **acl_kafka.env("leadrelay-admin")},
        capture_output=True,
        text=True,
    )
    assert topics.returncode == 0, topics.stderr[-3000:]

    worker_env = {
        **acl_kafka.env("leadrelay"),
        "LEADRELAY_CREATE_TOPICS": "false",
        "LEADRELAY_DATA_DIR": str(tmp_path / "tables"),
        "LEADRELAY_WEB_PORT": str(free_port()),
    }
    worker = WorkerProcess(worker_env, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        reps = [RepUpdated(rep_id=f"r{i}", pools=["default"], capacity=10) for i in range(2)]
        roster = [(r.rep_id.encode(), r.model_dump_json().encode()) for r in reps]
        _, error = run_refusable(produce(acl_kafka.settings("hr-sync"), "reps.roster", roster))
        assert error is None, error
        time.sleep(2)
        leads = [LeadCreated(lead_id=f"A{i}", created_at=T0 + timedelta(seconds=i)) for i in range(3)]
        records = [(lead.lead_id.encode(), synthetic.wire(lead)) for lead in leads] + [(b"bad", b"not json")]
        _, error = run_refusable(produce(acl_kafka.settings("lead-intake"), "leads.new", records))
        assert error is None, error

        deadline = time.monotonic() + 60
        while (decided := readable(acl_kafka, "crm-sync", "leads.assignments")) < 3 and time.monotonic() < deadline:
            time.sleep(1)
        assert decided == 3, f"the CRM read {decided} decisions:\n{worker.tail()}"
        while readable(acl_kafka, "leadrelay-ops", "leads.dlq") < 1 and time.monotonic() < deadline:
            time.sleep(1)
        assert readable(acl_kafka, "leadrelay-ops", "leads.dlq") == 1, "operators read the DLQ"
        assert worker.alive(), worker.tail()
    finally:
        worker.stop()

    # the data is there (the worker and the operators read it), and nobody else may read it
    assert readable(acl_kafka, "leadrelay", "leadrelay-route-changelog") > 0
    assert readable(acl_kafka, "leadrelay", "leads.new") == 4
    for principal in ("leadrelay", "crm-sync", "lead-intake", "leadrelay-admin", "hr-sync"):
        assert readable(acl_kafka, principal, "leads.dlq") == 0, f"{principal} read the DLQ"
    for topic in ("leads.new", "leadrelay-route-changelog", "leadrelay-pool-events"):
        assert readable(acl_kafka, "crm-sync", topic) == 0, f"the CRM read {topic}"
    assert readable(acl_kafka, "lead-intake", "leads.assignments") == 0
    # and write only where documented: the CRM cannot inject leads
    _, error = run_refusable(produce(acl_kafka.settings("crm-sync"), "leads.new", [(b"x", b"{}")]))
    assert error is not None and "Authorization" in type(error).__name__, repr(error)
    decisions = run_refusable(_decisions(acl_kafka.settings("crm-sync")))[0]
    assert sorted(d.lead_id for d in decisions) == ["A0", "A1", "A2"]


async def _decisions(settings: Settings) -> list[AssignmentDecision]:
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition("leads.assignments", p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        batch = await consumer.getmany(timeout_ms=2000)
        return [AssignmentDecision.model_validate_json(r.value) for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()
