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
entries against the log, so a forged index is caught like a forged snapshot.

The writer keeps new entries in memory and saves them, fdatasync'd, then a checkpoint,
once the records they cover are durable: when it closes, writes a snapshot, has 1,000
unsaved, or is asked about the past. A crash loses only entries after the last
checkpoint, which the next writer indexes again from the log. A lookup reads the whole
file (40 bytes per write) and searches it: fine at 100,000 writes (~7 ms), ~60 ms at a
million; sorted or bucketed runs would make it logarithmic.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, NamedTuple

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
_TAIL_ENTRIES = 4096  # how far back from its end a writer looks for the last checkpoint
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
    """Entries searchable by tag: those of ``versions.idx`` up to its last good checkpoint
    (``load``), or those a writer has not saved yet (``IndexWriter.index``)."""

    def __init__(self, path: Path, audit_key: bytes) -> None:
        self.path = path
        key = hmac.digest(audit_key, b"vaultlog version index", "sha256")
        self._key = key
        self.mounts_tag = hmac.digest(key, b"mounts", "sha256")[:16]
        self.checkpoint_tag = hmac.digest(key, b"checkpoint", "sha256")[:12]
        # Entries (up to ``end``): a writer's grow as it indexes.
        self.data: bytes | bytearray = bytearray()
        self.end = 0
        self.covered = 0  # every record up to this seq is indexed
        self.covered_at: tuple[str, int] | None = None  # where record ``covered`` starts

    # ---- reading -------------------------------------------------------------------------

    @classmethod
    def load(cls, directory: Path, audit_key: bytes) -> VersionIndex | None:
        """The saved index up to its last checkpoint, or None if there is none or the
        checksum fails."""
        index = cls(directory / INDEX_FILE, audit_key)
        try:
            with open(index.path, "rb") as f:
                checkpoint = _last_checkpoint(f, index.checkpoint_tag)
                if checkpoint is None:
                    return None
                f.seek(len(_MAGIC))
                data = f.read(checkpoint.offset - len(_MAGIC))
        except FileNotFoundError:
            return None
        if crc32c(data) != checkpoint.crc:
            return None
        index.data, index.end = data, len(data)
        index.covered, index.covered_at = checkpoint.seq, checkpoint.at
        return index

    def tag(self, mount_id: str, path: str) -> bytes:
        return hmac.digest(self._key, f"{mount_id}\0{path}".encode(), "sha256")[:16]

    def find(self, tag: bytes, seq: int) -> list[tuple[int, tuple[str, int]]]:
        """``(seq, (segment, offset))`` of every entry with ``tag`` up to ``seq``."""
        data, end, found = self.data, self.end, []
        pos = data.find(tag, 0, end)
        while pos != -1:
            if pos % _ENTRY.size == 0:
                at, first, offset = _WHERE.unpack_from(data, pos + 16)
                if at > seq:
                    break  # entries are in seq order
                found.append((at, (segment_name(first), offset)))
            pos = data.find(tag, pos + 1, end)
        return found

    def entries_without_checkpoints(self) -> bytes:
        size, tag, data = _ENTRY.size, self.checkpoint_tag, self.data
        return b"".join(
            data[pos : pos + size]
            for pos in range(0, self.end, size)
            if not data.startswith(tag, pos)
        )

    def entries_up_to(self, seq: int) -> bytes:
        """The entries of records up to ``seq``."""
        size, data, end = _ENTRY.size, self.data, self.end
        while end and entry_seq(data[end - size : end]) > seq:
            end -= size
        return bytes(data[:end])

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

    def append(self, tag: bytes, seq: int, at: tuple[str, int]) -> None:
        assert isinstance(self.data, bytearray)  # a writer's
        self.data += _entry(tag, seq, at)
        self.end = len(self.data)


