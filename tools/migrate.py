"""``vault operator migrate -config=FILE``: a store copied from one storage to another.

The configuration is Vault's: ``storage_source "TYPE" {...}`` and ``storage_destination
"TYPE" {...}``, HCL or JSON, of type ``file`` (``path``) or ``postgresql``
(``connection_url``, and the other keys ``vault server`` takes, unused here);
``cluster_addr`` is accepted and ignored.

What moves is what a storage holds of a store: the records, sealed and hash-chained, byte
for byte, and the keyring's sealed bytes and the seal's shape, unchanged. Nothing is
decrypted, so no key is needed. Snapshots and the version index are caches derived from
the log: not copied, the destination's first writer rebuilds them.

The source is read through its log's ``frames``, which check every record and the chain.
Neither side may be in use: each is locked as a server locks it (files: the writer lock
and ``server.lock``; PostgreSQL: the writer's advisory lock) until the copy is done. The
destination must hold no store, and is written so that a failure leaves nothing that
looks like one: on PostgreSQL in one transaction, on files into a staging directory whose
segments are moved into place, the keyring last. The copy is then read back, and its
head must be the source's; if it is not, it is removed again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psycopg
from google_crc32c import value as crc32c
from psycopg.conninfo import conninfo_to_dict

from backends.hcl import parse_document
from eventstore import (
    CorruptionError,
    Frame,
    Head,
    Keyring,
    StoreLockedError,
    TornTail,
    VaultlogError,
)
from eventstore.files import fsync_dir, write_all, write_atomically
from eventstore.keyring import KEYRING_FILE
from eventstore.lock import LOCK_FILE, WriterLock
from eventstore.log import SEGMENT_BYTES, SEGMENT_MAGIC, FileLog, segment_name
from eventstore.postgres import WRITER_LOCK, PostgresLog, PostgresStorage
from eventstore.record import GENESIS_HASH, PREFIX
from projections.progress import Reporter
from projections.snapshot import SNAPSHOT_DIR
from projections.sortedrun import RUN_FILE
from projections.versions import INDEX_FILE
from tools.seal import SEAL_FILE, SERVER_LOCK
from tools.server_config import ConfigError, config_text, one_block, postgres_storage

__all__ = [
    "MigrateConfig",
    "Migrated",
    "MigrationError",
    "Reporter",
    "StorageConfig",
    "load_migrate_config",
    "migrate",
    "parse_migrate_config",
]

_TOP_KEYS = {"storage_source", "storage_destination", "cluster_addr"}
NAMED = (SEAL_FILE, KEYRING_FILE)  # what a store holds beside its records; the keyring last
STAGING = ".migrating"  # a file destination's records, until the copy is whole
BATCH_RECORDS = 10_000  # records written at once, at most
BATCH_BYTES = 16 << 20  # and their bytes, at most


class MigrationError(VaultlogError):
    """The store cannot be migrated as asked; the message says what was left changed."""


# ---- the configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class StorageConfig:
    """One side of a migration: a directory of files or a PostgreSQL database."""

    kind: str  # "file" or "postgresql"
    path: Path | None = None
    connection_url: str = ""

    def __str__(self) -> str:  # what messages name: never the URL's password
        if self.path is not None:
            return str(self.path)
        info = conninfo_to_dict(self.connection_url)
        host, port = info.get("host", "localhost"), info.get("port", "5432")
        return f"postgresql://{host}:{port}/{info.get('dbname', '')}"


@dataclass(frozen=True)
class MigrateConfig:
    source: StorageConfig
    destination: StorageConfig


def load_migrate_config(file: Path) -> MigrateConfig:
    """Read and check ``file``; every problem is one ``ConfigError`` line starting with
    the file's name."""
    return parse_migrate_config(config_text(file, str(file)), str(file))


def parse_migrate_config(text: str, name: str) -> MigrateConfig:
    """The migration ``text`` (from the file ``name``) asks for."""
    try:
        raw = parse_document(text)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{name}: unknown key {unknown[0]!r}")
    return MigrateConfig(
        _storage(raw, "storage_source", name), _storage(raw, "storage_destination", name)
    )


def _storage(raw: dict[str, Any], stanza: str, name: str) -> StorageConfig:
    """``stanza "TYPE" { ... }``, its keys as ``vault server`` takes them."""
    kind, body = one_block(raw, (stanza,), name)
    if kind == "postgresql":
        url = postgres_storage(body, name, stanza)[0]
        try:
            conninfo_to_dict(url)
        except psycopg.Error:
            raise ConfigError(
                f'{name}: {stanza} "postgresql": connection_url is not a URL'
            ) from None
        return StorageConfig("postgresql", connection_url=url)
    if kind != "file":
        raise ConfigError(f'{name}: {stanza} "{kind}" is not supported (file, postgresql)')
    unknown = sorted(set(body) - {"path"})
    if unknown:
        raise ConfigError(f'{name}: unknown {stanza} "file" key {unknown[0]!r}')
    path = body.get("path")
    if not isinstance(path, str) or not path:
        raise ConfigError(f'{name}: {stanza} "file" needs a path')
    return StorageConfig("file", path=Path(path).expanduser())


