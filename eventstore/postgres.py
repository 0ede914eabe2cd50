"""The log on PostgreSQL: one table of records, shared by every node of a cluster.

``vaultlog_records`` holds the record codec's bytes by seq (its primary key): the same
records as a file log's, sealed and hash-chained, so migration copies them as they are.
``vaultlog_meta`` holds small named values (the sealed keyring, the seal's shape), each
with a version replaced only by compare-and-swap.

Appends are optimistic: a writer inserts its records at its head + 1. A unique violation
means another writer appended first; seqs therefore stay gapless and the chain unforked
whoever writes. The writer that lost is done (``UnavailableError``): its caller's view of
the log is stale, and it opens the log again, which catches up. A writer opened
``exclusive`` also holds a session advisory lock on the connection it inserts through, so
among exclusive writers (the server's active node) the lock is the rule and the unique
key the proof. Group commit: concurrent writers' records go in one transaction, and one
commit makes them all durable. Each commit notifies ``vaultlog_appended`` with its last
seq, for nodes that follow the log.

A lost connection fails the writes under way (``UnavailableError``, never acknowledged:
a commit whose answer never came may or may not have landed, and the next open reads
what did). Readers reconnect on their own.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from eventstore.errors import (
    CorruptionError,
    MissingRecordError,
    StoreError,
    StoreLockedError,
    UnavailableError,
)
from eventstore.interface import LogBase, TornTail
from eventstore.keyring import Keyring
from eventstore.record import GENESIS_HASH, NO_HINT, Frame, Head, Record, check_link, parse
from eventstore.record import seal_batch as _seal_batch

__all__ = ["CHANNEL", "INIT_LOCK", "WRITER_LOCK", "PostgresLog", "PostgresStorage"]

RECORDS, META = "vaultlog_records", "vaultlog_meta"
CHANNEL = "vaultlog_appended"  # NOTIFY after every commit, with the last seq
WRITER_LOCK = 0x7661756C746C6F67  # "vaultlog": the session advisory lock of the one writer
_SCHEMA_LOCK = WRITER_LOCK + 1
INIT_LOCK = WRITER_LOCK + 2  # held while a node initialises the store
PLACE = "postgresql"  # what error messages name as the place of a record
READ_BATCH = 2000  # records fetched per query while scanning
CONNECT_TIMEOUT = 5  # seconds
_INSERT = (
    f"WITH added AS (INSERT INTO {RECORDS} (seq, raw)"
    " SELECT * FROM unnest(%s::bigint[], %s::bytea[]) RETURNING 1)"
    " SELECT pg_notify(%s, %s) FROM (SELECT 1 FROM added LIMIT 1) AS one"
)
_LAST = f"SELECT seq, raw FROM {RECORDS} ORDER BY seq DESC LIMIT 1"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {RECORDS} (seq bigint PRIMARY KEY, raw bytea NOT NULL);
CREATE TABLE IF NOT EXISTS {META} (
    name text PRIMARY KEY, version bigint NOT NULL, value bytea NOT NULL
);
"""


def _reason(exc: BaseException) -> str:
    """What PostgreSQL or libpq said, on one line (libpq never repeats a password)."""
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


