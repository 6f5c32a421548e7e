"""A local table store is only kept when the last worker on it stopped cleanly (streams/worker.py)."""

from __future__ import annotations

from pathlib import Path

from streams.worker import CLEAN_STOP, mark_clean_stop, open_store


def store(tmp_path: Path) -> Path:
    tabledir = tmp_path / "v1" / "tables"
    (tabledir / "route-0.db").mkdir(parents=True)
    (tabledir / "route-0.db" / "000001.log").write_bytes(b"rows the changelog may not have")
    return tabledir


def test_a_store_left_by_a_crash_is_dropped(tmp_path: Path) -> None:
    tabledir = store(tmp_path)
    assert open_store(tabledir, rebuild_after_crash=True)
    assert not tabledir.exists(), "Faust creates it again and recovers every partition from its changelog"


def test_a_store_closed_cleanly_is_kept_and_counts_as_in_use_again(tmp_path: Path) -> None:
    tabledir = store(tmp_path)
    mark_clean_stop(tabledir)
    assert not open_store(tabledir, rebuild_after_crash=True)
    assert (tabledir / "route-0.db" / "000001.log").exists()
    assert not (tabledir / CLEAN_STOP).exists(), "a crash from here on must not find the old mark"
    assert open_store(tabledir, rebuild_after_crash=True)


def test_no_store_or_rebuild_switched_off(tmp_path: Path) -> None:
    assert not open_store(tmp_path / "missing", rebuild_after_crash=True)
    (tmp_path / "empty").mkdir()
    assert not open_store(tmp_path / "empty", rebuild_after_crash=True)
    tabledir = store(tmp_path)
    assert not open_store(tabledir, rebuild_after_crash=False)
    assert tabledir.exists()
    mark_clean_stop(tmp_path / "missing")  # nothing to mark
    assert not (tmp_path / "missing").exists()
