"""SASL_SSL (SCRAM-SHA-512) and mutual TLS against a real broker secured that way.

One broker for the module, started here (not the session's PLAINTEXT one) with certificates generated
by tests/security/certs.py: a mutual-TLS listener (client certificate required) and a SASL_SSL listener
with a SCRAM user. A real `leadrelay worker` assigns leads end to end over each, configured only through
LEADRELAY_* settings; the negative checks show the broker really enforces each control (a wrong password,
a missing or untrusted client certificate, an untrusted broker, plaintext on a TLS port all fail).
Any failure to start the broker or generate certificates is an error, never a skip.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from schemas.events import Contact, LeadCreated, RepUpdated
from streams.kafka.security import client_kwargs, ssl_context
from streams.settings import Settings
from streams.tools import localkafka
from streams.tools.supervise import WorkerProcess, free_port
from tests.integration.conftest import Deployment
from tests.security.certs import Certs, generate
from tests.security.support import run_refusable

pytestmark = pytest.mark.integration

USER, PASSWORD = "leadrelay-worker", "s3cret-Scram-pw"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class SecureKafka:
    handle: localkafka.KafkaHandle
    certs: Certs

    @property
    def sasl_bootstrap(self) -> str:
        assert self.handle.sasl_ssl_bootstrap
        return self.handle.sasl_ssl_bootstrap

    @property
    def mtls_bootstrap(self) -> str:
        assert self.handle.ssl_bootstrap
        return self.handle.ssl_bootstrap

    def sasl_env(self, *, password: str = PASSWORD) -> dict[str, str]:
        return {
            "LEADRELAY_SECURITY_PROTOCOL": "SASL_SSL",
            "LEADRELAY_SASL_MECHANISM": "SCRAM-SHA-512",
            "LEADRELAY_SASL_USERNAME": USER,
            "LEADRELAY_SASL_PASSWORD": password,
            "LEADRELAY_SSL_CAFILE": str(self.certs.ca),
        }

    def mtls_env(self, *, client_cert: bool = True) -> dict[str, str]:
        env = {"LEADRELAY_SECURITY_PROTOCOL": "SSL", "LEADRELAY_SSL_CAFILE": str(self.certs.ca)}
        if client_cert:
            env["LEADRELAY_SSL_CERTFILE"] = str(self.certs.client_cert)
            env["LEADRELAY_SSL_KEYFILE"] = str(self.certs.client_key)
        return env


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    root = tmp_path_factory.mktemp("secure-kafka")
    certs = generate(root / "certs")
    setup = localkafka.SecuritySetup(
        keystore=certs.broker_keystore, truststore=certs.ca, mtls=True, scram_users={USER: PASSWORD}
    )
    state = root / "kafka"
    handle = localkafka.start(state, security=setup)
    try:
        yield SecureKafka(handle, certs)
    finally:
        localkafka.stop(state)


def roster() -> list[RepUpdated]:
    return [RepUpdated(rep_id=f"r{i}", pools=["default"], capacity=10) for i in range(3)]


def leads(prefix: str, n: int) -> list[LeadCreated]:
    return [
        LeadCreated(
            lead_id=f"{prefix}{i:03d}",
            created_at=T0 + timedelta(seconds=i),
            estimated_value=1000.0 + i,
            contact=Contact(name="Jane Roe", email=f"jane{i}@example.com"),
        )
        for i in range(n)
    ]


def assign_end_to_end(dep: Deployment, prefix: str, n: int = 6) -> None:
    """A worker on the secured listener assigns every lead; its log never shows the SASL password."""
    worker = dep.worker()
    dep.send_roster(roster())
    dep.settle(2)
    dep.send_leads(leads(prefix, n))
    decisions = dep.decisions(at_least=n)
    assert sorted(d.lead_id for d in decisions) == [f"{prefix}{i:03d}" for i in range(n)]
    assert all(d.reason == "assigned" and d.rep_id for d in decisions), [d.reason for d in decisions]
    assert worker.alive()
    assert PASSWORD not in worker.log_path.read_text(errors="replace")


async def _try_connect(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=10_000)
    try:
        await asyncio.wait_for(admin.start(), 30)
        await asyncio.wait_for(admin.list_topics(), 30)
    finally:
        await admin.close()


def connect_error(settings: Settings) -> BaseException | None:
    """None when an admin client can bootstrap and list topics with these settings, else the error."""
    return run_refusable(_try_connect(settings))[1]


def settings_for(bootstrap: str, env: dict[str, str]) -> Settings:
    return Settings.from_env({"LEADRELAY_BOOTSTRAP_SERVERS": bootstrap, **env})


def refused_worker(bootstrap: str, env: dict[str, str], root: Path, timeout: float = 60.0) -> WorkerProcess:
    """A worker with bad credentials: it must exit with an error, never become ready."""
    worker_env = {
        "LEADRELAY_BOOTSTRAP_SERVERS": bootstrap,
        "LEADRELAY_APP_ID": f"refused-{root.name}",
        "LEADRELAY_DATA_DIR": str(root / "tables"),
        "LEADRELAY_WEB_PORT": str(free_port()),
        **env,
    }
    worker = WorkerProcess(worker_env, root / "worker.log").start()
    deadline = time.monotonic() + timeout
    try:
        while worker.alive() and time.monotonic() < deadline:
            time.sleep(0.3)
        assert not worker.alive(), f"worker still running after {timeout}s:\n{worker.tail()}"
        assert worker.stop() not in (0, None), worker.tail()
    finally:
        worker.kill()
    return worker


def test_worker_assigns_leads_over_sasl_ssl_scram(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    dep = Deployment(secure_kafka.sasl_bootstrap, tmp_path, partitions=2, extra=secure_kafka.sasl_env())
    try:
        assert dep.settings.security_protocol == "SASL_SSL"
        assign_end_to_end(dep, "S")
    finally:
        dep.stop()


def test_worker_assigns_leads_over_mutual_tls(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    dep = Deployment(secure_kafka.mtls_bootstrap, tmp_path, partitions=2, extra=secure_kafka.mtls_env())
    try:
        assert dep.settings.security_protocol == "SSL"
        assign_end_to_end(dep, "M")
    finally:
        dep.stop()


def test_sasl_listener_refuses_a_wrong_password(
    secure_kafka: SecureKafka, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bootstrap = secure_kafka.sasl_bootstrap
    assert connect_error(settings_for(bootstrap, secure_kafka.sasl_env())) is None  # control: same path works
    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        assert connect_error(settings_for(bootstrap, secure_kafka.sasl_env(password="wrong-password"))) is not None
    assert "SaslAuthenticationFailed" in caplog.text, caplog.text
    # the worker itself: exits with an error instead of running unauthenticated
    worker = refused_worker(bootstrap, secure_kafka.sasl_env(password="wrong-password"), tmp_path / "w")
    log = worker.log_path.read_text(errors="replace")
    assert "SaslAuthenticationFailed" in log, worker.tail()
    assert "wrong-password" not in log


def test_sasl_listener_refuses_plaintext_and_an_untrusted_broker_is_refused(secure_kafka: SecureKafka) -> None:
    bootstrap = secure_kafka.sasl_bootstrap
    env = secure_kafka.sasl_env()
    # SASL without TLS on the SASL_SSL port: the broker expects a TLS handshake
    plain = {
        **{k: v for k, v in env.items() if k != "LEADRELAY_SSL_CAFILE"},
        "LEADRELAY_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    }
    assert connect_error(settings_for(bootstrap, plain)) is not None
    # the client verifies the broker: a CA that did not sign the broker's certificate fails the handshake
    assert connect_error(settings_for(bootstrap, {**env, "LEADRELAY_SSL_CAFILE": str(secure_kafka.certs.rogue_ca)}))
    # and its name: the certificate names 127.0.0.1 and localhost; a context from the same settings
    # refuses it for another name (what a client would see behind a wrong DNS entry)
    context = ssl_context(settings_for(bootstrap, env))
    assert context is not None and context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    host, _, port = bootstrap.rpartition(":")
    for name, ok in (("localhost", True), (host, True), ("kafka.example.invalid", False)):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            try:
                context.wrap_socket(sock, server_hostname=name).close()
                verified = True
            except ssl.SSLCertVerificationError as exc:
                assert "mismatch" in str(exc).lower(), exc
                verified = False
        assert verified is ok, name


def test_mtls_listener_refuses_clients_without_a_trusted_certificate(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    bootstrap = secure_kafka.mtls_bootstrap
    assert connect_error(settings_for(bootstrap, secure_kafka.mtls_env())) is None  # control: with the cert
    assert connect_error(settings_for(bootstrap, secure_kafka.mtls_env(client_cert=False))) is not None
    rogue: dict[str, Any] = {
        **secure_kafka.mtls_env(),
        "LEADRELAY_SSL_CERTFILE": str(secure_kafka.certs.rogue_client_cert),
        "LEADRELAY_SSL_KEYFILE": str(secure_kafka.certs.rogue_client_key),
    }
    assert connect_error(settings_for(bootstrap, rogue)) is not None  # same CN, signed by an untrusted CA
    assert connect_error(settings_for(bootstrap, {})) is not None  # PLAINTEXT on the TLS port
    worker = refused_worker(bootstrap, secure_kafka.mtls_env(client_cert=False), tmp_path / "w")
    assert "Unable to bootstrap" in worker.log_path.read_text(errors="replace"), worker.tail()
