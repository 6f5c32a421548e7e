"""The ingress over HTTPS: a certificate and key from settings, verified by a client that trusts the CA."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from streams.ingress.app import api_app, build, server_ssl_context
from streams.ingress.auth import signed_headers
from streams.settings import Settings, SettingsError
from streams.tools.supervise import free_port
from tests.security import certs
from tests.unit.test_ingress_app import SECRET, FakePublisher, lead, settings


def test_https_with_the_configured_certificate(tmp_path: Path) -> None:
    tls = certs.generate(tmp_path / "certs")
    s = settings(tmp_path, ingress_tls_certfile=tls.broker_keystore, ingress_tls_keyfile=tls.broker_keystore)
    context = server_ssl_context(s)
    assert context is not None and context.minimum_version == ssl.TLSVersion.TLSv1_2
    publisher = FakePublisher()
    ingress = build(s, publisher, CollectorRegistry())
    port = free_port()

    async def main() -> None:
        runner = web.AppRunner(api_app(ingress))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
        try:
            client_tls = ssl.create_default_context(cafile=str(tls.ca))
            body = orjson.dumps(lead("tls-1"))
            headers = {"Content-Type": "application/json", **signed_headers("webform", SECRET, body)}
            async with aiohttp.ClientSession() as session:
                async with session.post(
                    f"https://127.0.0.1:{port}/v1/leads", data=body, headers=headers, ssl=client_tls
                ) as r:
                    assert r.status == 202
                with pytest.raises(aiohttp.ClientError):  # plain HTTP is not served on the TLS port
                    async with session.post(f"http://127.0.0.1:{port}/v1/leads", data=body, headers=headers) as r:
                        await r.read()
                        assert r.status != 202
                untrusting = ssl.create_default_context(cafile=str(tls.rogue_ca))
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    await session.post(f"https://127.0.0.1:{port}/v1/leads", data=body, headers=headers, ssl=untrusting)
        finally:
            await runner.cleanup()

    asyncio.run(main())
    assert [k for _, k, _, _ in publisher.sent] == [b"tls-1"]


def test_tls_needs_both_files_and_loadable_ones(tmp_path: Path) -> None:
    tls = certs.generate(tmp_path / "certs")
    with pytest.raises(SettingsError, match="both"):
        server_ssl_context(Settings(ingress_tls_certfile=tls.broker_keystore))
    with pytest.raises(SettingsError, match="cannot load"):
        server_ssl_context(Settings(ingress_tls_certfile=tls.ca, ingress_tls_keyfile=tls.ca))
    assert server_ssl_context(Settings()) is None
