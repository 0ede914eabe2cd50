"""The append-only log: numbered segment files of records, one writer, many readers."""

from __future__ import annotations

import bisect
import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import NamedTuple

from google_crc32c import value as crc32c

from eventstore.crypto import SealError
from eventstore.errors import CorruptionError, ReadOnlyError, StoreError
from eventstore.files import fsync_dir, write_all
from eventstore.keyring import Keyring
from eventstore.lock import WriterLock
from eventstore.record import (
    GENESIS_HASH,
    HEADER,
    MIN_PAYLOAD,
    PREFIX,
    VERSION,
    Header,
    Record,
    checksum_ok,
    encode,
    record_hash,
)

SEGMENT_MAGIC = b"VLSEG001"
SEGMENT_BYTES = 64 << 20
_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}.seg"


def segment_first_seq(name: str) -> int:
    """The seq a segment file starts at, from its name."""
    return int(name[:20])


@dataclass(frozen=True, slots=True)
class Head:
    """The last record's seq and hash: what an operator writes down to detect rewriting."""

    seq: int
    hash: bytes
    timestamp: int = 0

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash.hex()}"


class Frame(NamedTuple):
    """One well-formed record found on disk, not yet decrypted."""

    segment: str
    offset: int
    end: int
    header: Header
    payload: bytes
    hash: bytes


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
            header = Header._make(HEADER.unpack_from(payload))
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
            yield Frame(self.name, base + pos, base + end, header, payload, prev)
            seq += 1
            pos = end