# ---- migrating ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Migrated:
    """What a migration copied, as the destination was read back."""

    head: Head
    torn_tail: TornTail | None  # the source's incomplete last record, never acknowledged
    copy_seconds: float
    verify_seconds: float


def migrate(config: MigrateConfig, report: Reporter | None = None) -> Migrated:
    """Copy the store ``config.source`` holds into ``config.destination``, which must be
    empty; the source is left as it was."""
    if _same_place(config.source, config.destination):
        raise MigrationError(f"the source and the destination are the same: {config.source}")
    source, destination = _side(config.source), _side(config.destination)
    try:
        if source.named(KEYRING_FILE) is None:  # before locking: it may be no store at all
            raise MigrationError(f"there is no store in {config.source} (no keyring)")
        _refuse_a_store(destination, config.destination)  # before its locks are touched
        source.hold("source")
        named = {name: source.named(name) for name in NAMED}
        destination.hold("destination")
        _refuse_a_store(destination, config.destination)  # and under them
        expected = source.last_seq() if report is not None else 0
        started = time.perf_counter()
        copied = _Copied(source.frames(), expected, report)
        try:
            destination.stage(copied.batches())
            destination.publish({k: v for k, v in named.items() if v is not None})
        except CorruptionError as exc:
            destination.discard()
            raise MigrationError(
                f"the source is damaged: {exc}; the destination was left empty"
            ) from None
        except VaultlogError as exc:
            destination.discard()
            raise MigrationError(f"{exc}; the destination was left empty") from None
        except BaseException:
            destination.discard()
            raise
        verifying = time.perf_counter()
        try:
            _check_copy(destination, copied, named, expected, report)
        except CorruptionError as exc:
            destination.discard()
            raise MigrationError(f"the copy read back is damaged: {exc}; it was removed") from None
        except BaseException:
            destination.discard()
            raise
        finished = time.perf_counter()
        torn = source.torn_tail()
        return Migrated(copied.head, torn, verifying - started, finished - verifying)
    finally:
        destination.release()
        source.release()


def _refuse_a_store(destination: _Side, where: StorageConfig) -> None:
    held = destination.what_it_holds()
    if held:
        raise MigrationError(
            f"the destination {where} is not empty (it holds {held}); nothing was changed"
        )


def _same_place(a: StorageConfig, b: StorageConfig) -> bool:
    if a.path is not None and b.path is not None:
        return a.path.resolve() == b.path.resolve()
    return str(a) == str(b)


def _check_copy(
    destination: _Side,
    copied: _Copied,
    named: dict[str, bytes | None],
    expected: int,
    report: Reporter | None,
) -> None:
    """Read the destination back: its records form the same chain to the same head."""
    head, count = Head(0, GENESIS_HASH), 0
    for frame in destination.frames():
        head, count = Head(frame.header.seq, frame.hash, frame.header.timestamp), count + 1
        if report is not None and count % BATCH_RECORDS == 0:
            report("verifying", count, expected)
    if report is not None:
        report("verifying", count, expected)
    same_named = all(destination.named(name) == value for name, value in named.items())
    if (head.seq, head.hash) != (copied.head.seq, copied.head.hash) or not same_named:
        raise MigrationError(
            f"the copy read back ends at {head} but the source at {copied.head}; "
            "the copy was removed"
        )


class _Copied:
    """The source's frames as batches of raw records, keeping the head they reach."""

    def __init__(self, frames: Iterator[Frame], expected: int, report: Reporter | None) -> None:
        self.frames, self.expected, self.report = frames, expected, report
        self.head = Head(0, GENESIS_HASH)

    def batches(self) -> Iterator[list[tuple[int, bytes]]]:
        batch: list[tuple[int, bytes]] = []
        size = done = 0
        frame: Frame | None = None
        pack = PREFIX.pack
        for frame in self.frames:
            payload = frame.payload
            # The frame was checked: its prefix is this length and this checksum, so these
            # are the record's bytes as they were stored (the read-back proves it).
            raw = pack(len(payload), crc32c(payload)) + payload
            batch.append((frame.header.seq, raw))
            size += len(raw)
            if len(batch) >= BATCH_RECORDS or size >= BATCH_BYTES:
                self._reached(frame)
                yield batch
                done += len(batch)
                if self.report is not None:
                    self.report("copying", done, self.expected)
                batch, size = [], 0
        if frame is not None:
            self._reached(frame)
        if batch:
            yield batch
            done += len(batch)
        if self.report is not None:
            self.report("copying", done, self.expected)

    def _reached(self, frame: Frame) -> None:
        self.head = Head(frame.header.seq, frame.hash, frame.header.timestamp)


