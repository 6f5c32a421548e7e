"""One process per data directory: an OS-level exclusive lock, taken before anything touches the store.

The lock is `flock(2)` on `<data_dir>/leadrelay.lock`, not a marker file: the kernel drops it when the
process exits in any way (kill -9 and OOM included), so a crashed worker never leaves a stale lock
behind, and a second worker pointed at a live worker's directory is refused before it can wipe or
open the store the first one is using. The file also holds the holder's pid, for the refusal message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from streams.settings import SettingsError

LOCK_FILE = "leadrelay.lock"


class DataDirInUse(SettingsError):
    """Another live process holds the data directory's lock."""


class DataDirLock:
    """Held for the life of the process (or until release()); one per data directory."""

    def __init__(self, data_dir: Path, handle: IO[str]) -> None:
        self.data_dir = data_dir
        self._handle = handle

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / LOCK_FILE
        handle = path.open("a+")  # never truncate before holding the lock: the holder's pid is in it
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise DataDirInUse(
                f"data directory {data_dir} is in use by another leadrelay process (pid {holder}); "
                "give each worker its own LEADRELAY_DATA_DIR"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return cls(data_dir, handle)

    def release(self) -> None:
        if not self._handle.closed:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
