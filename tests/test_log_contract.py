"""The log contract (``eventstore.testing.LogContract``) run against both storages, and
what only the file log has: segments."""

from __future__ import annotations

import errno
import os
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import eventstore.log
import eventstore.memory
from eventstore import FileLog, Head, Keyring, MemoryLog, MemoryStorage
from eventstore.interface import LogReader, LogWriter
from eventstore.lock import WriterLock
from eventstore.log import segment_name
from eventstore.record import GENESIS_HASH
from eventstore.testing import (
    LogContract,
    OpenLog,
    OpenReader,
    OpenWriter,
    SetClock,
    Syncs,
    bodies_of,
)


def clock_of(module: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> SetClock:
    def set_clock(ns: int) -> None:
        # Only the log's view of ``time`` changes, not the test runner's.
        monkeypatch.setattr(module, "time", types.SimpleNamespace(time_ns=lambda: ns))

    return set_clock


class TestMemoryLog(LogContract):
    @pytest.fixture
    def storage(self) -> MemoryStorage:
        return MemoryStorage()

    @pytest.fixture
    def keyring(self) -> Keyring:
        return Keyring.create()

    @pytest.fixture
    def make_log(self, storage: MemoryStorage, keyring: Keyring) -> Iterator[OpenLog]:
        opened: list[MemoryLog] = []

        def open_log() -> tuple[LogWriter, LogReader]:
            writer = MemoryLog.open_writer(storage, keyring, timeout=5)
            opened.append(writer)
            return writer, MemoryLog(storage, keyring)

        yield open_log
        for writer in opened:
            writer.close()

    @pytest.fixture
    def second_writer(self, storage: MemoryStorage, keyring: Keyring) -> OpenWriter:
        return lambda timeout: MemoryLog.open_writer(storage, keyring, timeout)

    @pytest.fixture
    def foreign_reader(self, storage: MemoryStorage) -> OpenReader:
        return lambda keyring: MemoryLog(storage, keyring)

    @pytest.fixture
    def syncs(self, storage: MemoryStorage) -> Syncs:
        counted = Syncs()

        def on_sync() -> None:
            counted.calls += 1
            time.sleep(counted.delay)
            if counted.failing:
                raise OSError(errno.EIO, os.strerror(errno.EIO))

        storage.on_sync = on_sync
        return counted

    @pytest.fixture
    def clock(self, monkeypatch: pytest.MonkeyPatch) -> SetClock:
        return clock_of(eventstore.memory, monkeypatch)


class TestFileLog(LogContract):
    @pytest.fixture
    def directory(self, tmp_path: Path) -> Path:
        directory = tmp_path / "log"
        directory.mkdir(mode=0o700)
        return directory

    @pytest.fixture
    def keyring(self) -> Keyring:
        return Keyring.create()

    @pytest.fixture
    def make_log(self, directory: Path, second_writer: OpenWriter, keyring: Keyring) -> OpenLog:
        return lambda: (second_writer(5), FileLog(directory, keyring))

    @pytest.fixture
    def second_writer(self, directory: Path, keyring: Keyring) -> Iterator[OpenWriter]:
        opened: list[FileLog] = []

        def open_writer(timeout: float) -> LogWriter:
            lock = WriterLock(directory)
            lock.acquire(timeout=timeout)
            writer = FileLog.open_writer(directory, keyring, lock)
            opened.append(writer)
            return writer

        yield open_writer
        for writer in opened:
            writer.close()

    @pytest.fixture
    def foreign_reader(self, directory: Path) -> OpenReader:
        return lambda keyring: FileLog(directory, keyring)

    @pytest.fixture
    def syncs(self, monkeypatch: pytest.MonkeyPatch) -> Syncs:
        counted = Syncs()
        real_fdatasync = os.fdatasync

        def fdatasync(fd: int) -> None:
            counted.calls += 1
            time.sleep(counted.delay)
            if counted.failing:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real_fdatasync(fd)

        monkeypatch.setattr(os, "fdatasync", fdatasync)
        return counted

    @pytest.fixture
    def clock(self, monkeypatch: pytest.MonkeyPatch) -> SetClock:
        return clock_of(eventstore.log, monkeypatch)

    def test_segment_rollover_under_group_commit_strands_no_waiter(
        self, make_log: OpenLog, syncs: Syncs, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(eventstore.log, "SEGMENT_BYTES", 600)  # a new segment every few
        writer, reader = make_log()
        syncs.delay = 0.002  # slow enough that writers queue behind each sync
        done: list[int] = []

        def work(n: int) -> None:
            for i in range(15):
                [record] = writer.write([b"t%d-%d" % (n, i)])
                writer.sync(record.seq)
                done.append(record.seq)

        workers = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=30)
        assert not [w for w in workers if w.is_alive()], "a waiter was never woken"
        assert sorted(done) == list(range(1, 91))
        assert len(reader.segments()) > 5
        assert [r.seq for r in reader.records()] == list(range(1, 91))

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
