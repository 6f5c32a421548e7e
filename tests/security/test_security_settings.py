"""streams/kafka/security.py without a broker: what each protocol hands to Faust and aiokafka, and what is refused."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest

from streams.kafka.security import check, client_kwargs, faust_credentials, ssl_context
from streams.settings import Settings, SettingsError
from tests.security.certs import Certs, generate


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return generate(tmp_path_factory.mktemp("certs"))


def settings(**env: str) -> Settings:
    return Settings.from_env({f"LEADRELAY_{k.upper()}": v for k, v in env.items()})


def test_plaintext_uses_no_tls_and_no_credentials() -> None:
    s = settings()
    assert ssl_context(s) is None
    assert faust_credentials(s) is None
    assert client_kwargs(s) == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}


def test_ssl_verifies_the_broker_and_presents_the_client_certificate(certs: Certs) -> None:
    s = settings(
        security_protocol="SSL",
        ssl_cafile=str(certs.ca),
        ssl_certfile=str(certs.client_cert),
        ssl_keyfile=str(certs.client_key),
    )
    context = ssl_context(s)
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert any(
        c["subject"] == ((("organizationName", "leadrelay-test"),), (("commonName", "leadrelay-test-ca"),))
        for c in context.get_ca_certs()
    )
    creds = faust_credentials(s)
    assert isinstance(creds, faust.SSLCredentials) and creds.protocol.value == "SSL"
    kwargs = client_kwargs(s)
    assert kwargs["security_protocol"] == "SSL" and isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert "sasl_mechanism" not in kwargs


def test_sasl_ssl_gives_faust_an_ssl_context_so_it_is_not_plaintext(certs: Certs) -> None:
    s = settings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="alice",
        sasl_password="alice-secret",
        ssl_cafile=str(certs.ca),
    )
    creds = faust_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_SSL" and creds.mechanism.value == "SCRAM-SHA-512"
    assert creds.ssl_context is not None and creds.ssl_context.check_hostname
    assert "alice-secret" not in repr(creds) and "alice-secret" not in repr(s)
    kwargs = client_kwargs(s)
    assert kwargs["security_protocol"] == "SASL_SSL" and kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "alice" and kwargs["sasl_plain_password"] == "alice-secret"
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)


def test_sasl_plaintext_stays_without_tls() -> None:
    s = settings(security_protocol="SASL_PLAINTEXT", sasl_username="alice", sasl_password="pw")
    creds = faust_credentials(s)
    assert creds.protocol.value == "SASL_PLAINTEXT" and creds.ssl_context is None
    assert "ssl_context" not in client_kwargs(s)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ssl_cafile": "/etc/ca.pem"}, "does not use TLS"),
        (
            {"security_protocol": "SASL_PLAINTEXT", "sasl_username": "a", "sasl_password": "b", "ssl_cafile": "/x"},
            "TLS",
        ),
        ({"sasl_username": "alice", "sasl_password": "pw"}, "does not use SASL"),
        ({"security_protocol": "SSL", "sasl_password": "pw"}, "does not use SASL"),
        ({"security_protocol": "SASL_SSL", "sasl_username": "alice"}, "needs LEADRELAY_SASL_USERNAME"),
        ({"security_protocol": "SASL_SSL", "sasl_password": "pw"}, "needs LEADRELAY_SASL_USERNAME"),
        ({"security_protocol": "SSL", "ssl_certfile": "/c.pem"}, "needs both"),
        ({"security_protocol": "SSL", "ssl_keyfile": "/c.key"}, "needs both"),
    ],
)
def test_settings_the_protocol_would_ignore_are_refused(env: dict[str, str], message: str) -> None:
    s = settings(**env)
    with pytest.raises(SettingsError, match=message):
        check(s)
    with pytest.raises(SettingsError):
        client_kwargs(s)
    with pytest.raises(SettingsError):
        faust_credentials(s)


def test_unreadable_tls_files_are_settings_errors(certs: Certs, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="LEADRELAY_SSL_CAFILE"):
        ssl_context(settings(security_protocol="SSL", ssl_cafile=str(tmp_path / "missing.pem")))
    # a key that does not belong to the certificate
    mismatched = settings(
        security_protocol="SSL",
        ssl_cafile=str(certs.ca),
        ssl_certfile=str(certs.client_cert),
        ssl_keyfile=str(certs.rogue_client_key),
    )
    with pytest.raises(SettingsError, match="client certificate"):
        ssl_context(mismatched)
