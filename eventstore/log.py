"""The file log: numbered segment files of records, one writer, many readers.

A segment is a magic followed by records as the record codec writes them; each is named by
the seq of its first record. A record's hint packs its segment's first seq and offset.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from functools import partial
from hashlib import sha256
from pathlib import Path

from google_crc32c import value as crc32c

from eventstore.errors import CorruptionError, MissingRecordError, ReadOnlyError, StoreError
from eventstore.files import fsync_dir, write_all
from eventstore.interface import LogBase, TornTail
from eventstore.keyring import Keyring
from eventstore.lock import WriterLock
from eventstore.record import (
    GENESIS_HASH,
    HEADER,
    MIN_PAYLOAD,
    NO_HINT,
    PREFIX,
    VERSION,
    Frame,
    Head,
    Header,
    Record,
    checksum_ok,
    parse,
    seal_batch,
)

__all__ = ["SEGMENT_MAGIC", "FileLog", "Frame", "Head", "SegmentScan", "segment_name"]

SEGMENT_MAGIC = b"VLSEG001"
SEGMENT_BYTES = 64 << 20
_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")
_header = partial(tuple.__new__, Header)  # Header._make without its Python frame


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}.seg"


def segment_first_seq(name: str) -> int:
    """The seq a segment file starts at, from its name."""
    return int(name[:20])


def make_hint(first_seq: int, offset: int) -> int:
    """A record's hint: its segment's first seq and its offset, packed in 64 bits (0 if
    they do not fit: the record is then found by seq)."""
    if first_seq >= 1 << 32 or offset >= 1 << 32:
        return NO_HINT
    return first_seq << 32 | offset


def read_hint(hint: int) -> tuple[str, int] | None:
    """The (segment, offset) a hint names, or None."""
    if hint <= 0 or hint >= 1 << 64:
        return None
    return segment_name(hint >> 32), hint & 0xFFFFFFFF


class SegmentScan:
    """Walks the records of one segment, checking framing, checksum, seq and hash chain.

    A damaged record raises ``CorruptionError``. Only in the last segment may the final
    record be incomplete (a torn write): the walk then stops and sets ``torn_at``.
    """

    def __init__(
        self,
        name: str,
        data: bytes,
        *,
        first_seq: int,
        prev_hash: bytes | None,
        last: bool,
        base: int = 0,
    ) -> None:
        """``data`` is the segment from file offset ``base``: 0, or a record's start."""
        self.name, self.data, self.first_seq = name, data, first_seq
        self.prev_hash, self.last, self.base = prev_hash, last, base
        self.torn_at: int | None = None
        self.segment_seq = segment_first_seq(name) if _SEGMENT_NAME.match(name) else 0

    def _fail(self, what: str, pos: int, seq: int, kind: str = "corruption") -> CorruptionError:
        offset = self.base + pos
        return CorruptionError(what, segment=self.name, offset=offset, seq=seq, kind=kind)

    def _torn(self, pos: int, seq: int, what: str) -> None:
        if not self.last:
            raise self._fail(what, pos, seq)
        self.torn_at = self.base + pos

    def _length_damaged(self, pos: int, seq: int, crc: int) -> bool:
        """Whether a record that runs past the end is whole but has a damaged length field.

        A torn write leaves a *prefix* of the last append, so nothing whole can follow the
        cut-short record. If its payload checks out when it ends at the end of the data, or
        a well-formed record ``seq + 1`` lies further on, the length lied: cutting there
        would throw away acknowledged records.
        """
        data, start = self.data, pos + PREFIX.size
        if checksum_ok(data[start:], crc):
            return True
        marker = (seq + 1).to_bytes(8, "big")  # the seq field of the next record's header
        hit = data.find(marker, start)
        while hit != -1:
            begin = hit - 1 - PREFIX.size  # the header's version byte precedes its seq
            if begin >= start:
                length, next_crc = PREFIX.unpack_from(data, begin)
                end = begin + PREFIX.size + length
                whole = length >= MIN_PAYLOAD and end <= len(data)
                if whole and checksum_ok(data[begin + PREFIX.size : end], next_crc):
                    return True
            hit = data.find(marker, hit + 1)
        return False

    def __iter__(self) -> Iterator[Frame]:
        data, seq, prev, base = self.data, self.first_seq, self.prev_hash, self.base
        if base == 0 and not data.startswith(SEGMENT_MAGIC):
            if SEGMENT_MAGIC.startswith(data):  # a new segment cut short as it was created
                self._torn(0, seq, "segment header cut short")
                return
            raise self._fail("not a vaultlog segment", 0, seq)
        pos = 0 if base else len(SEGMENT_MAGIC)
        size, view = len(data), memoryview(data)
        while pos < size:
            if size - pos < PREFIX.size:
                self._torn(pos, seq, "record cut short")
                return
            length, crc = PREFIX.unpack_from(data, pos)
            end = pos + PREFIX.size + length
            if length == 0 and not any(data[pos:]):  # zero-filled tail of a torn write
                self._torn(pos, seq, "zero-filled record")
                return
            if end > size:
                if self._length_damaged(pos, seq, crc):
                    raise self._fail("record length field damaged", pos, seq)
                self._torn(pos, seq, "record cut short")
                return
            if length < MIN_PAYLOAD:
                raise self._fail("record length field damaged", pos, seq)
            payload = data[pos + PREFIX.size : end]
            if crc32c(payload) != crc:
                raise self._fail("checksum mismatch", pos, seq)
            header = _header(HEADER.unpack_from(payload))
            if header.version != VERSION:
                raise self._fail(f"unknown record format version {header.version}", pos, seq)
            if header.seq != seq:
                raise self._fail(
                    f"expected seq {seq} but found seq {header.seq}",
                    pos,
                    seq,
                    "missing or reordered records",
                )
            if prev is not None and header.prev_hash != prev:
                raise self._fail(
                    "hash chain broken (previous record changed)", pos, seq, "rewritten history"
                )
            prev = sha256(view[pos:end]).digest()
            at = base + pos
            hint = make_hint(self.segment_seq, at)
            yield Frame(self.name, at, base + end, header, payload, prev, hint)
            seq += 1
            pos = end


