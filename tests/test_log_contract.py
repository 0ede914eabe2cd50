"""The log's behaviour, written once as a contract and run against every storage back end.

As eventsourcing's ``AggregateRecorderTestCase``: ``LogContract`` holds the tests; a subclass
per back end (``TestFileLog`` now, PostgreSQL later) supplies the fixtures that open logs on
one storage and inject the faults only that back end knows how to cause.
"""

from __future__ import annotations

import errno
import os
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

import eventstore.log
from eventstore import FileLog, Head, Keyring, ReadOnlyError, Record, StoreError
from eventstore.lock import WriterLock
from eventstore.log import segment_name
from eventstore.record import GENESIS_HASH


class Log(Protocol):
    head: Head

    def append(self, bodies: Sequence[bytes]) -> list[Record]: ...

    def records(self, start: int = 1) -> Iterator[Record]: ...

    def close(self) -> None: ...


OpenLog = Callable[[], tuple[Log, Log]]
"""Opens a fresh ``(writer, reader)`` pair on the test's one storage; call again to reopen."""

SetClock = Callable[[int], None]
"""Makes the log's wall clock read the given unix nanoseconds from now on."""


@dataclass
class Syncs:
    """The storage's durable syncs (fsync, commit): how many were asked for, and whether
    they fail (as an fsync that reports EIO)."""

    calls: int = 0
    failing: bool = False


def bodies_of(log: Log, start: int = 1) -> list[bytes]:
    return [record.body for record in log.records(start)]


class LogContract:
    """What every log must do. Subclasses provide ``make_log``, ``syncs`` and ``clock``."""

    @pytest.fixture
    def make_log(self) -> OpenLog:
        raise NotImplementedError("a storage back end's test class provides make_log")

    @pytest.fixture
    def syncs(self) -> Syncs:
        raise NotImplementedError("a storage back end's test class provides syncs")

    @pytest.fixture
    def clock(self) -> SetClock:
        raise NotImplementedError("a storage back end's test class provides clock")

    def test_append_returns_contiguous_seqs_from_1(self, make_log: OpenLog) -> None:
        writer, _ = make_log()
        assert writer.head.seq == 0
        assert [r.seq for r in writer.append([b"a"])] == [1]
        assert [r.seq for r in writer.append([b"b", b"c", b"d"])] == [2, 3, 4]
        assert [r.seq for r in writer.append([b"e"])] == [5]
        assert writer.append([]) == []
        assert writer.head.seq == 5

    def test_records_round_trip_bodies(self, make_log: OpenLog) -> None:
        writer, reader = make_log()
        bodies = [b"", bytes(range(256)), b"x" * 100_000, "h\u00e9llo \u2603".encode(), b"\0" * 7]
        appended = (
            writer.append(bodies[:2]) + writer.append(bodies[2:3]) + writer.append(bodies[3:])
        )
        assert [r.body for r in appended] == bodies
        assert list(reader.records()) == appended
        assert list(writer.records()) == appended
        assert list(reader.records(3)) == appended[2:]

    def test_reopen_keeps_head(self, make_log: OpenLog) -> None:
        writer, _ = make_log()
        writer.append([b"one", b"two"])
        writer.append([b"three"])
        head = writer.head
        assert head.seq == 3 and head.hash != GENESIS_HASH
        writer.close()

        writer, reader = make_log()
        assert writer.head == head
        assert bodies_of(reader) == [b"one", b"two", b"three"]
        assert reader.head == head
        assert [r.seq for r in writer.append([b"four"])] == [4]

    def test_timestamps_never_go_backwards(self, make_log: OpenLog, clock: SetClock) -> None:
        now = 1_700_000_000 * 10**9
        writer, reader = make_log()
        clock(now)
        first = writer.append([b"a"])[0]
        assert first.timestamp == now
        clock(now - 10**9)  # the clock steps back a second (NTP, a VM restored)
        assert writer.append([b"b"])[0].timestamp >= now
        writer.close()

        writer, reader = make_log()
        clock(now - 3600 * 10**9)  # and an hour back across a reopen
        assert writer.append([b"c", b"d"])[0].timestamp >= now
        clock(now + 5)
        assert writer.append([b"e"])[0].timestamp == now + 5
        stamps = [r.timestamp for r in reader.records()]
        assert stamps == sorted(stamps) and len(stamps) == 5

    def test_batch_append_is_one_durable_unit(self, make_log: OpenLog, syncs: Syncs) -> None:
        writer, reader = make_log()
        writer.append([b"first"])
        syncs.calls = 0
        records = writer.append([b"b%d" % i for i in range(5)])
        assert [r.seq for r in records] == [2, 3, 4, 5, 6]
        assert syncs.calls == 1
        assert bodies_of(reader) == [b"first"] + [b"b%d" % i for i in range(5)]

    def test_reader_sees_records_appended_after_it_was_created(self, make_log: OpenLog) -> None:
        writer, reader = make_log()
        assert list(reader.records()) == []
        writer.append([b"a", b"b"])
        assert bodies_of(reader) == [b"a", b"b"]
        writer.append([b"c"])
        assert bodies_of(reader) == [b"a", b"b", b"c"]
        assert bodies_of(reader, 3) == [b"c"]
        assert reader.head == writer.head

    def test_append_on_a_reader_raises(self, make_log: OpenLog) -> None:
        writer, reader = make_log()
        writer.append([b"a"])
        with pytest.raises(StoreError):
            reader.append([b"not allowed"])
        assert bodies_of(reader) == [b"a"]
        assert writer.append([b"b"])[0].seq == 2

    def test_failed_sync_makes_the_log_read_only_for_good(
        self, make_log: OpenLog, syncs: Syncs
    ) -> None:
        writer, reader = make_log()
        writer.append([b"a", b"b"])
        head = writer.head

        syncs.failing = True
        with pytest.raises(ReadOnlyError):
            writer.append([b"lost-1", b"lost-2"])
        asked = syncs.calls
        syncs.failing = False  # the disk would accept a retry now: the log must not try
        for _ in range(3):
            with pytest.raises(ReadOnlyError):
                writer.append([b"after"])
        assert syncs.calls == asked
        assert writer.head == head
        assert bodies_of(reader) == [b"a", b"b"]
        writer.close()

        writer, reader = make_log()
        assert writer.head == head
        assert bodies_of(reader) == [b"a", b"b"]
        assert [r.seq for r in writer.append([b"c"])] == [3]
        assert bodies_of(reader) == [b"a", b"b", b"c"]