class PostgresStorage:
    """One PostgreSQL database holding a store, by its ``connection_url``."""

    def __init__(self, url: str, *, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.url, self.connect_timeout = url, connect_timeout
        self._schema_ready = False
        self._own = _Reconnecting(self)  # for ``run``

    def __repr__(self) -> str:  # the URL may carry a password: never shown
        return "PostgresStorage(...)"

    def connect(self) -> psycopg.Connection[Any]:
        """A new autocommit connection, the schema made on first use;
        ``UnavailableError`` if the database cannot be reached."""
        try:
            conn = psycopg.connect(
                self.url, autocommit=True, connect_timeout=max(int(self.connect_timeout), 1)
            )
        except psycopg.Error as exc:
            raise UnavailableError(f"cannot reach PostgreSQL: {_reason(exc)}") from None
        if not self._schema_ready:
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                    conn.execute(_SCHEMA)
            except psycopg.Error as exc:
                conn.close()
                raise UnavailableError(f"cannot use PostgreSQL: {_reason(exc)}") from None
            self._schema_ready = True
        return conn

    def run(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement on the storage's own connection; its rows. For small ones:
        metadata, the leader, the lock's state."""
        return self._own.rows(query, params, "PostgreSQL failed")

    @contextlib.contextmanager
    def holding(self, lock: int) -> Iterator[None]:
        """Hold a session advisory lock on the storage's connection meanwhile."""
        self.run("SELECT pg_advisory_lock(%s)", (lock,))
        try:
            yield
        finally:
            with contextlib.suppress(UnavailableError):  # a lost session has dropped it
                self.run("SELECT pg_advisory_unlock(%s)", (lock,))

    def writer_lock_free(self) -> bool:
        """Whether no session holds the writer lock now (a standby's cheap look before it
        tries to take the lock)."""
        rows = self.run(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
            " AND granted AND database = (SELECT oid FROM pg_database"
            " WHERE datname = current_database()) AND classid = %s AND objid = %s)",
            (WRITER_LOCK >> 32, WRITER_LOCK & 0xFFFFFFFF),
        )
        return bool(rows[0][0])

    def close(self) -> None:
        self._own.close()

    # ---- named values, replaced by compare-and-swap ----------------------------------------

    def meta(self, name: str) -> tuple[int, bytes] | None:
        """``(version, value)`` of a named value, or None."""
        rows = self.run(f"SELECT version, value FROM {META} WHERE name = %s", (name,))
        return (int(rows[0][0]), bytes(rows[0][1])) if rows else None

    def swap_meta(self, name: str, value: bytes, expected: int) -> int:
        """Replace ``name`` if its version is still ``expected`` (0: it must not exist);
        the new version. ``StoreError`` if another node changed it first."""
        if expected == 0:
            query = (
                f"INSERT INTO {META} VALUES (%s, 1, %s) ON CONFLICT DO NOTHING RETURNING version"
            )
            params: tuple[Any, ...] = (name, value)
        else:
            query = (
                f"UPDATE {META} SET value = %s, version = version + 1"
                " WHERE name = %s AND version = %s RETURNING version"
            )
            params = (value, name, expected)
        rows = self.run(query, params)
        if not rows:
            raise StoreError(f"the {name} was changed by another node; nothing was saved")
        return int(rows[0][0])

    def set_meta(self, name: str, value: bytes) -> None:
        """Set ``name`` whatever it was (for what only one node writes: the leader)."""
        self.run(
            f"INSERT INTO {META} VALUES (%s, 1, %s) ON CONFLICT (name)"
            f" DO UPDATE SET value = EXCLUDED.value, version = {META}.version + 1",
            (name, value),
        )

    def purge_dead_meta(self) -> None:
        """Rewrite the metadata table so no dead row (an older keyring) stays in it."""
        self.run(f"VACUUM FULL {META}")

    def has_records(self) -> bool:
        return bool(self.run(f"SELECT EXISTS (SELECT 1 FROM {RECORDS})")[0][0])

    def is_empty(self) -> bool:
        """Whether the database holds no store (no record and no named value)."""
        rows = self.run(f"SELECT EXISTS (SELECT 1 FROM {RECORDS}) OR EXISTS (SELECT 1 FROM {META})")
        return not rows[0][0]

    def copy_in(self, rows: Sequence[tuple[int, bytes]]) -> None:
        """Bulk-insert records as they are (migration), in one transaction."""
        conn = self.connect()
        try:
            with (
                conn.transaction(),
                conn.cursor() as cur,
                cur.copy(f"COPY {RECORDS} (seq, raw) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row(row)
        except pg_errors.UniqueViolation:
            raise StoreError("the destination already holds these records") from None
        except psycopg.Error as exc:
            raise UnavailableError(f"PostgreSQL failed: {_reason(exc)}") from None
        finally:
            conn.close()


class _Reconnecting:
    """One connection, made on first use and made again once if it broke, for one
    statement at a time."""

    def __init__(self, storage: PostgresStorage) -> None:
        self.storage = storage
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def rows(self, query: str, params: Sequence[Any], failed: str) -> list[tuple[Any, ...]]:
        with self._lock:
            for attempt in (1, 2):
                if self._conn is None or self._conn.closed:
                    self._conn = self.storage.connect()
                try:
                    cursor = self._conn.execute(query, params)
                    return cursor.fetchall() if cursor.description else []
                except psycopg.OperationalError as exc:
                    self._conn.close()
                    self._conn = None
                    if attempt == 2:
                        raise UnavailableError(f"{failed}: {_reason(exc)}") from None
                except psycopg.Error as exc:
                    raise UnavailableError(f"{failed}: {_reason(exc)}") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class PostgresLog(LogBase):
    """A log over a ``PostgresStorage``: a reader, or with ``open_writer`` a writer."""

    def __init__(self, storage: PostgresStorage, keyring: Keyring) -> None:
        self.storage, self.keyring = storage, keyring
        self.torn_tail: TornTail | None = None  # a transaction is never torn
        self._reads = _Reconnecting(storage)
        self._seen = Head(0, GENESIS_HASH)  # a reader's head: the last record it read
        self._conn: psycopg.Connection[Any] | None = None  # a writer's: lock and inserts
        self._cond = threading.Condition()
        self._pending: list[tuple[int, bytes]] = []  # written, not yet committed
        self._head = self._durable = self._seen
        self._syncing = False
        self._broken: str | None = None

    @classmethod
    def open_writer(
        cls,
        storage: PostgresStorage,
        keyring: Keyring,
        *,
        timeout: float = 0.0,
        exclusive: bool = True,
    ) -> PostgresLog:
        """A writer after the log's current head. ``exclusive``: wait at most ``timeout``
        seconds for the writer lock (``StoreLockedError``), held until ``close``."""
        log = cls(storage, keyring)
        conn = storage.connect()
        try:
            if exclusive:
                deadline = time.monotonic() + timeout
                while not _take_lock(conn):
                    if time.monotonic() >= deadline:
                        raise StoreLockedError(
                            f"the store is held by another writer; gave up after {timeout:g}s"
                        )
                    time.sleep(min(0.05, max(timeout, 0.01)))
            log._head = log._durable = _head_of(conn.execute(_LAST).fetchall())
        except psycopg.Error as exc:
            conn.close()
            raise UnavailableError(f"cannot reach PostgreSQL: {_reason(exc)}") from None
        except BaseException:
            conn.close()
            raise
        log._conn = conn
        return log

    @property
    def head(self) -> Head:
        return self._head if self._conn is not None else self._seen

    @property
    def broken(self) -> str | None:
        """Why this writer accepts no more writes (None while it does)."""
        return self._broken

    # ---- reading -------------------------------------------------------------------------

    def _query(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._reads.rows(query, params, "cannot read the log")

    def frames(self, start: int = 1, hint: int = NO_HINT) -> Iterator[Frame]:
        seq = max(start, 1)
        prev: bytes | None = GENESIS_HASH if seq == 1 else None
        while True:
            rows = self._query(
                f"SELECT seq, raw FROM {RECORDS} WHERE seq >= %s ORDER BY seq LIMIT %s",
                (seq, READ_BATCH),
            )
            for found, raw in rows:
                if found != seq:
                    raise CorruptionError(
                        f"expected seq {seq} but found seq {found}",
                        segment=PLACE,
                        offset=found,
                        seq=seq,
                        kind="missing records",
                    )
                frame = parse(bytes(raw), segment=PLACE, offset=seq, hint=seq, seq=seq)
                if prev is not None:
                    check_link(frame, prev)
                prev = frame.hash
                if seq > self._seen.seq:
                    self._seen = Head(seq, frame.hash, frame.header.timestamp)
                yield frame
                seq += 1
            if len(rows) < READ_BATCH:
                return

    def frame(self, seq: int, hint: int = NO_HINT) -> Frame:
        rows = self._query(f"SELECT raw FROM {RECORDS} WHERE seq = %s", (seq,))
        if not rows:
            raise MissingRecordError(f"the log holds no record {seq}")
        return parse(bytes(rows[0][0]), segment=PLACE, offset=seq, hint=seq, seq=seq)

    def latest(self) -> Head:
        """The head as the database has it now (one query)."""
        return _head_of(self._query(_LAST, ()))

    # ---- writing -------------------------------------------------------------------------

    def write(self, bodies: Sequence[bytes]) -> list[Record]:
        if self._conn is None:
            raise StoreError("the log was opened read-only")
        with self._cond:
            self._check_broken()
            if not bodies:
                return []
            raws, records, self._head = _seal_batch(
                self.keyring, bodies, self._head, time.time_ns()
            )
            self._pending += [(r.seq, raw) for r, raw in zip(records, raws, strict=True)]
            return records

    def sync(self, seq: int) -> None:
        """Return once every record up to ``seq`` is committed; one transaction serves
        every writer waiting meanwhile."""
        with self._cond:
            while self._durable.seq < seq:
                self._check_broken()
                if self._syncing:
                    self._cond.wait()
                    continue
                batch, target, self._pending = self._pending, self._head, []
                self._syncing = True
                self._cond.release()
                error: str | None = None
                try:
                    self._commit(batch)
                except pg_errors.UniqueViolation:
                    error = "another writer appended to the log first"
                except psycopg.Error as exc:
                    error = f"PostgreSQL failed: {_reason(exc)}"
                finally:
                    self._cond.acquire()
                    self._syncing = False
                    self._cond.notify_all()
                if error is not None:
                    self._broken = error
                    self._pending, self._head = [], self._durable
                    raise UnavailableError(f"{error}; nothing was recorded")
                self._durable = target

    def _commit(self, batch: list[tuple[int, bytes]]) -> None:
        """The batch and its notification in one statement: one round trip, one
        transaction (an autocommit statement is atomic)."""
        assert self._conn is not None
        seqs, raws = [seq for seq, _ in batch], [raw for _, raw in batch]
        self._conn.execute(_INSERT, (seqs, raws, CHANNEL, str(seqs[-1])))

    def _check_broken(self) -> None:
        if self._broken:
            raise UnavailableError(f"the log accepts no more writes: {self._broken}")

    def alive(self) -> bool:
        """Whether the writer's connection (and so its lock) still stands: one round trip,
        taken between commits."""
        with self._cond:
            if self._broken or self._conn is None:
                return False
            while self._syncing:
                self._cond.wait()
            try:
                self._conn.execute("SELECT 1")
            except psycopg.Error as exc:
                self._broken = f"PostgreSQL failed: {_reason(exc)}"
                return False
            return True

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()  # a session's advisory lock goes with it
            self._conn = None
            with self._cond:  # what was not committed by now never will be
                self._broken = self._broken or "the log was closed"
        self._reads.close()


def _take_lock(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (WRITER_LOCK,)).fetchone()
    return bool(row and row[0])


def _head_of(rows: list[tuple[Any, ...]]) -> Head:
    """The head that the result of ``_LAST`` names."""
    if not rows:
        return Head(0, GENESIS_HASH)
    seq, raw = rows[0]
    frame = parse(bytes(raw), segment=PLACE, offset=seq, hint=seq, seq=seq)
    return Head(seq, frame.hash, frame.header.timestamp)


def wait_for_appends(
    storage: PostgresStorage, stop: threading.Event, timeout: float
) -> Iterator[int]:
    """The last seq of each commit, as ``NOTIFY`` tells it, or 0 every ``timeout``
    seconds without one (a follower then reads anyway: a notification can be missed
    across a reconnect). Runs until ``stop`` is set; reconnects on its own."""
    while not stop.is_set():
        try:
            conn = storage.connect()
        except UnavailableError:
            yield 0
            stop.wait(timeout)
            continue
        try:
            conn.execute(f"LISTEN {CHANNEL}")
            while not stop.is_set():
                got = 0
                for note in conn.notifies(timeout=timeout, stop_after=1):
                    got = int(note.payload) if note.payload.isdigit() else 0
                yield got
        except psycopg.Error:
            yield 0
        finally:
            conn.close()
