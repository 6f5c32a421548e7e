"""The archive's database tests of tests/unit/test_archive_store.py, on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streams.archive.store import ArchiveStore
from tests.unit.test_archive_store import *  # noqa: F403 - the same tests, with the `store` below

pytestmark = pytest.mark.integration


@pytest.fixture
def store(postgres_url: str) -> Iterator[ArchiveStore]:  # type: ignore[no-redef]
    s = ArchiveStore(postgres_url)
    try:
        yield s
    finally:
        s.close()


def test_the_store_is_postgres(store: ArchiveStore) -> None:
    assert store.kind == "postgresql"
    cur = store.connect().cursor()
    cur.execute(
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'decisions' AND column_name = 'decided_at'"
    )
    assert cur.fetchone() == ("timestamp with time zone",)
