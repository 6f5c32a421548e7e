"""A data directory belongs to one process: a second worker is refused before it touches the store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.runtime import worker
from streams.runtime.datadir import LOCK_FILE, DataDirInUse, DataDirLock
from streams.settings import Settings

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from streams.runtime.datadir import DataDirLock
    lock = DataDirLock.acquire(Path(sys.argv[1]))  # kept referenced: the lock lives with its file
    print("held", flush=True)
    time.sleep(120)
    """
)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding tmp_path/data, as a live worker would."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()
    proc.stdout.close()


def settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, create_topics=False, web_port=6099)


def test_a_second_worker_is_refused_and_leaves_the_live_store_alone(
    tmp_path: Path, holder: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    # The live worker's store, without a clean-stop mark (it is running): the crash rebuild would wipe it.
    store = data / "v1" / "tables" / "route-0.db"
    store.mkdir(parents=True)
    (store / "000001.log").write_bytes(b"live rows")

    def no_faust_worker(*args: object, **kwargs: object) -> None:
        raise AssertionError("the second worker got as far as starting Faust")

    monkeypatch.setattr(worker.faust, "Worker", no_faust_worker)
    with pytest.raises(DataDirInUse) as refused:
        worker.run(settings(data))
    assert f"pid {holder.pid}" in str(refused.value)
    assert str(data) in str(refused.value)
    assert (store / "000001.log").read_bytes() == b"live rows"


def test_the_lock_dies_with_its_process_even_on_kill_9(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    with pytest.raises(DataDirInUse):
        DataDirLock.acquire(tmp_path / "data")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    lock = DataDirLock.acquire(tmp_path / "data")  # no stale marker to clean up by hand
    assert (tmp_path / "data" / LOCK_FILE).read_text().strip() == str(os.getpid())
    lock.release()


def test_released_lock_can_be_taken_again_and_other_directories_are_independent(tmp_path: Path) -> None:
    first = DataDirLock.acquire(tmp_path / "a")
    other = DataDirLock.acquire(tmp_path / "b")
    first.release()
    again = DataDirLock.acquire(tmp_path / "a")
    again.release()
    other.release()