class FileLog(LogBase):
    """The log in one directory. Readers open it freely; ``open_writer`` takes the lock."""

    def __init__(self, directory: Path, keyring: Keyring) -> None:
        self.directory = directory
        self.keyring = keyring
        self._lock: WriterLock | None = None
        self._fd: int | None = None
        self._segment_size = 0
        self._broken: str | None = None
        self.head = Head(0, GENESIS_HASH)
        self.head_hint = NO_HINT  # where the head record starts
        self.torn_tail: TornTail | None = None  # what the last full scan stopped at
        self._cond = threading.Condition()  # guards writing, the head and group commit
        self._syncing = False
        self._waiting: list[tuple[int, threading.Lock]] = []  # a sync's waiters: seq, gate
        self._durable_seq = 0
        self._durable_head = self.head
        self._durable_hint = NO_HINT
        self._segment_name = ""
        self._durable_size = 0  # bytes of the open segment known to be on disk

    @classmethod
    def open_writer(cls, directory: Path, keyring: Keyring, lock: WriterLock) -> FileLog:
        """The log for appending, under ``lock`` (held, and released by ``close``).

        Opening cuts off a torn tail and finds the head.
        """
        if not lock.held:
            raise StoreError("the writer lock must be held to append")
        log = cls(directory, keyring)
        log._lock = lock
        try:
            log._recover_tail()
            log._durable_seq, log._durable_head = log.head.seq, log.head
            log._durable_hint = log.head_hint
        except BaseException:
            log.close()
            raise
        return log

    def segments(self) -> list[tuple[int, str]]:
        """``(first seq, file name)`` of every segment, in order."""
        found = []
        for name in os.listdir(self.directory):
            match = _SEGMENT_NAME.match(name)
            if match:
                found.append((int(match.group(1)), name))
        return sorted(found)

    def _recover_tail(self) -> None:
        segments = self.segments()
        if not segments:
            return
        # Walk back to the last segment that holds a record; only the very last may be torn.
        for index in range(len(segments) - 1, -1, -1):
            first_seq, name = segments[index]
            last = index == len(segments) - 1
            scan = SegmentScan(
                name, self._read(name), first_seq=first_seq, prev_hash=None, last=last
            )
            frame = None
            for frame in scan:  # noqa: B007 - we want the final frame
                pass
            if scan.torn_at is not None:
                self._cut(name, scan.torn_at)
            if frame is not None:
                h = frame.header
                self.head = Head(h.seq, frame.hash, h.timestamp)
                self.head_hint = frame.hint
                break
        expected = self.head.seq + 1
        last_is_empty = frame is None or index != len(segments) - 1
        if last_is_empty and segments[-1][0] != expected:
            # An empty last segment must be the one the next record belongs in.
            raise _missing(expected, segments[-1])

    def _cut(self, name: str, offset: int) -> None:
        """Drop a torn tail: it was never acknowledged, since acknowledgement follows fsync."""
        path = self.directory / name
        with open(path, "r+b") as f:
            f.truncate(offset)
            if offset == 0:
                f.write(SEGMENT_MAGIC)
            os.fsync(f.fileno())

    def _read(self, name: str, offset: int = 0) -> bytes:
        with open(self.directory / name, "rb") as f:
            f.seek(offset)
            return f.read()

    # ---- reading -------------------------------------------------------------------------

    def frames(self, start: int = 1, hint: int = NO_HINT) -> Iterator[Frame]:
        """Well-formed frames from seq ``start`` on, without decrypting.

        The hash chain is checked from ``start`` on; from seq 1 that covers the whole log.
        ``hint``, one that record ``start`` came with, skips reading the records before it
        in its segment. A reader stops quietly at an incomplete record at the very end: a
        writer may be in the middle of appending it (``torn_tail`` says so).
        """
        self.torn_tail = None
        segments = self.segments()
        if not segments:
            return
        firsts = [first for first, _ in segments]
        index = max(bisect.bisect_right(firsts, start) - 1, 0)
        expected = firsts[index]
        prev: bytes | None = GENESIS_HASH if expected == 1 else None
        base = 0
        place = read_hint(hint)
        if place is not None and place[0] == segments[index][1] and place[1] > len(SEGMENT_MAGIC):
            expected, prev, base = start, None, place[1]
        reader, newest = self._lock is None, None
        try:
            for i in range(index, len(segments)):
                first_seq, name = segments[i]
                if base:
                    first_seq = start
                if first_seq != expected:
                    raise _missing(expected, segments[i])
                scan = SegmentScan(
                    name,
                    self._read(name, base),
                    first_seq=first_seq,
                    prev_hash=prev,
                    last=i == len(segments) - 1,
                    base=base,
                )
                base = 0
                for frame in scan:
                    prev = frame.hash
                    expected = frame.header.seq + 1
                    if expected > start:
                        newest = frame
                        yield frame
                if scan.torn_at is not None:
                    self.torn_tail = TornTail(expected, f"segment {name} at offset {scan.torn_at}")
        finally:  # a reader's head moves on to the newest record it has seen, never back
            if reader and newest is not None and newest.header.seq > self.head.seq:
                h = newest.header
                self.head, self.head_hint = Head(h.seq, newest.hash, h.timestamp), newest.hint

    def frame(self, seq: int, hint: int = NO_HINT) -> Frame:
        """Record ``seq`` read on its own, checked as a scan checks it but for its link to
        the record before (decrypting it then checks the header is authentic). A hint that
        does not lead to it is passed over: the record is looked for by seq."""
        place = read_hint(hint)
        if place is not None:
            with contextlib.suppress(CorruptionError, OSError):  # a stale hint: by seq
                return self._frame_at(*place, seq)
        segments = self.segments()
        firsts = [first for first, _ in segments]
        index = bisect.bisect_right(firsts, seq) - 1
        if seq < 1 or index < 0:
            raise MissingRecordError(f"the log holds no record {seq}")
        first_seq, name = segments[index]
        scan = SegmentScan(
            name,
            self._read(name),
            first_seq=first_seq,
            prev_hash=None,
            last=index == len(segments) - 1,
        )
        for frame in scan:
            if frame.header.seq == seq:
                return frame
        raise MissingRecordError(f"the log holds no record {seq}")

    def _frame_at(self, segment: str, offset: int, seq: int) -> Frame:
        with open(self.directory / segment, "rb") as f:
            f.seek(offset)
            prefix = f.read(PREFIX.size)
            length = PREFIX.unpack(prefix)[0] if len(prefix) == PREFIX.size else 0
            data = prefix + f.read(length)
        where = make_hint(segment_first_seq(segment), offset)
        return parse(data, segment=segment, offset=offset, hint=where, seq=seq)

    # ---- writing -------------------------------------------------------------------------

    def write(self, bodies: Sequence[bytes]) -> list[Record]:
        """Write records after the head without waiting for the disk; ``sync`` makes them
        durable. Safe to call from several threads: records are written in seq order."""
        if self._lock is None:
            raise StoreError("the log was opened read-only")
        with self._cond:
            self._check_broken()
            if not bodies:
                return []
            if self._fd is None or self._segment_size >= SEGMENT_BYTES:
                self._open_segment()
            first, start = segment_first_seq(self._segment_name), self._segment_size
            raws, placed, head = seal_batch(
                self.keyring,
                bodies,
                self.head,
                time.time_ns(),
                lambda seq, offset: make_hint(first, start + offset),
            )
            data = b"".join(raws)
            assert self._fd is not None
            try:
                write_all(self._fd, data)
            except OSError as exc:
                with contextlib.suppress(OSError):  # leave no partial record behind if we can
                    os.ftruncate(self._fd, self._segment_size)
                self._fail_writes(exc)
            self.head_hint = placed[-1].hint
            self._segment_size += len(data)
            self.head = head
            return placed

    def sync(self, seq: int) -> None:
        """Return once every record up to ``seq`` is on disk.

        Group commit: one thread at a time runs fdatasync for everything written so far,
        and every writer arriving meanwhile waits at a gate of its own. When the sync ends,
        the gates of those it made durable open, and the first of the rest leads the next
        one: a waiter wakes once, not once per sync. A failed fsync makes the log
        read-only for good: the kernel may already have dropped the dirty pages, so
        retrying could report success for data that never reached the disk.
        """
        with self._cond:
            try:
                while self._durable_seq < seq:
                    self._check_broken()
                    if self._syncing:
                        gate = threading.Lock()
                        gate.acquire()
                        self._waiting.append((seq, gate))
                        self._cond.release()
                        gate.acquire()  # opened once ``seq`` is durable, or to lead
                        self._cond.acquire()
                    else:
                        self._lead_sync()
            finally:
                if self._waiting and not self._syncing:
                    self._open_gates(everyone=self._broken is not None)

    def _lead_sync(self) -> None:
        """One fdatasync of all written so far (``self._cond`` held, released meanwhile)."""
        fd = self._fd
        if fd is None:  # nothing was ever written through this log
            raise StoreError("nothing to sync: no segment is open")
        self._syncing, target = True, self.head
        size, target_hint = self._segment_size, self.head_hint
        self._cond.release()
        try:
            os.fdatasync(fd)
        except OSError as exc:
            error: OSError | None = exc
        else:
            error = None
        finally:
            self._cond.acquire()
            self._syncing = False
            self._cond.notify_all()  # a segment change waiting for this sync
        if error is None:
            self._durable_seq, self._durable_head = target.seq, target
            self._durable_size, self._durable_hint = size, target_hint
        else:
            # Take back what was not acknowledged, so no reader ever sees it.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._durable_size)
            self.head, self._segment_size = self._durable_head, self._durable_size
            self.head_hint = self._durable_hint
            self._fail_writes(error)

    def _open_gates(self, everyone: bool) -> None:
        """Wake the waiters now durable (all of them once the log is broken), and the
        first of the others, to lead the next sync (``self._cond`` held, no sync running)."""
        rest = []
        for seq, gate in self._waiting:
            if everyone or seq <= self._durable_seq:
                gate.release()
            else:
                rest.append((seq, gate))
        if rest:
            rest.pop(0)[1].release()
        self._waiting = rest

    def _check_broken(self) -> None:
        if self._broken:
            raise ReadOnlyError(f"store is read-only after an earlier failure: {self._broken}")

    def _fail_writes(self, exc: OSError) -> None:
        self._broken = exc.strerror or str(exc)
        raise ReadOnlyError(
            f"could not write to the log ({self._broken}); nothing was recorded"
        ) from None

    def _open_segment(self) -> None:
        """Open the last segment for appending, or start a new one when it is full."""
        if self._fd is not None:  # the current segment is full: make it durable, close it
            while self._syncing:
                self._cond.wait()
            self._check_broken()
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                self._fail_writes(exc)
            self._durable_seq, self._durable_head = self.head.seq, self.head
            self._durable_hint = self.head_hint
            self._open_gates(everyone=False)
            os.close(self._fd)
            self._fd = None
        else:
            segments = self.segments()
            if segments:
                path = self.directory / segments[-1][1]
                size = path.stat().st_size
                if size < SEGMENT_BYTES:
                    self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                    self._segment_size = self._durable_size = size
                    self._segment_name = path.name
                    return
        path = self.directory / segment_name(self.head.seq + 1)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                write_all(fd, SEGMENT_MAGIC)
                os.fsync(fd)
                fsync_dir(self.directory)
            except OSError:
                os.close(fd)
                raise
        except OSError as exc:
            self._broken = exc.strerror or str(exc)
            raise ReadOnlyError(f"could not create a log segment ({self._broken})") from None
        self._fd, self._segment_size = fd, len(SEGMENT_MAGIC)
        self._durable_size, self._segment_name = self._segment_size, path.name

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _missing(expected: int, segment: tuple[int, str]) -> CorruptionError:
    first_seq, name = segment
    return CorruptionError(
        f"expected seq {expected} but segment starts at {first_seq}",
        segment=name,
        offset=0,
        seq=expected,
        kind="missing records",
    )