class TestFileLog(LogContract):
    @pytest.fixture
    def directory(self, tmp_path: Path) -> Path:
        directory = tmp_path / "log"
        directory.mkdir(mode=0o700)
        return directory

    @pytest.fixture
    def make_log(self, directory: Path) -> Iterator[OpenLog]:
        keyring = Keyring.create()
        opened: list[FileLog] = []

        def open_log() -> tuple[Log, Log]:
            lock = WriterLock(directory)
            lock.acquire(timeout=5)
            writer = FileLog.open_writer(directory, keyring, lock)
            opened.append(writer)
            return writer, FileLog(directory, keyring)

        yield open_log
        for writer in opened:
            writer.close()

    @pytest.fixture
    def syncs(self, monkeypatch: pytest.MonkeyPatch) -> Syncs:
        counted = Syncs()
        real_fdatasync = os.fdatasync

        def fdatasync(fd: int) -> None:
            counted.calls += 1
            if counted.failing:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real_fdatasync(fd)

        monkeypatch.setattr(os, "fdatasync", fdatasync)
        return counted

    @pytest.fixture
    def clock(self, monkeypatch: pytest.MonkeyPatch) -> SetClock:
        def set_clock(ns: int) -> None:
            # Only the log's view of ``time`` changes, not the test runner's.
            monkeypatch.setattr(eventstore.log, "time", types.SimpleNamespace(time_ns=lambda: ns))

        return set_clock

    def test_segment_rollover_keeps_seq_contiguous_and_the_chain_whole(
        self, make_log: OpenLog, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(eventstore.log, "SEGMENT_BYTES", 512)
        writer, reader = make_log()
        bodies = [b"record %02d " % i + b"." * (i * 7 % 40) for i in range(40)]
        for start in range(0, 30, 3):
            writer.append(bodies[start : start + 3])
        for body in bodies[30:]:
            writer.append([body])

        assert isinstance(reader, FileLog)
        segments = reader.segments()
        assert len(segments) >= 4
        frames = list(reader.frames())
        assert [f.header.seq for f in frames] == list(range(1, 41))
        # Each segment is named by its first seq, which follows the previous segment's last.
        firsts = {name: first for first, name in segments}
        for previous, frame in zip([None, *frames], frames, strict=False):
            if previous is None or previous.segment != frame.segment:
                assert frame.segment == segment_name(frame.header.seq)
                assert firsts[frame.segment] == frame.header.seq
            assert frame.header.prev_hash == (previous.hash if previous else GENESIS_HASH)
        assert {f.segment for f in frames} == {name for _, name in segments}
        assert bodies_of(reader) == bodies
        assert bodies_of(reader, 25) == bodies[24:]

        head = writer.head
        writer.close()
        writer, reader = make_log()
        assert writer.head == head == Head(40, frames[-1].hash, frames[-1].header.timestamp)
        assert [r.seq for r in writer.append([b"after reopen"] * 3)] == [41, 42, 43]
        assert bodies_of(reader) == [*bodies, *[b"after reopen"] * 3]
