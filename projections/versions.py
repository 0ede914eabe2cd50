"""The version index: where in the log every version of every value lies, so a read of
the past costs one lookup and a few records instead of a replay.

Snapshots make "the whole state as of seq S" cost the events since the nearest one; a read
of one path at S needs far less: the mount table then (a handful of mount events) and the
last write or delete of that path at or before S.

The index is two files beside the log, derived from it like snapshots:

- ``versions.idx``, appended to: a magic, then 32-byte entries ``tag | seq | hint`` (the
  record's seq and the log's opaque hint for finding it), in seq order, and checkpoints;
- ``versions.run`` (``projections.sortedrun``): the entries up to some seq, sorted by tag
  in checksummed blocks. When the appended entries reach a quarter of the run (and at
  least ``COMPACT_MIN``), the writer merges them into a new run and starts the appended
  file afresh, so a lookup reads a block or two of the run and a short appended file.

The tag says what the record is:

- a write or delete of a path: the first 16 bytes of an HMAC of mount id and path under a
  key derived from the store's audit key, so the files name no path;
- a mount created, moved or removed: ``MOUNTS``;
- a checkpoint (appended file only): 12 bytes of a constant tag, then the crc32c of every
  entry before it. Every entry before it is complete and on disk for the records up to
  its seq, and those records are durable in the log;
- a base (the first entry of an appended file started after a merge): the entries follow
  the run's, which covers up to its seq; without that run the file is not used.

The index is never trusted: entries count only up to a checkpoint whose checksum holds,
run blocks only if theirs do, a record an entry points to must decode to the event it was
indexed for, or the caller answers from the log; ``vault audit verify`` checks the entries
against the log, so a forged index is caught like a forged snapshot.

The writer keeps new entries in memory and saves them, fdatasync'd, then a checkpoint,
once the records they cover are durable: when it closes, writes a snapshot, has 1,000
unsaved, or is asked about the past. A crash loses only entries after the last
checkpoint, which the next writer indexes again from the log.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from google_crc32c import extend
from google_crc32c import value as crc32c

from eventstore import CorruptionError, LogReader, MissingRecordError, Record
from eventstore.crypto import KeyedHmac
from eventstore.files import write_all, write_atomically
from projections.events import (
    Event,
    MountCreated,
    MountMoved,
    MountRemoved,
    MountTuned,
    SecretDeleted,
    SecretWritten,
    decode,
)
from projections.progress import counted
from projections.sortedrun import ENTRY as _ENTRY
from projections.sortedrun import (
    RUN_FILE,
    RunDamaged,
    SortedRun,
    entry_seq,
    tagged,
    write_run,
)
from projections.state import StoreState, apply

INDEX_FILE = "versions.idx"
_TAIL_ENTRIES = 4096  # how far back from its end a writer looks for the last checkpoint
_MAGIC = b"VLVIX002"  # 001 kept file positions; such files are passed over and rebuilt
COMPACT_MIN = 65_536  # appended entries worth merging into the sorted run
_TAG_CACHE = 65_536
ENTRY_SIZE = _ENTRY.size
_MOUNT_EVENTS = (MountCreated, MountMoved, MountRemoved, MountTuned)


class IndexMismatch(Exception):
    """The index points at a record that is not what it was indexed for."""


class VersionIndex:
    """Entries searchable by tag: those of ``versions.idx`` up to its last good checkpoint
    (``load``), or those a writer has not saved yet (``IndexWriter.index``)."""

    def __init__(self, path: Path, audit_key: bytes) -> None:
        self.path = path
        key = hmac.digest(audit_key, b"vaultlog version index", "sha256")
        self._hmac = KeyedHmac(key)
        self.mounts_tag = hmac.digest(key, b"mounts", "sha256")[:16]
        self.checkpoint_tag = hmac.digest(key, b"checkpoint", "sha256")[:12]
        self.base_tag = hmac.digest(key, b"base", "sha256")[:16]
        self.run_tag = hmac.digest(key, b"run", "sha256")[:16]
        self._tags: dict[tuple[str, str], bytes] = {}  # a cache: paths are written again
        self.run: SortedRun | None = None
        # Appended entries (up to ``end``): a writer's unsaved ones grow as it indexes.
        self.data: bytes | bytearray = bytearray()
        self.end = 0
        self.covered = 0  # every record up to this seq is indexed
        self.covered_hint = 0  # the log's hint for record ``covered``

    # ---- reading -------------------------------------------------------------------------

    @classmethod
    def load(cls, directory: Path, audit_key: bytes) -> VersionIndex | None:
        """The saved index up to its last checkpoint, or None if there is none or the
        checksum fails."""
        index = cls(directory / INDEX_FILE, audit_key)
        try:
            index.run = SortedRun.open(directory, index.run_tag)
        except RunDamaged:
            return None
        try:
            with open(index.path, "rb") as f:
                checkpoint = _last_checkpoint(f, index.checkpoint_tag, index.base_tag)
                if checkpoint is None:
                    return None
                f.seek(len(_MAGIC))
                data = f.read(checkpoint.offset - len(_MAGIC))
        except FileNotFoundError:
            return None
        if crc32c(data) != checkpoint.crc or checkpoint.base > _covered(index.run):
            return None  # damaged, or the run that held the entries before it is gone
        index.data, index.end = data, len(data)
        index.covered, index.covered_hint = checkpoint.seq, checkpoint.hint
        if index.run is not None and index.run.covered >= index.covered:
            index.covered, index.covered_hint = index.run.covered, index.run.covered_hint
        return index

    def tag(self, mount_id: str, path: str) -> bytes:
        found = self._tags.get((mount_id, path))
        if found is None:
            if len(self._tags) >= _TAG_CACHE:
                self._tags.clear()
            text = f"{mount_id}\0{path}".encode()
            found = self._tags[mount_id, path] = self._hmac.digest(text)[:16]
        return found

    def find(self, tag: bytes, seq: int) -> list[tuple[int, int]]:
        """``(seq, hint)`` of every entry with ``tag`` up to ``seq``, in seq
        order. Raises ``IndexMismatch`` if a block of the run it reads is damaged."""
        found, floor = [], 0
        if self.run is not None:
            try:
                found = self.run.find(tag, seq)
            except RunDamaged as exc:
                raise IndexMismatch(f"the sorted run is damaged: {exc}") from None
            floor = self.run.covered
        return found + [e for e in tagged(self.data, tag, seq, self.end) if e[0] > floor]

    def entries(self) -> list[bytes]:
        """Every entry (no checkpoints), the run's first; raises ``RunDamaged``."""
        found = self.run.entries() if self.run is not None else []
        floor = self.run.covered if self.run is not None else 0
        size, data, markers = _ENTRY.size, self.data, (self.checkpoint_tag, self.base_tag)
        entries = [bytes(data[pos : pos + size]) for pos in range(0, self.end - size + 1, size)]
        found += (e for e in entries if not e.startswith(markers) and entry_seq(e) > floor)
        return found

    def state_for_read(self, log: LogReader, path: str, seq: int) -> StoreState:
        """The mount table at ``seq`` and the value ``path`` had then, nothing else.

        Records after the index's coverage are read from the log. Raises ``IndexMismatch``
        (or ``CorruptionError``) when the index cannot be believed.
        """
        indexed = min(seq, self.covered)
        later = self._events_after(log, seq) if seq > self.covered else []
        state = StoreState()
        for event in self._mount_events(log, indexed) + later:
            if isinstance(event, _MOUNT_EVENTS):
                apply(state, event)
        state.seq = seq
        found = state.mounts.route(path)
        if found is None:
            return state
        mount, relative = found
        value = self._value(log, mount.id, relative, indexed, later)
        if value is not None:
            state.data[mount.id][relative] = value
        return state

    def value_at(self, log: LogReader, mount_id: str, path: str, seq: int) -> bytes | None:
        """The sealed value ``path`` of a mount had at ``seq``, None if it had none."""
        later = self._events_after(log, seq) if seq > self.covered else []
        return self._value(log, mount_id, path, min(seq, self.covered), later)

    def _value(
        self, log: LogReader, mount_id: str, path: str, indexed: int, later: list[Event]
    ) -> bytes | None:
        versions = self._versions(log, mount_id, path, indexed, last_only=True)
        versions += [e for e in later if _is_version(e, mount_id, path)]
        last = versions[-1] if versions else None
        return last.value if isinstance(last, SecretWritten) else None

    def _mount_events(self, log: LogReader, seq: int) -> list[Event]:
        """The indexed mount events up to ``seq``, read from the log."""
        events: list[Event] = []
        for at_seq, hint in self.find(self.mounts_tag, seq):
            event = _event_at(log, at_seq, hint)
            if not isinstance(event, _MOUNT_EVENTS):
                raise IndexMismatch(f"record {at_seq} is not a mount event")
            events.append(event)
        return events

    def _versions(
        self, log: LogReader, mount_id: str, path: str, seq: int, *, last_only: bool = False
    ) -> list[Event]:
        """The indexed writes and deletes of ``path`` in a mount up to ``seq`` (only the
        last, with ``last_only``), read from the log."""
        found = self.find(self.tag(mount_id, path), seq)
        events = []
        for at_seq, hint in found[-1:] if last_only else found:
            event = _event_at(log, at_seq, hint)
            if not _is_version(event, mount_id, path):
                raise IndexMismatch(f"record {at_seq} is not a version of {path}")
            events.append(event)
        return events

    def history_events(self, log: LogReader, path: str) -> list[Event]:
        """Every mount event, and every write or delete of a value that was ever at
        ``path`` (under any mount that ever had a mount point it starts with), in seq
        order; with the events after the index's coverage, unfiltered."""
        mounts = self._mount_events(log, self.covered)
        later = self._events_after(log, log.head.seq)
        wanted: set[tuple[str, str]] = set()
        for event in (*mounts, *later):
            if isinstance(event, MountTuned):  # names no mount point
                continue
            point = event.to_path if isinstance(event, MountMoved) else getattr(event, "path", "")
            if isinstance(event, _MOUNT_EVENTS) and path.startswith(point):
                wanted.add((event.mount_id, path[len(point) :]))
        versions: list[Event] = []
        for mount_id, relative in wanted:
            versions += self._versions(log, mount_id, relative, self.covered)
        return sorted((*mounts, *versions), key=lambda e: e.seq) + later

    def _events_after(self, log: LogReader, seq: int) -> list[Event]:
        """The events after the index's coverage, up to ``seq``, read from the log."""
        return [decode(record) for record in self.records_after(log, seq)]

    def records_after(self, log: LogReader, seq: int | None = None) -> Iterator[Record]:
        """The records after the index's coverage (up to ``seq``), read from the log."""
        frames = log.frames(self.covered or 1, self.covered_hint)
        expected = lambda: max((seq or log.head.seq) - self.covered, 0)  # noqa: E731
        for frame in counted(frames, "indexing", expected):
            if seq is not None and frame.header.seq > seq:
                return
            if frame.header.seq > self.covered:
                yield log.open_frame(frame)

    def append(self, tag: bytes, seq: int, hint: int) -> None:
        assert isinstance(self.data, bytearray)  # a writer's
        self.data += _entry(tag, seq, hint)
        self.end = len(self.data)


