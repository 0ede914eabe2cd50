"""The log contract on PostgreSQL, and what only a shared database has: several writers
in several processes, each appending optimistically at its head + 1."""

from __future__ import annotations

import subprocess
import sys
import time
import types
from collections.abc import Iterator

import psycopg
import pytest

import eventstore.postgres
from eventstore import Keyring, PostgresLog, PostgresStorage, UnavailableError
from eventstore.interface import LogReader, LogWriter
from eventstore.testing import LogContract, OpenLog, OpenReader, OpenWriter, SetClock, Syncs


class TestPostgresLog(LogContract):
    @pytest.fixture
    def storage(self, pg_url: str) -> PostgresStorage:
        return PostgresStorage(pg_url)

    @pytest.fixture
    def keyring(self) -> Keyring:
        return Keyring.create()

    @pytest.fixture
    def second_writer(self, storage: PostgresStorage, keyring: Keyring) -> Iterator[OpenWriter]:
        opened: list[PostgresLog] = []

        def open_writer(timeout: float) -> LogWriter:
            writer = PostgresLog.open_writer(storage, keyring, timeout=timeout)
            opened.append(writer)
            return writer

        yield open_writer
        for writer in opened:
            writer.close()

    @pytest.fixture
    def make_log(
        self, storage: PostgresStorage, keyring: Keyring, second_writer: OpenWriter
    ) -> Iterator[OpenLog]:
        readers: list[PostgresLog] = []

        def open_log() -> tuple[LogWriter, LogReader]:
            readers.append(PostgresLog(storage, keyring))
            return second_writer(5), readers[-1]

        yield open_log
        for reader in readers:
            reader.close()

    @pytest.fixture
    def foreign_reader(self, storage: PostgresStorage) -> OpenReader:
        return lambda keyring: PostgresLog(storage, keyring)

    @pytest.fixture
    def syncs(self, monkeypatch: pytest.MonkeyPatch) -> Syncs:
        counted = Syncs()
        real_commit = PostgresLog._commit

        def commit(log: PostgresLog, batch: list[tuple[int, bytes]]) -> None:
            counted.calls += 1
            time.sleep(counted.delay)
            if counted.failing:
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            real_commit(log, batch)

        monkeypatch.setattr(PostgresLog, "_commit", commit)
        return counted

    @pytest.fixture
    def clock(self, monkeypatch: pytest.MonkeyPatch) -> SetClock:
        def set_clock(ns: int) -> None:
            monkeypatch.setattr(
                eventstore.postgres,
                "time",
                types.SimpleNamespace(
                    time_ns=lambda: ns, monotonic=time.monotonic, sleep=time.sleep
                ),
            )

        return set_clock

    def test_a_writer_that_lost_the_race_is_done_and_a_reopened_one_catches_up(
        self, storage: PostgresStorage, keyring: Keyring
    ) -> None:
        first = PostgresLog.open_writer(storage, keyring, exclusive=False)
        second = PostgresLog.open_writer(storage, keyring, exclusive=False)
        first.append([b"first wins"])
        with pytest.raises(UnavailableError, match="another writer appended"):
            second.append([b"second loses"])
        with pytest.raises(UnavailableError):
            second.append([b"and stays done"])
        second.close()
        second = PostgresLog.open_writer(storage, keyring, exclusive=False)
        assert second.head == first.head
        assert [r.seq for r in second.append([b"after catching up"])] == [2]
        reader = PostgresLog(storage, keyring)
        assert [r.body for r in reader.records()] == [b"first wins", b"after catching up"]
        for log in (first, second, reader):
            log.close()

    def test_a_database_that_cannot_be_reached_is_one_clear_error(self, keyring: Keyring) -> None:
        storage = PostgresStorage("postgresql://nobody:hunter2@127.0.0.1:9/none", connect_timeout=1)
        with pytest.raises(UnavailableError, match="cannot reach PostgreSQL") as raised:
            PostgresLog.open_writer(storage, keyring)
        assert "hunter2" not in str(raised.value)


WRITER = """
import sys
from eventstore import Keyring, PostgresLog, PostgresStorage, UnavailableError
url, name, count, key = sys.argv[1], sys.argv[2], int(sys.argv[3]), bytes.fromhex(sys.argv[4])
keyring = Keyring.from_bytes(key, bytes(32))
storage = PostgresStorage(url)
log = PostgresLog.open_writer(storage, keyring, exclusive=False)
done = conflicts = 0
while done < count:
    try:
        log.append([f"{name}-{done}".encode()])
        done += 1
    except UnavailableError:
        conflicts += 1
        log.close()
        log = PostgresLog.open_writer(storage, keyring, exclusive=False)
print(conflicts)
"""


def test_two_processes_appending_at_once_leave_no_gap_and_no_fork(
    pg_url: str,
) -> None:
    keyring = Keyring.create()
    sealed = keyring.to_bytes(bytes(32)).hex()
    per_writer = 300
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, pg_url, name, str(per_writer), sealed],
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    conflicts = [int(w.communicate(timeout=120)[0]) for w in writers]
    assert [w.returncode for w in writers] == [0, 0]
    reader = PostgresLog(PostgresStorage(pg_url), keyring)
    records = list(reader.records())  # the chain is checked from seq 1 as it is read
    assert [r.seq for r in records] == list(range(1, 2 * per_writer + 1))
    bodies = [r.body.decode() for r in records]
    for name in ("a", "b"):  # each writer's records, once each, in its own order
        assert [b for b in bodies if b.startswith(name)] == [
            f"{name}-{i}" for i in range(per_writer)
        ]
    reader.close()
    print(f"conflicts caught and retried: {conflicts}")
