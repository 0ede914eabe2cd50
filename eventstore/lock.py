"""The single-writer lock: an advisory ``flock`` on a file in the data directory.

The kernel drops a ``flock`` when its holder dies, so a process killed with SIGKILL never
leaves a stale lock behind; the pid written into the file only names the holder in errors.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from eventstore.errors import StoreLockedError

LOCK_FILE = "lock"


class WriterLock:
    """Held by the one process allowed to append; readers never take it."""

    def __init__(self, directory: Path, name: str = LOCK_FILE) -> None:
        self.path = directory / name
        self._fd: int | None = None

    def acquire(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the lock, then give up with a clear error."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
                    os.close(fd)
                    raise StoreLockedError(
                        f"store {self.path.parent} is locked by another process (pid {holder})"
                        f"; gave up after {timeout:g}s"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None
