"""The Store: one log, its keyring and the projections kept current over it, and the past.

It owns everything a request pipeline should not have to know: opening and recovering the
log, the keyring's life (mount keys created before their mount, destroyed after its
removal is durable), snapshots, the version index, the state at a seq or a time, and
verification. The Core above it only routes requests and commits what they staged.

Three kinds: ``Store.open`` on a data directory (``FileLog``, snapshots and the version
index beside it), ``Store.open_postgres`` on a PostgreSQL database shared by several nodes
(``PostgresLog``; the keyring a row replaced by compare-and-swap; snapshots and the index
in a directory of each node's own, derived caches as on files) and ``Store.in_memory``
(``MemoryLog``; the past answered by replay alone).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import msgspec

from eventstore import (
    CorruptionError,
    FileLog,
    Head,
    HsmUnavailableError,
    KeyMaterialError,
    Keyring,
    LogReader,
    LogWriter,
    MemoryLog,
    MemoryStorage,
    ShreddedError,
    StoreError,
    UnsealError,
    hsm,
)
from eventstore.keyring import KEYRING_FILE
from eventstore.lock import WriterLock
from projections.events import (
    Event,
    KeyRotated,
    MountCreated,
    MountRemoved,
    decode,
    encode,
    stamped,
)
from projections.pointintime import rebuild, seq_at_time
from projections.snapshot import read_snapshot, snapshot_dir, snapshot_seqs, write_snapshot
from projections.state import StoreState, apply, live_values
from projections.verify import VerifyReport, verify_store
from projections.versions import IndexMismatch, IndexWriter, VersionIndex, saved_coverage

if TYPE_CHECKING:  # psycopg is imported only by what opens a store in PostgreSQL
    from eventstore.postgres import PostgresStorage

T = TypeVar("T")
SNAPSHOT_EVERY = 1000  # events between snapshots, at least
INDEX_SAVE_EVERY = 1000  # entries a long-lived writer keeps unsaved at most
SYSTEM_DESCRIPTION = "system endpoints used for control, policy and debugging"
DEFAULT_MOUNTS = (
    ("sys/", "system", SYSTEM_DESCRIPTION),
    ("secret/", "generic", "generic secret storage"),
)


def new_id() -> str:
    """A random 64-bit id in hex: mounts, intents and requests."""
    return os.urandom(8).hex()


class Store:
    """One open store. ``state`` is current after every ``commit``; readers build it on
    first use, so a command that only walks the log (verify, audit) never replays."""

    def __init__(
        self,
        log: LogReader,
        keyring: Keyring,
        *,
        writable: bool,
        directory: Path | None = None,
        save_keyring: Callable[[Keyring], None] = lambda keyring: None,
        snapshot_every: int = SNAPSHOT_EVERY,
    ) -> None:
        self.log, self.keyring, self.writable, self.directory = log, keyring, writable, directory
        self._save_keyring = save_keyring
        self.snapshot_every = snapshot_every
        self._writer = cast(LogWriter, log) if writable else None
        self._state: StoreState | None = None
        self._head_hint = 0  # the log's hint for the head record, for snapshots
        self._snapshot_seq = 0
        self._sound_snapshots: set[int] = set()  # checked by this Store's snapshot writes
        self._indexer: IndexWriter | None = None  # a writer's
        self._index: VersionIndex | None = None  # the saved index, loaded when asked
        self._index_loaded = False
        self.warnings: list[str] = []  # what went wrong without failing; said to the user
        self.lock = threading.RLock()  # held by whoever reads the state to change it
        self._keyring_row: _SavedKeyring | None = None  # a store in PostgreSQL's
        self._written = 0  # the last seq written through this store (a writer's)

    # ---- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: Path,
        unseal_key: bytes,
        *,
        write: bool,
        lock_timeout: float = 30.0,
        snapshot_every: int = SNAPSHOT_EVERY,
    ) -> Store:
        """Open (creating on first use) the store in ``directory``.

        A writer holds the store's lock until ``close``; readers take none. Any failure
        of the file system is one ``StoreError`` naming what could not be done.
        """
        try:
            return cls._open(directory, unseal_key, write, lock_timeout, snapshot_every)
        except OSError as exc:
            raise StoreError(_os_message(f"cannot open the store in {directory}", exc)) from None

    @classmethod
    def _open(
        cls, directory: Path, unseal_key: bytes, write: bool, timeout: float, every: int
    ) -> Store:
        for place in (directory, *directory.parents):
            if place.exists():
                if not place.is_dir():
                    raise StoreError(
                        f"cannot open the store in {directory}: {place} is not a directory"
                    )
                break

        def save(keyring: Keyring) -> None:
            keyring.save(directory, unseal_key)

        if not write:
            if not (directory / KEYRING_FILE).exists():  # first use creates the store
                cls._open(directory, unseal_key, True, timeout, every).close()
            keyring = Keyring.load(directory, unseal_key)
            log = FileLog(directory, keyring)
            return cls(log, keyring, writable=False, directory=directory, snapshot_every=every)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = WriterLock(directory)
        lock.acquire(timeout)
        try:
            keyring = _load_or_create_keyring(directory, unseal_key)
            writer = FileLog.open_writer(directory, keyring, lock)
        except BaseException:
            lock.release()
            raise
        store = cls(
            writer,
            keyring,
            writable=True,
            directory=directory,
            save_keyring=save,
            snapshot_every=every,
        )
        try:
            store._refuse_a_shortened_log()
            store._start_writing()
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def in_memory(
        cls, storage: MemoryStorage | None = None, keyring: Keyring | None = None
    ) -> Store:
        """A writable store whose log lives in memory (``storage``, shared with readers)."""
        keyring = keyring or Keyring.create()
        log = MemoryLog.open_writer(storage or MemoryStorage(), keyring)
        store = cls(log, keyring, writable=True)
        try:
            store._start_writing()
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open_postgres(
        cls,
        storage: PostgresStorage,
        unseal_key: bytes,
        *,
        write: bool,
        cache: Path | None = None,
        lock_timeout: float = 0.0,
        snapshot_every: int = SNAPSHOT_EVERY,
        follower: Store | None = None,
    ) -> Store:
        """Open (creating on first use) the store in a PostgreSQL database.

        A writer holds the database's writer lock until ``close`` (``StoreLockedError``
        after ``lock_timeout``). ``cache``: this node's directory for snapshots and the
        version index (None: replay alone). ``follower``: a reader of the same store that
        this node kept current; a writer starts from its state instead of replaying.
        """
        from eventstore.postgres import PostgresLog

        if cache is not None:
            try:
                cache.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(_os_message(f"cannot make the cache {cache}", exc)) from None
        found = storage.meta(KEYRING_FILE)
        if found is None:
            if not write or storage.has_records():
                raise UnsealError("the store's keyring is missing from the database")
            keyring = Keyring.create()
            found = (storage.swap_meta(KEYRING_FILE, keyring.to_bytes(unseal_key), 0), b"")
        else:
            keyring = Keyring.from_bytes(found[1], unseal_key)
        saved = _SavedKeyring(storage, unseal_key, found[0], set(keyring.mounts))
        if not write:
            store = cls(PostgresLog(storage, keyring), keyring, writable=False, directory=cache)
            store._keyring_row = saved
            return store
        log = PostgresLog.open_writer(storage, keyring, timeout=lock_timeout)
        store = cls(
            log,
            keyring,
            writable=True,
            directory=cache,
            save_keyring=saved.save,
            snapshot_every=snapshot_every,
        )
        store._keyring_row = saved
        try:
            if cache is not None:
                store._refuse_a_shortened_log()
            if follower is not None and follower._state is not None:
                store._state, store._snapshot_seq = follower._state, follower._snapshot_seq
                store._head_hint = follower._head_hint
                follower._state = None  # the writer's from now on
            store._start_writing()
        except BaseException:
            store.close()
            raise
        return store

    def catch_up(self) -> int:
        """Fold into the state the records other nodes appended since; how many. A reader
        of a shared log only."""
        if self._state is None:
            self._replay()
            return 0
        self._reload_keyring_if_changed()
        return self._fold_new()

    def _fold_new(self) -> int:
        """Fold the records after the state into it; how many."""
        assert self._state is not None
        count = 0
        for record in self.log.records(self._state.seq + 1):
            apply(self._state, decode(record))
            self._head_hint, count = record.hint, count + 1
        return count

    def _reload_keyring_if_changed(self) -> None:
        """A shared store's keyring, as another node last saved it (new mounts' keys, new
        terms, destroyed keys), if it changed."""
        if self._keyring_row is None or self._writer is not None:
            return
        keyring = self._keyring_row.reload()
        if keyring is not None:
            self.keyring = self.log.keyring = keyring  # type: ignore[attr-defined]

    def _start_writing(self) -> None:
        if self._state is None:
            self._replay()
        else:  # handed over by a follower: the records after it only
            self._fold_new()
        if self.directory is not None:
            self._indexer = IndexWriter.open(self.directory, self.keyring.audit_key, self.log)
        if self.state.seq == 0:  # new, or a first use that crashed before its mounts
            self._create_default_mounts()
        self._shred_orphan_keys()

    def _refuse_a_shortened_log(self) -> None:
        """Refuse to write after a log that once reached further than it does now.

        Snapshots and the version index are derived from the log, and a record they cover
        was durable before they were written (only an incomplete final record is a torn
        write, and they never cover one). A log ending before them lost acknowledged
        records: appending would reuse those seqs and hide the loss, so a writer stops
        here, and leaves the evidence as it is for ``vault audit verify``.
        """
        assert self.directory is not None
        end = self.log.head.seq
        covered = saved_coverage(self.directory, self.keyring.audit_key)
        beyond = [seq for seq in snapshot_seqs(self.directory) if seq > end]
        if covered > end:
            witness = f"the version index covers seq {covered}"
        elif beyond:
            witness = f"a snapshot stands at seq {beyond[-1]}"
        else:
            return
        raise CorruptionError(
            f"records are missing: the log ends at seq {end} but {witness}; nothing will be "
            "written until the log is restored (see 'vault audit verify')",
            seq=end + 1,
            kind="missing records",
        )

    def _replay(self) -> None:
        at_most = self.log.head.seq if self.writable else None
        rebuilt = rebuild(self.log, self.directory, self.keyring, at_most)
        self._state, self._snapshot_seq = rebuilt.state, rebuilt.snapshot_seq
        self._head_hint = rebuilt.head_hint
        if self.writable and self.directory is not None:
            # Newer snapshots were unusable (damaged or shredded), and not past the head
            # (``_refuse_a_shortened_log``): they are caches, dropped.
            for seq in snapshot_seqs(self.directory):
                if seq > self._snapshot_seq:
                    (snapshot_dir(self.directory) / f"{seq:020d}.snap").unlink(missing_ok=True)

    @property
    def state(self) -> StoreState:
        """The state after the last record (a reader replays on first use)."""
        if self._state is None:
            self._replay()
            assert self._state is not None
        return self._state

    @property
    def head(self) -> Head:
        """The last record (a reader finds it as it replays)."""
        if self._state is None:
            self._replay()
        return self.log.head

    @property
    def written(self) -> int:
        """The last seq written through this writer (0 for a reader): what must be durable
        before anything served from its state is answered. Never behind what was written,
        unlike the log's head, which a failed sync takes back to the last durable record
        (from another thread, possibly between a request's write and its answer): the
        records after it are lost, and waiting for them fails."""
        if self._writer is None:
            return 0
        return max(self._written, self._writer.head.seq)

    @property
    def head_hint(self) -> int:
        """The log's hint for the head record: ``log.records(head.seq, hint)`` starts
        there at once, without reading the records before it."""
        if self._state is None:
            self._replay()
        return self._head_hint

    def _create_default_mounts(self) -> None:
        request_id = new_id()
        self.commit(
            [
                MountCreated(
                    actor="vaultlog",
                    request_id=request_id,
                    mount_id=new_id(),
                    path=path,
                    backend_type=backend_type,
                    description=description,
                )
                for path, backend_type, description in DEFAULT_MOUNTS
            ]
        )

    def _shred_orphan_keys(self) -> None:
        """Destroy data keys of mounts that are gone: unmounts whose key destruction was
        interrupted or failed, and mounts whose creation never reached the log; and the
        HSM's key objects of this store that the keyring no longer names."""
        orphans = [m for m in self.keyring.mounts if m not in self.state.mounts.by_id]
        pending = [m for m in orphans if not self._shred(m, "a removed mount")]
        if len(pending) < len(orphans):
            self._try_save_keyring("destroying the data keys of removed mounts")
        if hsm.configured():
            self._sweep_hsm()

    def _shred(self, mount_id: str, what: str) -> bool:
        """Destroy one mount's data key; whether it is gone (an HSM that cannot be reached
        leaves it, said in ``warnings``, for the next writer to destroy)."""
        try:
            self.keyring.shred_mount_key(mount_id)
        except HsmUnavailableError as exc:
            self.warnings.append(f"key destruction pending for {what} ({exc})")
            return False
        return True

    def _sweep_hsm(self) -> None:
        """Destroy key objects under this store's label prefix that no keyring entry names:
        left by a crash, or by a keyring restored from an older copy."""
        named = set(self.keyring.hsm_labels().values())
        try:
            token = hsm.current()
            for label in token.labels(self.keyring.hsm_prefix):
                if label not in named:
                    token.destroy(label)
        except HsmUnavailableError as exc:
            self.warnings.append(f"the HSM's unused keys could not be checked ({exc})")

    # ---- writing -------------------------------------------------------------------------

    def commit(self, events: Sequence[Event]) -> list[Event]:
        """Write ``events`` to the log and fold them into the state; ``flush`` makes them
        durable before anyone is answered. The events as written (seq, time) come back.

        A new mount's data key is saved before its ``mount.created`` is appended (a key
        without a mount is harmless and shredded on the next open); a removed mount's key
        is destroyed only after ``mount.removed`` is durable, so a failure leaves the mount
        as it was.
        """
        if not events:
            return []
        if self._writer is None:
            raise StoreError("the store was opened read-only")
        new_mounts, bodies = [], []
        for event in events:  # loops, not comprehensions: most commits hold one event
            if isinstance(event, MountCreated):
                new_mounts.append(event)
            bodies.append(encode(event))
        if new_mounts:
            self._add_mount_keys(new_mounts)
        records = self._writer.write(bodies)
        self._written = records[-1].seq
        self._head_hint = records[-1].hint
        written, removed = [], []
        state, indexer = self.state, self._indexer
        for event, record in zip(events, records, strict=True):
            event = stamped(event, record.seq, record.timestamp)
            apply(state, event)
            written.append(event)
            if indexer is not None:
                indexer.add(event, record.hint)
            if isinstance(event, MountRemoved):
                removed.append(event)
        if self._snapshot_due():
            self._write_snapshot()
        elif indexer is not None and indexer.unsaved >= INDEX_SAVE_EVERY:
            self._save_index()
        if removed:
            self.flush()
            gone = [e.path for e in removed if self._shred(e.mount_id, f"'{e.path}'")]
            if gone:
                paths = ", ".join(f"'{path}'" for path in gone)
                self._try_save_keyring(f"destroying the data key of {paths}")
        return written

    def _add_mount_keys(self, created: list[MountCreated]) -> None:
        """New mounts' data keys, saved before their ``mount.created``: a key in the HSM
        is generated once the keyring naming it is saved, so a crash between the two
        leaves a reference to nothing, or a key object that the keyring names, and
        ``_shred_orphan_keys`` destroys either on the next writer's open."""
        for event in created:
            self.keyring.add_mount_key(event.mount_id, in_hsm=event.key_in_hsm)
        try:
            self._save_keyring(self.keyring)
            for event in created:
                if event.key_in_hsm:
                    hsm.current().generate(self.keyring.hsm_label(event.mount_id))
        except (OSError, StoreError, HsmUnavailableError) as exc:
            for event in created:
                with contextlib.suppress(HsmUnavailableError):
                    self.keyring.shred_mount_key(event.mount_id)
            with contextlib.suppress(OSError, StoreError):
                self._save_keyring(self.keyring)
            if isinstance(exc, HsmUnavailableError):
                raise
            raise StoreError(
                _os_message("could not save the keyring; nothing was recorded", exc)
            ) from None

    def _try_save_keyring(self, what: str) -> None:
        """Save the keyring after destroying keys; if the disk refuses, say so and go on:
        the keys are gone from memory, and the next writer's open destroys them on disk."""
        try:
            self._save_keyring(self.keyring)
        except (OSError, StoreError) as exc:
            self.warnings.append(
                _os_message(
                    f"key destruction pending: {what} could not be saved, and is retried "
                    "when the store is next opened for writing",
                    exc,
                )
            )

    def flush(self, seq: int = 0) -> None:
        """Wait until every record up to ``seq`` (0: every one written so far) is durable."""
        if self._writer is None:
            return
        seq = seq or self.written
        if seq:
            self._writer.sync(seq)

    def _snapshot_due(self) -> bool:
        """Snapshot once the events since the last one reach both N and half the live
        entries, so snapshots cost O(1) per event however large the state grows (half:
        when every event adds an entry, the count since the last one must still catch up).
        """
        since = self.state.seq - self._snapshot_seq
        if self.directory is None or since < self.snapshot_every:
            return False
        state = self.state
        return since >= (sum(map(live_values, state.data.values())) + len(state.leases)) // 2

    def snapshot(self) -> None:
        """Write a snapshot at the head now (a writer also writes them as they fall due)."""
        if self.directory is None:
            raise StoreError("a store in memory keeps no snapshots")
        write_snapshot(self.directory, self.keyring, self.state, self.head, self._head_hint)

    def _write_snapshot(self) -> None:
        """Write a snapshot once the records it covers are durable, and drop older ones
        found damaged (never trusted, they would keep ``audit verify`` failing). Each is
        checked once per Store. A snapshot is a cache: one that cannot be written (a full
        disk, a mount whose key is missing, an HSM away) is skipped, and fails no request."""
        assert self.directory is not None
        self.flush()
        for seq in snapshot_seqs(self.directory):
            if seq in self._sound_snapshots:
                continue
            try:
                read_snapshot(self.directory, self.keyring, seq)
            except ShreddedError:
                pass  # unreadable by design since an unmount; harmless, passed over
            except HsmUnavailableError:
                continue  # not checked while the HSM is away: a later write checks it
            except Exception:
                (snapshot_dir(self.directory) / f"{seq:020d}.snap").unlink(missing_ok=True)
                continue
            self._sound_snapshots.add(seq)
        try:
            write_snapshot(self.directory, self.keyring, self.state, self.head, self._head_hint)
        except (OSError, KeyMaterialError):  # a mount's key destroyed, or the HSM away
            return
        self._snapshot_seq = self.state.seq
        self._sound_snapshots.add(self._snapshot_seq)
        self._save_index()

    def _save_index(self) -> None:
        """Save the version index's new entries once the records they cover are durable."""
        if self._indexer is not None:
            self.flush()
            self._indexer.save()

    def rotate(self, event: KeyRotated) -> int:
        """Install a new barrier key term and record ``event`` (its term is filled in)."""
        term = self.keyring.add_term()
        try:
            self._save_keyring(self.keyring)
        except (OSError, StoreError) as exc:
            self._drop_term(term)
            raise StoreError(
                _os_message("could not save the keyring; the key term is unchanged", exc)
            ) from None
        try:
            self.commit([msgspec.structs.replace(event, term=term)])
            self.flush()
        except StoreError:
            # Nothing was sealed under the new term: take it back (if the disk lets us,
            # else it stays in the keyring unused, which is harmless).
            self._drop_term(term)
            with contextlib.suppress(OSError, StoreError):
                self._save_keyring(self.keyring)
            raise
        return term

    def _drop_term(self, term: int) -> None:
        del self.keyring.terms[term], self.keyring.term_installed[term]
        self.keyring.forget_sealers()

    # ---- values and their audit HMACs ------------------------------------------------------

    def value_hmac(self, mount_id: str, value: Any) -> bytes:
        """The audit HMAC of a value of a mount; non-strings are hashed as their JSON.
        ``ShreddedError`` once the mount's data key was destroyed."""
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        return self.keyring.value_hmac(mount_id, text.encode())

    # ---- the past ------------------------------------------------------------------------

    def state_at(self, seq: int) -> StoreState:
        """The state as it stood right after record ``seq``."""
        if seq >= self.state.seq:
            return self.state
        return rebuild(self.log, self.directory, self.keyring, max(seq, 0)).state

    def seq_at_time(self, nanos: int) -> int:
        """The last seq appended at or before ``nanos`` (0: the store did not exist yet)."""
        return seq_at_time(self.log, nanos)

    def state_for_read(self, path: str, seq: int) -> StoreState:
        """Enough of the state at ``seq`` to read ``path``: the mount table then and that
        one value, or the whole state then."""
        return self._from_index(
            lambda index: index.state_for_read(self.log, path, seq),
            lambda: self.state_at(seq),
        )

    def value_at(self, mount_id: str, path: str, seq: int) -> bytes | None:
        """The sealed value ``path`` of a mount had at ``seq``."""
        return self._from_index(
            lambda index: index.value_at(self.log, mount_id, path, seq),
            lambda: self.state_at(seq).data.get(mount_id, {}).get(path),
        )

    def history_events(self, path: str) -> list[Event]:
        """Events enough for the history of ``path``: every mount event and every version
        of a value that was ever at ``path``, or every event in the log."""
        return self._from_index(
            lambda index: index.history_events(self.log, path),
            lambda: list(self.events()),
        )

    def events(self, start: int = 1) -> Iterator[Event]:
        """Every event from seq ``start`` on, decoded (the audit trail reads these)."""
        for record in self.log.records(start):
            yield decode(record)

    def _saved_index(self) -> VersionIndex | None:
        """The version index as saved, loaded once; a writer first saves what it indexed,
        and loads again once that has moved on."""
        if self.directory is None:
            return None
        if self._indexer is not None:
            self._save_index()
            if self._index is None or self._index.covered != self._indexer.index.covered:
                self._index_loaded = False
        if not self._index_loaded:
            self._index = VersionIndex.load(self.directory, self.keyring.audit_key)
            self._index_loaded = True
        return self._index

    def _index_failed(self) -> None:
        """The index could not be believed (it is derived, never trusted): the log answers
        this time, and a writer indexes the log anew for the next."""
        if self._indexer is not None and self.directory is not None:
            self._indexer.close()
            self._indexer = IndexWriter.open(
                self.directory, self.keyring.audit_key, self.log, rebuild=True
            )
        self._index_loaded = False

    def _from_index(self, ask: Callable[[VersionIndex], T], otherwise: Callable[[], T]) -> T:
        """``ask`` the version index; without a usable one, or if its answer cannot be
        believed, ``otherwise`` (from the log)."""
        index = self._saved_index()
        if index is not None:
            try:
                return ask(index)
            except (IndexMismatch, CorruptionError):
                self._index_failed()
        return otherwise()

    def verify(self, against: str | None = None) -> VerifyReport:
        """Check every record, the snapshots and the version index against the log."""
        return verify_store(self.log, self.keyring, self.directory, against=against)

    # ---- closing -------------------------------------------------------------------------

    def close(self) -> None:
        if self._indexer is not None:
            # A broken log: the next writer indexes again what this one could not save.
            with contextlib.suppress(StoreError):
                self._save_index()
            self._indexer.close()
            self._indexer = None
        self.log.close()


def _load_or_create_keyring(directory: Path, unseal_key: bytes) -> Keyring:
    """The store's keyring, created (with the store) if this is the first use."""
    if (directory / KEYRING_FILE).exists():
        return Keyring.load(directory, unseal_key)
    if any(directory.glob("*.seg")):
        raise UnsealError(f"the keyring of the store in {directory} is missing")
    keyring = Keyring.create()
    keyring.save(directory, unseal_key)
    return keyring


class _SavedKeyring:
    """A shared store's keyring row: saved only over the version this node last saw
    (compare-and-swap, so two nodes never overwrite each other's keys), and after a key
    is destroyed, the table rewritten so no dead row keeps the old keyring."""

    def __init__(
        self, storage: PostgresStorage, unseal_key: bytes, version: int, mounts: set[str]
    ) -> None:
        self.storage, self._unseal_key = storage, unseal_key
        self.version, self._mounts = version, mounts

    def save(self, keyring: Keyring) -> None:
        self.version = self.storage.swap_meta(
            KEYRING_FILE, keyring.to_bytes(self._unseal_key), self.version
        )
        mounts = set(keyring.mounts)
        if self._mounts - mounts:
            self.storage.purge_dead_meta()
        self._mounts = mounts

    def reload(self) -> Keyring | None:
        """The keyring as saved now, if another node changed it since; else None."""
        found = self.storage.meta(KEYRING_FILE)
        if found is None or found[0] == self.version:
            return None
        self.version = found[0]
        return Keyring.from_bytes(found[1], self._unseal_key)


def _os_message(what: str, exc: OSError | StoreError) -> str:
    """``what``, then what the system said, and of which file: one line."""
    if isinstance(exc, StoreError):
        return f"{what} ({exc})"
    reason = exc.strerror or type(exc).__name__
    name = f": {exc.filename}" if exc.filename else ""
    return f"{what} ({reason}{name})"
