"""Kafka security from settings, for Faust and for plain aiokafka clients alike.

Four protocols (settings.security_protocol): PLAINTEXT, SSL (TLS; mutual TLS when ssl_certfile and
ssl_keyfile name a client certificate), SASL_PLAINTEXT and SASL_SSL (SASL PLAIN or SCRAM-SHA-256/512
over TLS). TLS always verifies the broker: its certificate must chain to ssl_cafile (or the system CAs)
and name the host in bootstrap_servers (check_hostname), with TLS 1.2 at least.

Settings that the chosen protocol would silently ignore are refused (SettingsError) instead: a CA or
client certificate with PLAINTEXT, or a SASL user without SASL, would otherwise run unencrypted or
unauthenticated while the operator believes otherwise. Likewise SASL without a user name and password.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust

from streams.settings import Settings, SettingsError

TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


def check(settings: Settings) -> None:
    """Refuse security settings that the protocol would ignore, or that cannot authenticate."""
    protocol = settings.security_protocol
    env = Settings.env_var
    if protocol not in TLS_PROTOCOLS:
        given = [name for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile") if getattr(settings, name)]
        if given:
            raise SettingsError(
                f"{', '.join(env(n) for n in given)} set but {env('security_protocol')}={protocol} does not use "
                "TLS: set it to SSL or SASL_SSL (or remove the TLS files)"
            )
    if (settings.ssl_certfile is None) != (settings.ssl_keyfile is None):
        raise SettingsError(f"mutual TLS needs both {env('ssl_certfile')} and {env('ssl_keyfile')}")
    if protocol in SASL_PROTOCOLS:
        if not settings.sasl_username or settings.sasl_password is None:
            raise SettingsError(
                f"{env('security_protocol')}={protocol} needs {env('sasl_username')} and {env('sasl_password')}"
            )
    elif settings.sasl_username or settings.sasl_password is not None:
        raise SettingsError(
            f"{env('sasl_username')}/{env('sasl_password')} set but {env('security_protocol')}={protocol} does not "
            "use SASL: set it to SASL_SSL (or remove the credentials)"
        )


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The client TLS context for SSL and SASL_SSL (None otherwise): verifies the broker's certificate
    and host name; presents the client certificate when one is configured (mutual TLS)."""
    check(settings)
    if settings.security_protocol not in TLS_PROTOCOLS:
        return None
    try:
        context = ssl.create_default_context(
            purpose=ssl.Purpose.SERVER_AUTH, cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"{Settings.env_var('ssl_cafile')}: cannot load CA bundle: {exc}") from None
    # Explicit, whatever the Python/OpenSSL defaults: verify the chain and the name, no TLS < 1.2.
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.ssl_certfile and settings.ssl_keyfile:
        try:
            context.load_cert_chain(str(settings.ssl_certfile), str(settings.ssl_keyfile))
        except (OSError, ssl.SSLError) as exc:
            files = f"{Settings.env_var('ssl_certfile')}/{Settings.env_var('ssl_keyfile')}"
            raise SettingsError(f"{files}: cannot load the client certificate and key: {exc}") from None
    return context


def _password(settings: Settings) -> str | None:
    return settings.sasl_password.get_secret_value() if settings.sasl_password else None


def faust_credentials(settings: Settings) -> Any:
    """Faust's SASLCredentials stays SASL_PLAINTEXT unless it is given an ssl_context."""
    context = ssl_context(settings)
    if settings.security_protocol in SASL_PROTOCOLS:
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=_password(settings),
            mechanism=settings.sasl_mechanism,
            ssl_context=context,  # None for SASL_PLAINTEXT, a context (hence SASL_SSL) for SASL_SSL
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer/Consumer/AdminClient."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if settings.security_protocol in SASL_PROTOCOLS:
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = _password(settings)
    return kwargs
