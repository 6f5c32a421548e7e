"""`leadrelay export` and the archive_* settings, without a broker (the archive is a SQLite file)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from streams.archive.archiver import row_of
from streams.archive.store import ArchiveStore, redact
from streams.archive.tables import DECISIONS
from streams.settings import CONFIG_FILE_ENV, Settings, SettingsError
from streams.tools.cli import main
from tests.archive_support import consumed, make_decision


@pytest.fixture
def archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/archive.sqlite3"
    store = ArchiveStore(url)
    decisions = [make_decision(f"L{i}", minutes=10 * i, pool="dach" if i % 2 else "emea") for i in range(6)]
    store.upsert([row_of(DECISIONS, r) for r in consumed("leads.assignments", decisions)])
    store.close()
    monkeypatch.setenv("LEADRELAY_ARCHIVE_URL", url)
    return url


def test_export_csv_to_stdout_by_pool_and_time(archive: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", "--pool", "dach", "--since", "2026-11-02T09:10:00Z", "--until", "2026-11-02T09:50:00"])
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["lead_id"] for r in rows] == ["L1", "L3"]


def test_export_parquet_by_the_file_suffix(archive: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d.parquet"
    assert main(["export", "--out", str(out), "--rep", "anna"]) == 0
    assert pq.read_table(out).num_rows == 6
    assert "exported 6 decisions rows" in capsys.readouterr().err


def test_export_parquet_needs_a_file(archive: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--format", "parquet"]) == 2
    assert "--out" in capsys.readouterr().err


def test_export_refuses_a_bad_timestamp(archive: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["export", "--since", "last tuesday"])
    assert "ISO 8601" in capsys.readouterr().err


def test_export_names_an_unreachable_database_without_its_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LEADRELAY_ARCHIVE_URL", "postgresql://lr:hunter2@127.0.0.1:1/archive")
    assert main(["export"]) == 3
    err = capsys.readouterr().err
    assert "hunter2" not in err and "lr:***@127.0.0.1:1" in err


def test_redact_hides_only_the_password() -> None:
    assert redact("postgresql://u:p@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert redact("postgresql://u@db/x") == "postgresql://u@db/x"
    assert redact("sqlite:///rel/a.db") == "sqlite:///rel/a.db"


def test_archive_url_defaults_to_an_embedded_file_and_refuses_other_schemes() -> None:
    assert Settings.from_env({}).archive_url.startswith("sqlite:///")
    assert Settings.from_env({"LEADRELAY_ARCHIVE_URL": "postgres://db/x"}).archive_url == "postgres://db/x"
    with pytest.raises(SettingsError, match="LEADRELAY_ARCHIVE_URL"):
        Settings.from_env({"LEADRELAY_ARCHIVE_URL": "mysql://db/x"})


def test_a_relative_sqlite_file_in_a_config_file_is_relative_to_it(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "settings.yaml"
    config.parent.mkdir()
    config.write_text("archive_url: sqlite:///data/archive.sqlite3\n")
    settings = Settings.from_env({CONFIG_FILE_ENV: str(config)})
    assert settings.archive_url == f"sqlite:///{tmp_path}/conf/data/archive.sqlite3"
    config.write_text("archive_url: sqlite:////var/lib/a.sqlite3\n")
    assert Settings.from_env({CONFIG_FILE_ENV: str(config)}).archive_url == "sqlite:////var/lib/a.sqlite3"


def test_the_archive_password_is_secret() -> None:
    settings = Settings.from_env({"LEADRELAY_ARCHIVE_PASSWORD": "hunter2"})
    assert "hunter2" not in repr(settings)
    assert ArchiveStore.from_settings(settings).password == "hunter2"