class IndexWriter:
    """A writer's end of the index: it indexes what is appended and saves it.

    Opening reads only the file's tail (its last checkpoint), so a writer's open costs the
    same however long the index is; ``VersionIndex.load`` reads and checks all of it.
    """

    def __init__(self, directory: Path, audit_key: bytes, log: LogReader | None = None) -> None:
        self.directory, self._audit_key, self._log = directory, audit_key, log
        self.index = VersionIndex(directory / INDEX_FILE, audit_key)
        self.saved = len(_MAGIC)  # bytes of the appended file trusted
        self._crc = 0  # crc32c of the appended file's entries up to ``saved``
        self._checkpointed = 0  # the coverage of the last checkpoint in the file
        self._appended = 0  # entries and checkpoints in the appended file
        self._run_count = 0  # entries in the sorted run
        self._fd: int | None = None

    @classmethod
    def open(
        cls, directory: Path, audit_key: bytes, log: LogReader, *, rebuild: bool = False
    ) -> IndexWriter:
        """The writer of a store's index, for a writer holding the store's lock: what of the
        file can be trusted, then what the log holds beyond it, indexed now (all of the log
        if there is no usable index, or ``rebuild`` says so)."""
        writer = cls(directory, audit_key, log)
        if rebuild or not writer._resume(log):
            writer._start_afresh()
        else:  # drop what a crashed writer left after its last checkpoint
            os.truncate(writer.index.path, writer.saved)
            writer._fd = os.open(writer.index.path, os.O_WRONLY | os.O_APPEND)
        writer.index_log(log)
        return writer

    def _start_afresh(self) -> None:
        """An empty index, all of the log to index again."""
        self.close()
        (self.directory / RUN_FILE).unlink(missing_ok=True)
        write_atomically(self.index.path, _MAGIC)
        self._fd = os.open(self.index.path, os.O_WRONLY | os.O_APPEND)
        self.saved, self._crc, self._checkpointed = len(_MAGIC), 0, 0
        self._appended = self._run_count = 0
        index = self.index
        index.data, index.end, index.covered, index.covered_hint = bytearray(), 0, 0, 0

    def _resume(self, log: LogReader) -> bool:
        """Take the coverage from the run's header and the appended file's last checkpoint
        (its tail), if the records they name are in the log where they say."""
        index = self.index
        try:
            run = SortedRun.open(self.directory, index.run_tag)
            with open(index.path, "rb") as f:
                checkpoint = _last_checkpoint(f, index.checkpoint_tag, index.base_tag)
        except (RunDamaged, FileNotFoundError):
            return False
        if checkpoint is None or checkpoint.base > _covered(run):
            return False
        if run is not None:
            if not _in_log(log, run.covered, run.covered_hint):
                return False
            self._run_count = run.count
            index.covered, index.covered_hint = run.covered, run.covered_hint
        if checkpoint.seq > index.covered:
            if not _in_log(log, checkpoint.seq, checkpoint.hint):
                return False
            self.saved = checkpoint.offset + _ENTRY.size
            self._crc = extend(checkpoint.crc, checkpoint.entry)
            self._appended = (self.saved - len(_MAGIC)) // _ENTRY.size
            index.covered, index.covered_hint = checkpoint.seq, checkpoint.hint
        # (else the appended file is empty, or holds only what the run has taken in: a
        # crash came between writing the run and starting the file afresh; truncated.)
        self._checkpointed = index.covered
        return True

    def index_log(self, log: LogReader) -> None:
        """Index the records the log holds beyond the coverage, and save them."""
        for record in list(self.index.records_after(log)):
            self.add(decode(record), record.hint)
        self.save()

    def add(self, event: Event, hint: int) -> None:
        """Index one event just appended, whose record came with ``hint``."""
        index = self.index
        if isinstance(event, SecretWritten | SecretDeleted):
            index.append(index.tag(event.mount_id, event.path), event.seq, hint)
        elif isinstance(event, _MOUNT_EVENTS):
            index.append(index.mounts_tag, event.seq, hint)
        index.covered, index.covered_hint = event.seq, hint

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
        if self._fd is None or index.covered == 0 or self._checkpointed == index.covered:
            return
        pending = bytes(index.data)
        checksum = extend(self._crc, pending)
        tag = index.checkpoint_tag + checksum.to_bytes(4)
        checkpoint = _entry(tag, index.covered, index.covered_hint)
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
        self._appended += len(pending) // _ENTRY.size + 1
        self._checkpointed = index.covered
        index.data, index.end = bytearray(), 0
        if self._appended >= max(COMPACT_MIN, self._run_count // 4):
            self._compact()

    def _compact(self) -> None:
        """Merge the appended entries into a new sorted run; start the appended file afresh.

        The run is replaced atomically first: a crash before the appended file is started
        again leaves entries the run holds too, which count once (by seq).
        """
        saved = VersionIndex.load(self.directory, self._audit_key)
        try:
            if saved is None or saved.covered != self.index.covered or saved.covered == 0:
                raise RunDamaged("the index does not load")
            entries = sorted(saved.entries())
        except RunDamaged:  # damaged since this writer resumed it: index the log again
            if self._log is not None:
                self._start_afresh()
                self.index_log(self._log)
            return
        covered, at = saved.covered, saved.covered_hint
        # The file starts afresh with a base: its entries follow the run's, seq ``covered``.
        base = _entry(self.index.base_tag, covered, at)
        tag = self.index.checkpoint_tag + crc32c(base).to_bytes(4)
        fresh = base + _entry(tag, covered, at)
        try:
            write_run(self.directory, self.index.run_tag, entries, covered, at)
            write_atomically(self.index.path, _MAGIC + fresh)
            self.close()
            self._fd = os.open(self.index.path, os.O_WRONLY | os.O_APPEND)
        except OSError:
            self.close()
            return
        self.saved, self._crc = len(_MAGIC) + len(fresh), crc32c(fresh)
        self._appended, self._run_count = 2, len(entries)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def saved_coverage(directory: Path, audit_key: bytes) -> int:
    """The seq the saved index says it covers, read from the run's header and the
    appended file's last checkpoint (keyed tags: not something another store could
    leave): evidence of how far the log once reached. 0 if there is no index."""
    index = VersionIndex(directory / INDEX_FILE, audit_key)
    try:
        run = SortedRun.open(directory, index.run_tag)
    except RunDamaged:
        run = None
    try:
        with open(index.path, "rb") as f:
            checkpoint = _last_checkpoint(f, index.checkpoint_tag, index.base_tag)
    except FileNotFoundError:
        checkpoint = None
    return max(_covered(run), checkpoint.seq if checkpoint is not None else 0)


class _Checkpoint(NamedTuple):
    offset: int  # in the file
    crc: int  # of every entry before it
    seq: int
    hint: int  # of the record at seq; seq 0: an index with no entries
    entry: bytes
    base: int  # the seq the entries follow (the sorted run's coverage); 0: the first


def _last_checkpoint(f: BinaryIO, tag: bytes, base_tag: bytes) -> _Checkpoint | None:
    """The last checkpoint of an index file, found near its end; None if there is none."""
    size = os.fstat(f.fileno()).st_size
    if f.read(len(_MAGIC)) != _MAGIC:
        return None
    whole = len(_MAGIC) + (size - len(_MAGIC)) // _ENTRY.size * _ENTRY.size
    if whole == len(_MAGIC):
        return _Checkpoint(len(_MAGIC), 0, 0, 0, b"", 0)
    opening = f.read(_ENTRY.size)
    base = entry_seq(opening) if opening.startswith(base_tag) else 0
    start = max(len(_MAGIC), whole - _TAIL_ENTRIES * _ENTRY.size)
    f.seek(start)
    tail = f.read(whole - start)
    for pos in range(len(tail) - _ENTRY.size, -1, -_ENTRY.size):
        if tail.startswith(tag, pos):
            checksum, seq, hint = _ENTRY.unpack_from(tail, pos)
            entry = tail[pos : pos + _ENTRY.size]
            crc = int.from_bytes(checksum[12:])
            return _Checkpoint(start + pos, crc, seq, hint, entry, base)
    return None


def _entry(tag: bytes, seq: int, hint: int) -> bytes:
    return _ENTRY.pack(tag, seq, hint)


def _covered(run: SortedRun | None) -> int:
    return 0 if run is None else run.covered


def _in_log(log: LogReader, seq: int, hint: int) -> bool:
    """Whether the log holds record ``seq`` (``hint`` helps find it)."""
    if seq > log.head.seq:
        return False
    try:
        log.record(seq, hint)
    except (CorruptionError, MissingRecordError):
        return False
    return True


def _is_version(event: Event, mount_id: str, path: str) -> bool:
    """Whether ``event`` wrote or deleted ``path`` of the mount."""
    return isinstance(event, SecretWritten | SecretDeleted) and (event.mount_id, event.path) == (
        mount_id,
        path,
    )


def _event_at(log: LogReader, seq: int, hint: int) -> Event:
    try:
        return decode(log.record(seq, hint))
    except MissingRecordError:
        raise IndexMismatch(f"the log holds no record {seq}") from None
