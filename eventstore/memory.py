"""The log in memory: the same record bytes as a file log, kept in a list.

Fast unit tests run on it, and a server started with ``storage "inmem"`` keeps its history
here. Records are kept as the record codec writes them, so they are sealed, chained and
checked exactly as on disk; only durability is missing (nothing survives the process).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

from eventstore.errors import MissingRecordError, ReadOnlyError, StoreError, StoreLockedError
from eventstore.interface import LogBase, TornTail
from eventstore.keyring import Keyring
from eventstore.record import (
    GENESIS_HASH,
    NO_HINT,
    Frame,
    Head,
    Record,
    check_link,
    parse,
    seal_batch,
)

SEGMENT = "memory"  # what error messages name as the place of a record


class MemoryStorage:
    """What several ``MemoryLog``s opened on one store share: the records and the writer
    lock. ``on_sync``, if set, runs at every sync (tests make it count or fail)."""

    def __init__(self) -> None:
        self.raws: list[bytes] = []  # durable records; raws[i] is record i + 1
        self.lock = threading.Lock()  # held by the one writer
        self.on_sync: Callable[[], None] | None = None


class MemoryLog(LogBase):
    """A log over a ``MemoryStorage``: a reader, or with ``open_writer`` its one writer."""

    def __init__(self, storage: MemoryStorage, keyring: Keyring) -> None:
        self.storage, self.keyring = storage, keyring
        self._writer = False
        self._cond = threading.Condition()
        self._pending: list[bytes] = []  # written, not yet synced: no reader sees them
        self._head = self._durable = Head(0, GENESIS_HASH)
        self._broken: str | None = None
        self.torn_tail: TornTail | None = None  # a memory log is never torn

    @classmethod
    def open_writer(
        cls, storage: MemoryStorage, keyring: Keyring, timeout: float = 0.0
    ) -> MemoryLog:
        if not storage.lock.acquire(timeout=timeout if timeout > 0 else -1, blocking=timeout > 0):
            raise StoreLockedError(
                f"the memory store is held by another writer; gave up after {timeout:g}s"
            )
        log = cls(storage, keyring)
        log._writer = True
        log._head = log._durable = log._last_head()
        return log

    def _last_head(self) -> Head:
        raws = self.storage.raws
        if not raws:
            return Head(0, GENESIS_HASH)
        frame = self._parse(len(raws))
        return Head(len(raws), frame.hash, frame.header.timestamp)

    @property
    def head(self) -> Head:
        return self._head if self._writer else self._last_head()

    def _parse(self, seq: int) -> Frame:
        raw = self.storage.raws[seq - 1]
        return parse(raw, segment=SEGMENT, offset=seq, hint=seq, seq=seq)

    # ---- reading -------------------------------------------------------------------------

    def frames(self, start: int = 1, hint: int = NO_HINT) -> Iterator[Frame]:
        start = max(start, 1)
        count = len(self.storage.raws)
        prev = GENESIS_HASH if start == 1 else None
        for seq in range(start, count + 1):
            frame = self._parse(seq)
            if prev is not None:
                check_link(frame, prev)
            prev = frame.hash
            yield frame

    def frame(self, seq: int, hint: int = NO_HINT) -> Frame:
        if not 1 <= seq <= len(self.storage.raws):
            raise MissingRecordError(f"the log holds no record {seq}")
        return self._parse(seq)

    # ---- writing -------------------------------------------------------------------------

    def write(self, bodies: Sequence[bytes]) -> list[Record]:
        if not self._writer:
            raise StoreError("the log was opened read-only")
        with self._cond:
            self._check_broken()
            if not bodies:
                return []
            raws, records, self._head = seal_batch(self.keyring, bodies, self._head, time.time_ns())
            self._pending += raws
            return records

    def sync(self, seq: int) -> None:
        with self._cond:
            if self._durable.seq >= seq:
                return
            self._check_broken()
            try:
                if self.storage.on_sync is not None:
                    self.storage.on_sync()
            except OSError as exc:
                self._broken = exc.strerror or str(exc)
                self._pending, self._head = [], self._durable
                raise ReadOnlyError(
                    f"could not write to the log ({self._broken}); nothing was recorded"
                ) from None
            self.storage.raws += self._pending
            self._pending, self._durable = [], self._head

    def _check_broken(self) -> None:
        if self._broken:
            raise ReadOnlyError(f"store is read-only after an earlier failure: {self._broken}")

    def close(self) -> None:
        if self._writer:
            self._writer = False
            self.storage.lock.release()