# ---- the two storages --------------------------------------------------------------------


def _keyless() -> Keyring:
    """A keyring with no key: frames are read without ever being decrypted."""
    return Keyring(store_id="", terms={}, term_installed={})


class _Side(Protocol):
    def hold(self, role: str) -> None:
        """Lock this side as a server would, or refuse: it is in use."""

    def named(self, name: str) -> bytes | None:
        """The keyring's or the seal shape's bytes, as stored."""

    def what_it_holds(self) -> str:
        """What of a store is here already ("": nothing)."""

    def last_seq(self) -> int:
        """The seq the log seems to end at, cheaply (for the progress bar)."""

    def frames(self) -> Iterator[Frame]:
        """Every record, checked as it is read."""

    def torn_tail(self) -> TornTail | None:
        """Where the last ``frames`` stopped at an incomplete record, if it did."""

    def stage(self, batches: Iterator[list[tuple[int, bytes]]]) -> None:
        """Write the records where no reader takes them for a store yet."""

    def publish(self, named: dict[str, bytes]) -> None:
        """Make the staged records and ``named`` the store here."""

    def discard(self) -> None:
        """Remove whatever ``stage`` and ``publish`` wrote."""

    def release(self) -> None:
        """Drop the locks ``hold`` took."""


def _side(config: StorageConfig) -> _Side:
    if config.path is not None:
        return _Files(config.path)
    return _Database(config)


