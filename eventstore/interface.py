"""The log as callers see it, addressed by seq: what every storage implements.

A storage keeps the record codec's bytes (``eventstore.record``) in seq order and hands
back frames (header checked, body still sealed) and records (opened). Where a storage
keeps a record is its own business: a ``hint`` it hands out with a record may be given
back to find that record faster, and means nothing to anyone else.

Implementations: ``FileLog`` (segment files), ``MemoryLog``; their shared contract is
``eventstore.testing.LogContract``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import NamedTuple, Protocol

from eventstore.keyring import Keyring
from eventstore.record import NO_HINT, Frame, Head, Record, open_frame


class TornTail(NamedTuple):
    """An incomplete record at the very end of a log: a write that never finished."""

    seq: int
    where: str


class LogReader(Protocol):
    """Reading a log. Readers never block each other, nor a writer."""

    @property
    def head(self) -> Head:
        """The last record read or written by this log; ``Head(0, GENESIS_HASH)`` if none."""
        ...

    @property
    def torn_tail(self) -> TornTail | None:
        """Set by the last full scan that stopped at an incomplete final record."""
        ...

    def frames(self, start: int = 1, hint: int = 0) -> Iterator[Frame]:
        """Frames from seq ``start`` on, headers checked and the hash chain followed,
        bodies not decrypted: time lookups and verify read these. ``hint``: one a record
        ``start`` came with. A damaged record raises ``CorruptionError``."""
        ...

    def frame(self, seq: int, hint: int = 0) -> Frame:
        """Record ``seq`` on its own (its link to the record before is not checked);
        ``MissingRecordError`` if the log does not hold it."""
        ...

    def open_frame(self, frame: Frame) -> Record:
        """Decrypt a frame; ``CorruptionError`` if it fails authentication."""
        ...

    def records(self, start: int = 1, hint: int = 0) -> Iterator[Record]:
        """Decrypted records from seq ``start`` on."""
        ...

    def record(self, seq: int, hint: int = 0) -> Record:
        """Record ``seq``, decrypted."""
        ...

    def close(self) -> None: ...


class LogWriter(LogReader, Protocol):
    """The one writer of a log: appends after the head, durably.

    ``write`` puts records after the head without waiting for the storage to make them
    durable; ``sync`` waits until they are, and one sync serves every thread waiting
    (group commit). A failed sync makes the log read-only for good (``ReadOnlyError``).
    """

    def write(self, bodies: Sequence[bytes]) -> list[Record]: ...

    def sync(self, seq: int) -> None: ...

    def append(self, bodies: Sequence[bytes]) -> list[Record]:
        """``write`` then ``sync``: returned only once durable."""
        ...


class LogBase(ABC):
    """What every storage shares above its own frames: opening them with the record
    codec, and ``append`` as ``write`` then ``sync``. A storage provides the rest."""

    keyring: Keyring

    @abstractmethod
    def frames(self, start: int = 1, hint: int = NO_HINT) -> Iterator[Frame]: ...

    @abstractmethod
    def frame(self, seq: int, hint: int = NO_HINT) -> Frame: ...

    @abstractmethod
    def write(self, bodies: Sequence[bytes]) -> list[Record]: ...

    @abstractmethod
    def sync(self, seq: int) -> None: ...

    def open_frame(self, frame: Frame) -> Record:
        """Decrypt one frame under its key term."""
        return open_frame(self.keyring, frame)

    def records(self, start: int = 1, hint: int = NO_HINT) -> Iterator[Record]:
        """Decrypted records from seq ``start`` on."""
        for frame in self.frames(start, hint):
            yield open_frame(self.keyring, frame)

    def record(self, seq: int, hint: int = NO_HINT) -> Record:
        return open_frame(self.keyring, self.frame(seq, hint))

    def append(self, bodies: Sequence[bytes]) -> list[Record]:
        """Append records durably: they are acknowledged (returned) only after the sync."""
        records = self.write(bodies)
        if records:
            self.sync(records[-1].seq)
        return records