class IndexWriter:
    """A writer's end of the index: it indexes what is appended and saves it.

    Opening reads only the file's tail (its last checkpoint), so a writer's open costs the
    same however long the index is; ``VersionIndex.load`` reads and checks all of it.
    """

    def __init__(self, directory: Path, audit_key: bytes) -> None:
        self.index = VersionIndex(directory / INDEX_FILE, audit_key)
        self.saved = len(_MAGIC)  # bytes of the file trusted
        self._crc = 0  # crc32c of the file's entries up to ``saved``
        self._checkpointed = 0  # the coverage of the last checkpoint in the file
        self._fd: int | None = None

    @classmethod
    def open(
        cls, directory: Path, audit_key: bytes, log: FileLog, *, rebuild: bool = False
    ) -> IndexWriter:
        """The writer of a store's index, for a writer holding the store's lock: what of the
        file can be trusted, then what the log holds beyond it, indexed now (all of the log
        if there is no usable index, or ``rebuild`` says so)."""
        writer = cls(directory, audit_key)
        if rebuild or not writer._resume(log):
            writer = cls(directory, audit_key)
            write_atomically(writer.index.path, _MAGIC)
        else:  # drop what a crashed writer left after its last checkpoint
            os.truncate(writer.index.path, writer.saved)
        writer._fd = os.open(writer.index.path, os.O_WRONLY | os.O_APPEND)
        writer.index_log(log)
        return writer

    def _resume(self, log: FileLog) -> bool:
        """Take the last checkpoint from the file's tail, if it names a record in the log."""
        index = self.index
        try:
            with open(index.path, "rb") as f:
                checkpoint = _last_checkpoint(f, index.checkpoint_tag)
        except FileNotFoundError:
            return False
        if checkpoint is None:
            return False
        if checkpoint.at is not None:  # not an empty index
            if checkpoint.seq > log.head.seq:
                return False
            try:
                log.open_frame(log.frame_at(*checkpoint.at, checkpoint.seq))
            except CorruptionError:
                return False
            self.saved = checkpoint.offset + _ENTRY.size
            self._crc = extend(checkpoint.crc, checkpoint.entry)
        index.covered, index.covered_at = checkpoint.seq, checkpoint.at
        self._checkpointed = checkpoint.seq
        return True

    def index_log(self, log: FileLog) -> None:
        """Index the records the log holds beyond the coverage, and save them."""
        index = self.index
        for frame in log.frames(index.covered or 1, at=index.covered_at):
            if frame.header.seq > index.covered:
                record = log.open_frame(frame)
                self.add(decode(record), record.at)
        self.save()

    def add(self, event: Event, at: tuple[str, int] | None) -> None:
        """Index one event just appended at ``at``."""
        assert at is not None
        index = self.index
        if isinstance(event, SecretWritten | SecretDeleted):
            index.append(index.tag(event.mount_id, event.path), event.seq, at)
        elif isinstance(event, _MOUNT_EVENTS):
            index.append(index.mounts_tag, event.seq, at)
        index.covered, index.covered_at = event.seq, at

    @property
    def unsaved(self) -> int:
        """Entries indexed but not saved yet."""
        return len(self.index.data) // _ENTRY.size

    def save(self) -> None:
        """Put the new entries in the file, then a checkpoint at the coverage, whose records
        must be durable in the log by now.

        The index is derived data: if saving fails, this writer stops saving and the next
        one indexes again from the last checkpoint that made it to disk.
        """
        index = self.index
        if self._fd is None or index.covered_at is None or self._checkpointed == index.covered:
            return
        pending = bytes(index.data)
        checksum = extend(self._crc, pending)
        tag = index.checkpoint_tag + checksum.to_bytes(4)
        checkpoint = _entry(tag, index.covered, index.covered_at)
        try:
            if pending:
                write_all(self._fd, pending)
                os.fdatasync(self._fd)
            write_all(self._fd, checkpoint)
        except OSError:
            self.close()
            return
        self._crc = extend(checksum, checkpoint)
        self.saved += len(pending) + len(checkpoint)
        self._checkpointed = index.covered
        index.data, index.end = bytearray(), 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _Checkpoint(NamedTuple):
    offset: int  # in the file
    crc: int  # of every entry before it
    seq: int
    at: tuple[str, int] | None  # None: an index with no entries
    entry: bytes


def _last_checkpoint(f: BinaryIO, tag: bytes) -> _Checkpoint | None:
    """The last checkpoint of an index file, found near its end; None if there is none."""
    size = os.fstat(f.fileno()).st_size
    if f.read(len(_MAGIC)) != _MAGIC:
        return None
    whole = len(_MAGIC) + (size - len(_MAGIC)) // _ENTRY.size * _ENTRY.size
    if whole == len(_MAGIC):
        return _Checkpoint(len(_MAGIC), 0, 0, None, b"")
    start = max(len(_MAGIC), whole - _TAIL_ENTRIES * _ENTRY.size)
    f.seek(start)
    tail = f.read(whole - start)
    for pos in range(len(tail) - _ENTRY.size, -1, -_ENTRY.size):
        if tail.startswith(tag, pos):
            checksum, seq, first, offset = _ENTRY.unpack_from(tail, pos)
            entry = tail[pos : pos + _ENTRY.size]
            crc = int.from_bytes(checksum[12:])
            return _Checkpoint(start + pos, crc, seq, (segment_name(first), offset), entry)
    return None


def _entry(tag: bytes, seq: int, at: tuple[str, int]) -> bytes:
    return _ENTRY.pack(tag, seq, int(at[0][:20]), at[1])


def _event_at(log: FileLog, segment: str, offset: int, seq: int) -> Event:
    return decode(log.open_frame(log.frame_at(segment, offset, seq)))


def entry_seq(entry: bytes | bytearray) -> int:
    """The seq of the record an entry is about."""
    seq: int = _WHERE.unpack_from(entry, 16)[0]
    return seq
