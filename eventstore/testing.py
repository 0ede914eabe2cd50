"""The log's contract, written once and run against every storage (test code, not runtime).

As eventsourcing ships ``ApplicationRecorderTestCase``: ``LogContract`` holds the tests; a
subclass per storage (``tests/test_log_contract.py`` for files and memory, PostgreSQL
later) supplies the fixtures that open logs on one storage and inject the faults only that
storage knows how to cause. Importing this module needs pytest; vaultlog itself never does.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from eventstore.errors import (
    CorruptionError,
    MissingRecordError,
    ReadOnlyError,
    StoreError,
    StoreLockedError,
)
from eventstore.interface import LogReader, LogWriter
from eventstore.keyring import Keyring
from eventstore.record import GENESIS_HASH

OpenLog = Callable[[], tuple[LogWriter, LogReader]]
"""Opens a fresh ``(writer, reader)`` pair on the test's one storage; call again to reopen."""

OpenWriter = Callable[[float], LogWriter]
"""Opens a second writer on the same storage, waiting at most the given seconds."""

OpenReader = Callable[[Keyring], LogReader]
"""Opens a reader on the same storage with another keyring."""

SetClock = Callable[[int], None]
"""Makes the log's wall clock read the given unix nanoseconds from now on."""


@dataclass
class Syncs:
    """The storage's durable syncs (fsync, commit): how many were asked for, whether they
    fail (as an fsync that reports EIO), and how long each takes (to make writers wait)."""

    calls: int = 0
    failing: bool = False
    delay: float = 0.0


def bodies_of(log: LogReader, start: int = 1) -> list[bytes]:
    return [record.body for record in log.records(start)]


class LogContract:
    """What every log must do. Subclasses provide the fixtures below."""

    @pytest.fixture
    def make_log(self) -> OpenLog:
        raise NotImplementedError("a storage's test class provides make_log")

    @pytest.fixture
    def second_writer(self) -> OpenWriter:
        raise NotImplementedError("a storage's test class provides second_writer")

    @pytest.fixture
    def foreign_reader(self) -> OpenReader:
        raise NotImplementedError("a storage's test class provides foreign_reader")

    @pytest.fixture
    def syncs(self) -> Syncs:
        raise NotImplementedError("a storage's test class provides syncs")

    @pytest.fixture
    def clock(self) -> SetClock:
        raise NotImplementedError("a storage's test class provides clock")

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

    def test_read_one_record_by_seq_with_or_without_its_hint(self, make_log: OpenLog) -> None:
        writer, reader = make_log()
        appended = writer.append([b"r%d" % i for i in range(1, 8)])
        for record in appended:
            assert reader.record(record.seq) == record
            assert reader.record(record.seq, record.hint) == record
            assert reader.frame(record.seq).header.seq == record.seq
        # A hint is only a hint: one that leads elsewhere is passed over.
        assert reader.record(5, appended[1].hint) == appended[4]
        for seq in (0, 8, 10**6):
            with pytest.raises(MissingRecordError):
                reader.record(seq)

    def test_scan_from_a_seq_with_its_hint(self, make_log: OpenLog) -> None:
        writer, reader = make_log()
        appended = writer.append([b"s%d" % i for i in range(1, 11)])
        for record in appended:
            assert list(reader.records(record.seq, record.hint)) == appended[record.seq - 1 :]
        assert list(reader.records(11)) == []

    def test_header_scans_need_no_key(self, make_log: OpenLog, foreign_reader: OpenReader) -> None:
        writer, _ = make_log()
        appended = writer.append([b"h1", b"h2", b"h3"])
        stranger = foreign_reader(Keyring.create())
        frames = list(stranger.frames())
        assert [(f.header.seq, f.header.timestamp) for f in frames] == [
            (r.seq, r.timestamp) for r in appended
        ]
        assert [f.header.seq for f in stranger.frames(2)] == [2, 3]

    def test_a_record_that_fails_authentication_raises_corruption(
        self, make_log: OpenLog, foreign_reader: OpenReader
    ) -> None:
        writer, _ = make_log()
        writer.append([b"secret"])
        stranger = foreign_reader(Keyring.create())
        with pytest.raises(CorruptionError) as raised:
            list(stranger.records())
        assert raised.value.seq == 1 and raised.value.kind == "authentication failure"
        with pytest.raises(CorruptionError):
            stranger.record(1)

    def test_reopen_keeps_head_and_chain(self, make_log: OpenLog) -> None:
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
        frames = list(reader.frames())
        assert frames[3].header.prev_hash == frames[2].hash == head.hash
        for previous, frame in zip([None, *frames], frames, strict=False):
            assert frame.header.prev_hash == (previous.hash if previous else GENESIS_HASH)

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

    def test_group_commit_from_several_threads(self, make_log: OpenLog, syncs: Syncs) -> None:
        writer, reader = make_log()
        writer.append([b"start"])
        syncs.calls, syncs.delay = 0, 0.005  # a slow disk, so writers queue behind a sync
        threads, per_thread, errors = 8, 10, []

        def work(n: int) -> None:
            try:
                for i in range(per_thread):
                    [record] = writer.write([b"t%d-%d" % (n, i)])
                    writer.sync(record.seq)
                    assert reader.record(record.seq).body == b"t%d-%d" % (n, i)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert errors == []
        records = list(reader.records())
        assert [r.seq for r in records] == list(range(1, threads * per_thread + 2))
        expected = {b"t%d-%d" % (n, i) for n in range(threads) for i in range(per_thread)}
        assert {r.body for r in records[1:]} == expected
        # Each thread's records are in its own order, and syncs were shared.
        for n in range(threads):
            mine = [r.body for r in records if r.body.startswith(b"t%d-" % n)]
            assert mine == [b"t%d-%d" % (n, i) for i in range(per_thread)]
        assert 0 < syncs.calls < threads * per_thread

    def test_a_failed_group_commit_fails_every_waiter(
        self, make_log: OpenLog, syncs: Syncs
    ) -> None:
        writer, reader = make_log()
        writer.append([b"start"])
        syncs.delay, syncs.failing = 0.02, True  # writers queue behind a sync that fails
        refused: list[int] = []

        def work(n: int) -> None:
            with contextlib.suppress(ReadOnlyError):
                [record] = writer.write([b"w%d" % n])
                writer.sync(record.seq)
                return
            refused.append(n)

        workers = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=10)
        assert not [w for w in workers if w.is_alive()], "a waiter was never woken"
        assert sorted(refused) == list(range(8))
        assert bodies_of(reader) == [b"start"]

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
            reader.append([b"not allowed"])  # type: ignore[attr-defined]
        assert bodies_of(reader) == [b"a"]
        assert writer.append([b"b"])[0].seq == 2

    def test_a_second_writer_waits_then_gives_up(
        self, make_log: OpenLog, second_writer: OpenWriter
    ) -> None:
        writer, reader = make_log()
        writer.append([b"mine"])
        with pytest.raises(StoreLockedError):
            second_writer(0.05)
        writer.close()
        other = second_writer(1.0)
        assert [r.seq for r in other.append([b"theirs"])] == [2]
        assert bodies_of(reader) == [b"mine", b"theirs"]
        other.close()

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
