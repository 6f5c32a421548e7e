"""Shared fixtures: the factories of tests/factories.py, as fixtures."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from streams.tools import localkafka
from tests import factories
from tests.postgres import PG_GLOB, PostgresServer, find_binaries


@pytest.fixture
def make_lead() -> Callable[..., Any]:
    return factories.make_lead


@pytest.fixture
def make_rep() -> Callable[..., Any]:
    return factories.make_rep


@pytest.fixture
def make_deal() -> Callable[..., Any]:
    return factories.make_deal


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real broker for the whole session (integration and chaos tests share it; tests that restart a
    broker start their own). LEADRELAY_TEST_BOOTSTRAP reuses a running one; otherwise a failure to start
    is an error, never a skip. Skip broker tests locally with -m 'not integration'."""
    existing = os.environ.get("LEADRELAY_TEST_BOOTSTRAP")
    if existing:
        yield existing
        return
    state = tmp_path_factory.mktemp("kafka")
    handle = localkafka.start(state)
    try:
        yield handle.bootstrap
    finally:
        localkafka.stop(state)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server (Debian's package) for the session, stopped at its end. Missing binaries
    are an error, never a skip, like a broker that cannot start (`make test` installs them first); skip
    server tests locally with -m 'not integration'."""
    binaries = find_binaries()
    if binaries is None:
        pytest.fail(f"no PostgreSQL server under {PG_GLOB}: run scripts/system-deps.sh (apt-get install postgresql)")
    server = PostgresServer.start(binaries)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh database on the session's server."""
    return postgres_server.new_database()