class FileLog:
    """The log in one directory. Readers open it freely; ``open_writer`` takes the lock."""

    def __init__(self, directory: Path, keyring: Keyring) -> None:
        self.directory = directory
        self.keyring = keyring
        self._lock: WriterLock | None = None
        self._fd: int | None = None
        self._segment_size = 0
        self._broken: str | None = None
        self.head = Head(0, GENESIS_HASH)
        # (segment, offset, seq) of an incomplete last record the last read stopped at
        self.torn_tail: tuple[str, int, int] | None = None
        self._cond = threading.Condition()  # guards writing, the head and group commit
        self._syncing = False
        self._durable_seq = 0
        self._durable_head = self.head
        # (segment, offset) where the head record starts, for snapshots to resume from
        self.head_at: tuple[str, int] | None = None
        self._durable_at: tuple[str, int] | None = None
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
            log._durable_at = log.head_at
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
                self.head_at = (frame.segment, frame.offset)
                break
        expected = self.head.seq + 1
        last_is_empty = frame is None or index != len(segments) - 1
        if last_is_empty and segments[-1][0] != expected:
            # An empty last segment must be the one the next record belongs in.
            raise CorruptionError(
                f"missing records: expected seq {expected} but segment starts at {segments[-1][0]}",
                segment=segments[-1][1],
                offset=0,
                seq=expected,
                kind="missing records",
            )

    def _cut(self, name: str, offset: int) -> None:
        """Drop a torn tail: it was never acknowledged, since acknowledgement follows fsync."""
        path = self.directory / name
        if offset == 0:
            with open(path, "r+b") as f:
                f.truncate(0)
                f.write(SEGMENT_MAGIC)
                os.fsync(f.fileno())
            return
        with open(path, "r+b") as f:
            f.truncate(offset)
            os.fsync(f.fileno())

    def _read(self, name: str, offset: int = 0) -> bytes:
        with open(self.directory / name, "rb") as f:
            f.seek(offset)
            return f.read()

    # ---- reading -------------------------------------------------------------------------

    def frames(self, start: int = 1, at: tuple[str, int] | None = None) -> Iterator[Frame]:
        """Well-formed frames from seq ``start`` on, without decrypting.

        The hash chain is checked from ``start`` on; from seq 1 that covers the whole log.
        ``at`` (segment, offset), where record ``start`` is said to begin, skips reading the
        records before it; the caller checks the first frame is the one it expected.
        A reader stops quietly at an incomplete record at the very end: a writer may be
        in the middle of appending it.
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
        if at is not None and at[0] == segments[index][1] and at[1] > len(SEGMENT_MAGIC):
            expected, prev, base = start, None, at[1]
        for i in range(index, len(segments)):
            first_seq, name = segments[i]
            if base:
                first_seq = start
            if first_seq != expected:
                raise CorruptionError(
                    f"missing records: expected seq {expected} but segment starts at {first_seq}",
                    segment=name,
                    offset=0,
                    seq=expected,
                    kind="missing records",
                )
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
                if frame.header.seq >= start:
                    yield frame
            if scan.torn_at is not None:
                self.torn_tail = (name, scan.torn_at, expected)

    def open_frame(self, frame: Frame) -> Record:
        """Decrypt one frame under its key term."""
        h = frame.header
        try:
            sealer = self.keyring.barrier(h.term)
            payload = frame.payload
            body = sealer.open(payload[HEADER.size :], payload[: HEADER.size])
        except SealError:
            raise CorruptionError(
                "record fails authentication (wrong key or altered bytes)",
                segment=frame.segment,
                offset=frame.offset,
                seq=h.seq,
                kind="authentication failure",
            ) from None
        return Record(h.seq, h.timestamp, h.term, body, (frame.segment, frame.offset))

    def frame_at(self, segment: str, offset: int, seq: int) -> Frame:
        """Record ``seq``, said to start at ``offset`` of ``segment``, read on its own and
        checked as a scan checks it, except for the hash chain: that needs the records
        before it (decrypting it then checks the header is authentic)."""

        def wrong(what: str) -> CorruptionError:
            return CorruptionError(what, segment=segment, offset=offset, seq=seq)

        if not _SEGMENT_NAME.match(segment) or offset < len(SEGMENT_MAGIC):
            raise wrong("no record can start there")
        try:
            with open(self.directory / segment, "rb") as f:
                f.seek(offset)
                prefix = f.read(PREFIX.size)
                length = PREFIX.unpack(prefix)[0] if len(prefix) == PREFIX.size else 0
                data = prefix + f.read(length)
        except FileNotFoundError:
            raise wrong("no such segment") from None
        scan = SegmentScan(segment, data, first_seq=seq, prev_hash=None, last=False, base=offset)
        for frame in scan:
            return frame
        raise wrong("no record starts there")

    def records(self, start: int = 1) -> Iterator[Record]:
        """Decrypted records from seq ``start`` on; tracks the head as it goes."""
        for frame in self.frames(start):
            record = self.open_frame(frame)
            if self._lock is None:
                self.head = Head(record.seq, frame.hash, record.timestamp)
            yield record

    # ---- writing -------------------------------------------------------------------------

    def append(self, bodies: Sequence[bytes]) -> list[Record]:
        """Append records durably: they are acknowledged (returned) only after fsync."""
        records = self.write(bodies)
        if records:
            self.sync(records[-1].seq)
        return records

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
            keyring, term = self.keyring, self.keyring.term
            sealer = keyring.barrier(term)
            timestamp = max(time.time_ns(), self.head.timestamp)
            seq, prev = self.head.seq, self.head.hash
            chunks, records = [], []
            name, offset = self._segment_name, self._segment_size
            for body in bodies:
                seq += 1
                raw = encode(
                    body, seq=seq, timestamp=timestamp, term=term, prev_hash=prev, sealer=sealer
                )
                prev = record_hash(raw)
                chunks.append(raw)
                records.append(Record(seq, timestamp, term, body, (name, offset)))
                offset += len(raw)
            data = b"".join(chunks)
            assert self._fd is not None
            try:
                write_all(self._fd, data)
            except OSError as exc:
                with contextlib.suppress(OSError):  # leave no partial record behind if we can
                    os.ftruncate(self._fd, self._segment_size)
                self._fail_writes(exc)
            self.head_at = (self._segment_name, self._segment_size + len(data) - len(chunks[-1]))
            self._segment_size += len(data)
            self.head = Head(seq, prev, timestamp)
            return records

    def sync(self, seq: int) -> None:
        """Return once every record up to ``seq`` is on disk.

        Group commit: one thread at a time runs fdatasync for everything written so far,
        and every writer waiting meanwhile is served by the next one. A failed fsync makes
        the log read-only for good: the kernel may already have dropped the dirty pages,
        so retrying could report success for data that never reached the disk.
        """
        with self._cond:
            while self._durable_seq < seq:
                self._check_broken()
                if self._syncing:
                    self._cond.wait()
                    continue
                fd = self._fd
                if fd is None:  # nothing was ever written through this log
                    raise StoreError("nothing to sync: no segment is open")
                self._syncing, target = True, self.head
                size, target_at = self._segment_size, self.head_at
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
                    self._cond.notify_all()
                if error is not None:
                    # Take back what was not acknowledged, so no reader ever sees it.
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, self._durable_size)
                    self.head, self._segment_size = self._durable_head, self._durable_size
                    self.head_at = self._durable_at
                    self._fail_writes(error)
                self._durable_seq, self._durable_head = target.seq, target
                self._durable_size, self._durable_at = size, target_at

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
            self._durable_at = self.head_at
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
