"""The version index: where in the log every version of every value lies, so a read of
the past costs one lookup and a few records instead of a replay.

Snapshots make "the whole state as of seq S" cost the events since the nearest one; a read
of one path at S needs far less: the mount table then (a handful of mount events) and the
last write or delete of that path at or before S.

The index is the file ``versions.idx`` beside the log: a magic, then 40-byte entries
``tag | seq | segment | offset`` (the record's seq, the first seq of its segment, and the
offset it starts at), in seq order. The tag says what the record is:

- a write or delete of a path: the first 16 bytes of an HMAC of mount id and path under a
  key derived from the store's audit key, so the file names no path;
- a mount created, moved or removed: ``MOUNTS``;
- a checkpoint: 12 bytes of a constant tag, then the crc32c of every byte before it in
  the file after the magic. Every entry before it is complete and on disk for the records
  up to its seq, and those records are durable in the log.

Like snapshots, the index is derived from the log and never trusted: entries count only up
to a checkpoint whose checksum holds, a record they point to must decode to the event it
was indexed for, or the caller answers from the log; ``vault audit verify`` checks the
entries against the log, so a forged index is caught like a forged snapshot. The
writer keeps new entries in memory and saves them, fdatasync'd, then a checkpoint, when it
writes a snapshot and when it closes; a crash loses only entries after the last
checkpoint, which the next writer indexes again from the log.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import struct
from collections.abc import Callable
from pathlib import Path

from google_crc32c import extend
from google_crc32c import value as crc32c

from eventstore import CorruptionError, FileLog
from eventstore.files import write_all, write_atomically
from eventstore.log import segment_name
from projections.events import (
    Event,
    MountCreated,
    MountMoved,
    MountRemoved,
    SecretDeleted,
    SecretWritten,
    decode,
)
from projections.state import Mount, MountTable, StoreState, apply

INDEX_FILE = "versions.idx"
_MAGIC = b"VLVIX001"
_ENTRY = struct.Struct(">16sQQQ")  # tag, seq, first seq of the segment, offset
_WHERE = struct.Struct(">QQQ")
ENTRY_SIZE = _ENTRY.size
_MOUNT_EVENTS = (MountCreated, MountMoved, MountRemoved)

# A router: the mount serving a path in a mount table, and the path inside it.
Route = Callable[[MountTable, str], tuple[Mount, str] | None]


class IndexMismatch(Exception):
    """The index points at a record that is not what it was indexed for."""


class VersionIndex:
    """The entries of ``versions.idx`` up to its last checkpoint, plus what this process
    indexed since (a writer's), searchable by tag."""

    def __init__(self, path: Path, audit_key: bytes) -> None:
        self.path = path
        key = hmac.digest(audit_key, b"vaultlog version index", "sha256")
        self._key = key
        self.mounts_tag = hmac.digest(key, b"mounts", "sha256")[:16]
        self._checkpoint_tag = hmac.digest(key, b"checkpoint", "sha256")[:12]
        self.entries = bytearray()
        self.saved = 0  # bytes of ``entries`` known to be in the file
        self.covered = 0  # every record up to this seq is indexed
        self.covered_at: tuple[str, int] | None = None  # where record ``covered`` starts
        self._fd: int | None = None
        self._checkpointed = 0  # the coverage of the last checkpoint in the file
        self._crc = 0  # crc32c of the saved entries

    # ---- reading -------------------------------------------------------------------------

    @classmethod
    def load(cls, directory: Path, audit_key: bytes) -> VersionIndex | None:
        """The saved index, or None if there is none or it makes no sense."""
        index = cls(directory / INDEX_FILE, audit_key)
        try:
            data = index.path.read_bytes()
        except FileNotFoundError:
            return None
        return index if index._take(data) else None

    def _take(self, data: bytes) -> bool:
        """Keep the entries of ``data`` up to its last checkpoint."""
        if not data.startswith(_MAGIC):
            return False
        tag = self._checkpoint_tag
        end = len(_MAGIC) + (len(data) - len(_MAGIC)) // _ENTRY.size * _ENTRY.size
        for pos in range(end - _ENTRY.size, len(_MAGIC) - 1, -_ENTRY.size):
            if data.startswith(tag, pos):
                checksum, seq, first, offset = _ENTRY.unpack_from(data, pos)
                before = crc32c(data[len(_MAGIC) : pos])
                if before != int.from_bytes(checksum[12:]):
                    return False
                self.entries = bytearray(data[len(_MAGIC) : pos + _ENTRY.size])
                self._crc = extend(before, data[pos : pos + _ENTRY.size])
                self.saved = len(self.entries)
                self.covered, self.covered_at = seq, (segment_name(first), offset)
                return True
        return end == len(_MAGIC)  # no entries at all is a valid (empty) index

    def tag(self, mount_id: str, path: str) -> bytes:
        return hmac.digest(self._key, f"{mount_id}\0{path}".encode(), "sha256")[:16]

    def find(self, tag: bytes, seq: int) -> list[tuple[int, tuple[str, int]]]:
        """``(seq, (segment, offset))`` of every entry with ``tag`` up to ``seq``."""
        data, found = self.entries, []
        pos = data.find(tag)
        while pos != -1:
            if pos % _ENTRY.size == 0:
                at, first, offset = _WHERE.unpack_from(data, pos + 16)
                if at > seq:
                    break  # entries are in seq order
                found.append((at, (segment_name(first), offset)))
            pos = data.find(tag, pos + 1)
        return found

    def entries_without_checkpoints(self) -> bytes:
        size, tag = _ENTRY.size, self._checkpoint_tag
        data = self.entries
        return b"".join(
            data[pos : pos + size]
            for pos in range(0, len(data), size)
            if not data.startswith(tag, pos)
        )

    def entries_up_to(self, seq: int) -> bytes:
        """The entries of records up to ``seq`` (an index that was never saved)."""
        size, data = _ENTRY.size, bytes(self.entries)
        end = len(data)
        while end and entry_seq(data[end - size : end]) > seq:
            end -= size
        return data[:end]

    def state_for_read(self, log: FileLog, route: Route, path: str, seq: int) -> StoreState:
        """The mount table at ``seq`` and the value ``path`` had then, nothing else.

        Records after the index's coverage are read from the log. Raises ``IndexMismatch``
        (or ``CorruptionError``) when the index cannot be believed.
        """
        indexed = min(seq, self.covered)
        state = StoreState()
        for at_seq, (segment, offset) in self.find(self.mounts_tag, indexed):
            event = _event_at(log, segment, offset, at_seq)
            if not isinstance(event, _MOUNT_EVENTS):
                raise IndexMismatch(f"record {at_seq} is not a mount event")
            apply(state, event)
        later = self._events_after(log, seq) if seq > self.covered else []
        for event in later:
            if isinstance(event, _MOUNT_EVENTS):
                apply(state, event)
        state.seq = seq
        found = route(state.mounts, path)
        if found is None:
            return state
        mount, relative = found
        value = None
        versions = self.find(self.tag(mount.id, relative), indexed)
        if versions:
            at_seq, (segment, offset) = versions[-1]
            event = _event_at(log, segment, offset, at_seq)
            if not isinstance(event, SecretWritten | SecretDeleted) or (
                event.mount_id,
                event.path,
            ) != (mount.id, relative):
                raise IndexMismatch(f"record {at_seq} is not a version of {path}")
            value = event.value if isinstance(event, SecretWritten) else None
        for event in later:
            if isinstance(event, SecretWritten | SecretDeleted) and (
                event.mount_id,
                event.path,
            ) == (mount.id, relative):
                value = event.value if isinstance(event, SecretWritten) else None
        if value is not None:
            state.data[mount.id][relative] = value
        return state

    def _events_after(self, log: FileLog, seq: int) -> list[Event]:
        """The events after the index's coverage, up to ``seq``, read from the log."""
        if self.covered_at is None:
            frames = log.frames(1)
        else:
            frames = log.frames(self.covered, at=self.covered_at)
        events = []
        for frame in frames:
            if frame.header.seq > seq:
                break
            if frame.header.seq > self.covered:
                events.append(decode(log.open_frame(frame)))
        return events

    # ---- writing -------------------------------------------------------------------------

    @classmethod
    def open_writer(cls, directory: Path, audit_key: bytes, log: FileLog) -> VersionIndex:
        """The index for a writer holding the lock: whatever of it can be trusted, then
        what the log holds beyond that, indexed now (all of it if there is no index)."""
        index = cls.load(directory, audit_key)
        if index is None or not index._fits(log):
            index = cls(directory / INDEX_FILE, audit_key)
        if index.saved:  # drop what a crashed writer left after its last checkpoint
            os.truncate(index.path, len(_MAGIC) + index.saved)
        else:
            write_atomically(index.path, _MAGIC)
        index._fd = os.open(index.path, os.O_WRONLY | os.O_APPEND)
        index._checkpointed = index.covered
        frames = log.frames(index.covered or 1, at=index.covered_at)
        for frame in frames:
            if frame.header.seq > index.covered:
                record = log.open_frame(frame)
                index.add(decode(record), record.at)
        index.save()
        return index

    def _fits(self, log: FileLog) -> bool:
        """Whether the record the last checkpoint names is in the log where it says."""
        if self.covered_at is None:
            return True
        if self.covered > log.head.seq:
            return False
        try:
            log.open_frame(log.frame_at(*self.covered_at, self.covered))
        except CorruptionError:
            return False
        return True

    def add(self, event: Event, at: tuple[str, int] | None) -> None:
        """Index one event just appended at ``at``."""
        assert at is not None
        if isinstance(event, SecretWritten | SecretDeleted):
            self._entry(self.tag(event.mount_id, event.path), event.seq, at)
        elif isinstance(event, _MOUNT_EVENTS):
            self._entry(self.mounts_tag, event.seq, at)
        self.covered, self.covered_at = event.seq, at

    def _entry(self, tag: bytes, seq: int, at: tuple[str, int]) -> None:
        self.entries += _ENTRY.pack(tag, seq, int(at[0][:20]), at[1])

    def save(self) -> None:
        """Put the new entries on disk, then a checkpoint at the coverage, whose records
        must be durable in the log by now.

        The index is derived data: a failure to save it is left for the next writer, which
        indexes again from the last checkpoint that made it to disk.
        """
        if self._fd is None or self.covered_at is None or self._checkpointed == self.covered:
            return
        pending = bytes(self.entries[self.saved :])
        with contextlib.suppress(OSError):
            if pending:
                write_all(self._fd, pending)
                os.fdatasync(self._fd)
            checksum = extend(self._crc, pending)
            self._entry(self._checkpoint_tag + checksum.to_bytes(4), self.covered, self.covered_at)
            checkpoint = bytes(self.entries[-_ENTRY.size :])
            write_all(self._fd, checkpoint)
            self._crc = extend(checksum, checkpoint)
            self.saved, self._checkpointed = len(self.entries), self.covered

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _event_at(log: FileLog, segment: str, offset: int, seq: int) -> Event:
    return decode(log.open_frame(log.frame_at(segment, offset, seq)))


def entry_seq(entry: bytes) -> int:
    """The seq of the record an entry is about."""
    seq: int = _WHERE.unpack_from(entry, 16)[0]
    return seq