class _Files:
    """A store's directory: segment files, ``keyring``, ``seal.json``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._locks: list[WriterLock] = []
        self._log: FileLog | None = None
        self._staged: list[str] = []  # segment names, in order
        self._published: list[str] = []

    def hold(self, role: str) -> None:
        try:
            if role == "destination":
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            elif not self.directory.is_dir():
                raise MigrationError(f"there is no store in {self.directory} (no such directory)")
            for name in (SERVER_LOCK, LOCK_FILE):
                lock = WriterLock(self.directory, name)
                lock.acquire(0)
                self._locks.append(lock)
        except StoreLockedError:
            holder = (self.directory / name).read_text(errors="replace").strip() or "?"
            who = "a server" if name == SERVER_LOCK else "a writer (a server or a vault command)"
            raise MigrationError(
                f"the {role} {self.directory} is in use: {who} holds its {name} "
                f"(pid {holder}); stop it before migrating"
            ) from None
        except OSError as exc:
            raise MigrationError(
                _os_message(f"cannot lock the {role} {self.directory}", exc)
            ) from None

    def named(self, name: str) -> bytes | None:
        try:
            return (self.directory / name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise MigrationError(_os_message(f"cannot read {self.directory / name}", exc)) from None

    def what_it_holds(self) -> str:
        if not self.directory.exists():
            return ""
        if not self.directory.is_dir():
            raise MigrationError(f"{self.directory} is not a directory")
        for name in (KEYRING_FILE, SEAL_FILE, SNAPSHOT_DIR, INDEX_FILE, RUN_FILE):
            if (self.directory / name).exists():
                return name
        return "log segments" if self._reader().segments() else ""

    def _reader(self) -> FileLog:
        if self._log is None:
            self._log = FileLog(self.directory, _keyless())
        return self._log

    def last_seq(self) -> int:
        segments = self._reader().segments()
        if not segments:
            return 0
        last = segments[-1][0] - 1
        for frame in FileLog(self.directory, _keyless()).frames(segments[-1][0]):
            last = frame.header.seq
        return last

    def frames(self) -> Iterator[Frame]:
        return self._reader().frames()

    def torn_tail(self) -> TornTail | None:
        return self._reader().torn_tail

    def stage(self, batches: Iterator[list[tuple[int, bytes]]]) -> None:
        """Segments as ``FileLog`` writes them (a magic, then records; a new one once the
        last reaches ``SEGMENT_BYTES``), each fsynced once whole."""
        staging = self.directory / STAGING
        shutil.rmtree(staging, ignore_errors=True)  # a migration that died before
        try:
            staging.mkdir(mode=0o700)
            fd, size = -1, 0
            try:
                for batch in batches:
                    if fd < 0 or size >= SEGMENT_BYTES:
                        if fd >= 0:
                            os.fsync(fd)
                            os.close(fd)
                            fd = -1
                        name = segment_name(batch[0][0])
                        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
                        fd = os.open(staging / name, flags, 0o600)
                        self._staged.append(name)
                        write_all(fd, SEGMENT_MAGIC)
                        size = len(SEGMENT_MAGIC)
                    data = b"".join(raw for _, raw in batch)
                    write_all(fd, data)
                    size += len(data)
                if fd >= 0:
                    os.fsync(fd)
            finally:
                if fd >= 0:
                    os.close(fd)
            fsync_dir(staging)
        except OSError as exc:
            raise MigrationError(_os_message(f"cannot write to {staging}", exc)) from None

    def publish(self, named: dict[str, bytes]) -> None:
        """The segments moved into place, then the seal's shape, then the keyring: until
        the keyring is there, no one takes the directory for a store."""
        staging = self.directory / STAGING
        try:
            for name in self._staged:
                os.rename(staging / name, self.directory / name)
                self._published.append(name)
            fsync_dir(self.directory)
            staging.rmdir()
            for name in NAMED:
                if name in named:
                    write_atomically(self.directory / name, named[name])
                    self._published.append(name)
        except OSError as exc:
            raise MigrationError(_os_message(f"cannot write to {self.directory}", exc)) from None

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            if KEYRING_FILE in self._published:  # the keyring first: then it is no store
                (self.directory / KEYRING_FILE).unlink()
            for name in self._published:
                (self.directory / name).unlink(missing_ok=True)
            shutil.rmtree(self.directory / STAGING, ignore_errors=True)
            fsync_dir(self.directory)

    def release(self) -> None:
        for lock in reversed(self._locks):
            lock.release()
        self._locks = []


class _Database:
    """A store in PostgreSQL: ``vaultlog_records`` and the ``vaultlog_meta`` rows."""

    def __init__(self, config: StorageConfig) -> None:
        self.config = config
        self.storage = PostgresStorage(config.connection_url)
        self._conn: psycopg.Connection[Any] | None = None  # holds the writer lock
        self._log: PostgresLog | None = None
        self._committed = False

    def _failed(self, exc: psycopg.Error) -> MigrationError:
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        return MigrationError(f"PostgreSQL ({self.config}) failed: {reason}")

    def hold(self, role: str) -> None:
        conn = self.storage.connect()
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (WRITER_LOCK,)).fetchone()
        except psycopg.Error as exc:
            conn.close()
            raise self._failed(exc) from None
        if not (row and row[0]):
            conn.close()
            raise MigrationError(
                f"the {role} {self.config} is in use: a server holds its writer lock; "
                "stop it before migrating"
            )
        self._conn = conn

    def named(self, name: str) -> bytes | None:
        found = self.storage.meta(name)
        return found[1] if found else None

    def what_it_holds(self) -> str:
        if self.storage.is_empty():
            return ""
        return "records" if self.storage.has_records() else "a keyring or a seal"

    def _reader(self) -> PostgresLog:
        if self._log is None:
            self._log = PostgresLog(self.storage, _keyless())
        return self._log

    def last_seq(self) -> int:
        return self._reader().latest().seq

    def frames(self) -> Iterator[Frame]:
        return self._reader().frames()

    def torn_tail(self) -> TornTail | None:
        return None  # a transaction is never torn

    def stage(self, batches: Iterator[list[tuple[int, bytes]]]) -> None:
        """One transaction, opened here and committed by ``publish``: COPY in binary."""
        assert self._conn is not None
        conn = self._conn
        try:
            conn.autocommit = False  # the COPY and the named rows: one transaction
            with (
                conn.cursor() as cur,
                cur.copy("COPY vaultlog_records (seq, raw) FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.set_types(["int8", "bytea"])
                for batch in batches:
                    for row in batch:
                        copy.write_row(row)
        except psycopg.Error as exc:
            raise self._failed(exc) from None

    def publish(self, named: dict[str, bytes]) -> None:
        assert self._conn is not None
        try:
            for name in NAMED:
                if name in named:
                    self._conn.execute(
                        "INSERT INTO vaultlog_meta (name, version, value) VALUES (%s, 1, %s)",
                        (name, named[name]),
                    )
            self._conn.commit()
        except psycopg.Error as exc:
            raise self._failed(exc) from None
        self._committed = True

    def discard(self) -> None:
        conn = self._conn
        if conn is None or conn.closed:
            return
        with contextlib.suppress(psycopg.Error):
            conn.rollback()
            if self._committed:  # the database was empty, and the lock kept others out
                conn.execute("DELETE FROM vaultlog_meta")
                conn.execute("TRUNCATE vaultlog_records")
                conn.commit()

    def release(self) -> None:
        for closing in (self._log, self._conn):
            if closing is not None:
                closing.close()  # the session's advisory lock goes with its connection
        self._log, self._conn = None, None
        self.storage.close()


def _os_message(what: str, exc: OSError) -> str:
    return f"{what}: {exc.strerror or exc}"
