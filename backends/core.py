"""Core: opens a store, replays it into projections, routes requests, appends their events."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgpack

from backends.errors import InvalidRequestError, NoHandlerError, ShreddedDataError
from backends.expiration import ExpirationManager, bounded_ttls
from backends.request import Request, Response, who
from backends.router import route
from eventstore import (
    CorruptionError,
    FileLog,
    Keyring,
    ShreddedError,
    StoreError,
    UnsealError,
    audit_hmac,
)
from eventstore.keyring import KEYRING_FILE
from eventstore.lock import WriterLock
from projections import (
    Event,
    IntentCompleted,
    IntentRecorded,
    KeyRotated,
    LeaseIssued,
    Mount,
    MountCreated,
    MountRemoved,
    SecretDeleted,
    SecretRead,
    SecretWritten,
    StoreState,
    apply,
    decode,
    encode,
)
from projections.audit import rfc3339
from projections.pointintime import rebuild, seq_at_time
from projections.snapshot import read_snapshot, snapshot_dir, snapshot_seqs, write_snapshot
from projections.state import live_values
from projections.versions import IndexMismatch, IndexWriter, VersionIndex

T = TypeVar("T")
SYSTEM_DESCRIPTION = "system endpoints used for control, policy and debugging"
SNAPSHOT_EVERY = int(os.environ.get("VAULTLOG_SNAPSHOT_EVERY", "1000"))
INDEX_SAVE_EVERY = 1000  # entries a long-lived writer keeps unsaved at most
DEFAULT_MOUNTS = (
    ("sys/", "system", SYSTEM_DESCRIPTION),
    ("secret/", "generic", "generic secret storage"),
)


class Backend(Protocol):
    def handle(self, view: MountView, request: Request) -> Response: ...


class LeasingBackend(Backend, Protocol):
    """A backend whose secrets live outside the store and must be revoked."""

    def revoke(self, view: MountView, internal: dict[str, Any]) -> None: ...

    def roll_back(self, view: MountView, action: str, data: dict[str, Any]) -> None: ...


class WriterNeeded(Exception):
    """A request opened read-only turned out to change the store; reopen it for writing."""


def new_id() -> str:
    """A random 64-bit id in hex: mounts, intents and requests."""
    return os.urandom(8).hex()


class MountView:
    """What a backend sees of the store: its own mount's values, sealed with its own key.

    Writes are staged; the Core appends them after the backend answers.
    """

    def __init__(
        self, core: Core, mount: Mount, request: Request, state: StoreState | None = None
    ) -> None:
        self.core, self.mount, self.request = core, mount, request
        self.state = core.state if state is None else state  # an earlier state for -at

    def seal_value(self, value: Any, *context: str) -> bytes:
        """``value`` packed and sealed with this mount's data key, bound to ``context``."""
        sealer = self.core.keyring.mount_sealer(self.mount.id)
        return sealer.seal(msgpack.packb(value, use_bin_type=True), self.mount.id, *context)

    def open_value(self, sealed: bytes, *context: str) -> Any:
        plain = self.core.keyring.mount_sealer(self.mount.id).open(sealed, self.mount.id, *context)
        return msgpack.unpackb(plain, raw=False)

    def get(self, path: str) -> dict[str, Any] | None:
        sealed = self.state.data[self.mount.id].get(path)
        return None if sealed is None else self.open_value(sealed, "value", path)

    def list(self, prefix: str) -> list[str]:
        """Immediate children of ``prefix``; folders end with ``/``."""
        keys = set()
        for path in self.state.data[self.mount.id]:
            if path.startswith(prefix):
                rest = path[len(prefix) :]
                head, slash, _ = rest.partition("/")
                keys.add(head + slash)
        return sorted(keys)

    def put(self, path: str, value: dict[str, Any]) -> None:
        sealed = self.seal_value(value, "value", path)
        hmacs = {key: self.core.audit_hash(item) for key, item in value.items()}
        self.core.stage(
            SecretWritten(
                **who(self.request), mount_id=self.mount.id, path=path, value=sealed, hmacs=hmacs
            )
        )

    def delete(self, path: str) -> None:
        self.core.stage(SecretDeleted(**who(self.request), mount_id=self.mount.id, path=path))

    def record_intent(self, action: str, data: dict[str, Any]) -> str:
        """Durably record, before acting outside the store, how to undo the action."""
        intent_id = new_id()
        sealed = self.seal_value(data, "intent", intent_id)
        self.core.stage(
            IntentRecorded(
                **who(self.request),
                mount_id=self.mount.id,
                intent_id=intent_id,
                action=action,
                data=sealed,
            )
        )
        self.core.commit()
        self.core.flush()  # the intent must be on disk before the outside world changes
        return intent_id

    def complete_intent(self, intent_id: str, outcome: str) -> None:
        self.core.stage(IntentCompleted(**who(self.request), intent_id=intent_id, outcome=outcome))

    def issue_lease(
        self, internal: dict[str, Any], *, ttl: int = 0, max_ttl: int = 0, renewable: bool = True
    ) -> tuple[str, int]:
        """Stage a lease on what this request created; ``(lease id, lease duration)``."""
        path = self.mount.path + self.request.path
        lease_id = f"{path}/{uuid.uuid4()}"
        mount = self.mount
        ttl, max_ttl = bounded_ttls(mount.default_lease_ttl, mount.max_lease_ttl, ttl, max_ttl)
        self.core.stage(
            LeaseIssued(
                **who(self.request),
                mount_id=self.mount.id,
                lease_id=lease_id,
                path=path,
                ttl=ttl,
                max_ttl=max_ttl,
                renewable=renewable,
                internal=self.seal_value(internal, "lease", lease_id),
            )
        )
        return lease_id, ttl

    def commit(self) -> None:
        self.core.commit()


class Core:
    """One open store. Open with ``Core.open``; close when done."""

    def __init__(
        self, directory: Path, unseal_key: bytes, keyring: Keyring, log: FileLog, writable: bool
    ) -> None:
        self.directory = directory
        self.unseal_key = unseal_key
        self.keyring = keyring
        self.log = log
        self.writable = writable
        self.state = StoreState()
        self.actor = actor()
        self.expiration = ExpirationManager(self)
        self._staged: list[Event] = []
        self._backends: dict[str, Backend] = {}
        self._snapshot_seq = 0
        self._sound_snapshots: set[int] = set()  # checked by this Core's _write_snapshot
        self._mutex = threading.RLock()
        self._indexer: IndexWriter | None = None  # a writer's, from its open
        self._index: VersionIndex | None = None  # the saved index, loaded when asked
        self._index_loaded = False

    @classmethod
    def open(
        cls, directory: Path, unseal_key: bytes, *, write: bool, lock_timeout: float = 30.0
    ) -> Core:
        """Open (creating on first use) the store in ``directory`` and replay it.

        Readers take no lock; a writer holds the store's lock until ``close``.
        """
        if not write:
            if not (directory / KEYRING_FILE).exists():  # first use creates the store
                cls.open(directory, unseal_key, write=True, lock_timeout=lock_timeout).close()
            keyring = Keyring.load(directory, unseal_key)
            core = cls(directory, unseal_key, keyring, FileLog(directory, keyring), False)
            core._replay()
            return core
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = WriterLock(directory)
        lock.acquire(lock_timeout)
        try:
            keyring = _load_or_create_keyring(directory, unseal_key)
            log = FileLog.open_writer(directory, keyring, lock)
        except BaseException:
            lock.release()
            raise
        core = cls(directory, unseal_key, keyring, log, True)
        try:
            core._replay()
            core._indexer = IndexWriter.open(directory, keyring.audit_key, log)
            if core.state.seq == 0:  # new, or a first use that crashed before its mounts
                core._create_default_mounts()
            core._shred_orphan_keys()
            core.expiration.roll_back_intents()
            core.expiration.expire_due()
            core.flush()
            return core
        except BaseException:
            if core._indexer is not None:
                core._indexer.close()
            log.close()
            raise

    def _replay(self) -> None:
        at_most = self.log.head.seq if self.writable else None
        rebuilt = rebuild(self.log, self.directory, self.keyring, at_most)
        self.state, self._snapshot_seq = rebuilt.state, rebuilt.snapshot_seq
        if rebuilt.head is not None and not self.writable:
            self.log.head, self.log.head_at = rebuilt.head, rebuilt.head_at
        if self.writable:  # newer snapshots were unusable (damaged or shredded): drop them
            for seq in snapshot_seqs(self.directory):
                if seq > self._snapshot_seq:
                    (snapshot_dir(self.directory) / f"{seq:020d}.snap").unlink(missing_ok=True)

    def _snapshot_due(self) -> bool:
        """Snapshot once the events since the last one reach both N and half the live
        entries, so snapshots cost O(1) per event however large the state grows (half:
        when every event adds an entry, the count since the last one must still catch up).
        """
        state = self.state
        live = sum(map(live_values, state.data.values())) + len(state.leases)
        return state.seq - self._snapshot_seq >= max(SNAPSHOT_EVERY, live // 2)

    def _write_snapshot(self) -> None:
        """Write a snapshot, and drop older ones found damaged (they are never trusted, and
        would keep ``audit verify`` failing). Each is checked once per Core: a long-lived
        writer does not read them all again at every snapshot."""
        for seq in snapshot_seqs(self.directory):
            if seq in self._sound_snapshots:
                continue
            try:
                read_snapshot(self.directory, self.keyring, seq)
            except ShreddedError:
                pass  # unreadable by design since an unmount; harmless, passed over
            except Exception:
                (snapshot_dir(self.directory) / f"{seq:020d}.snap").unlink(missing_ok=True)
                continue
            self._sound_snapshots.add(seq)
        write_snapshot(self.directory, self.keyring, self.state, self.log.head, self.log.head_at)
        self._snapshot_seq = self.state.seq
        self._sound_snapshots.add(self._snapshot_seq)
        self._save_index()

    def _save_index(self) -> None:
        """Save the version index's new entries once the records they cover are durable."""
        if self._indexer is not None:
            self.flush()
            self._indexer.save()

    # ---- the past ------------------------------------------------------------------------

    def state_at(self, seq: int) -> StoreState:
        """The state as it stood right after record ``seq``."""
        if seq >= self.state.seq:
            return self.state
        return rebuild(self.log, self.directory, self.keyring, max(seq, 0)).state

    def seq_at(self, nanos: int) -> int:
        return seq_at_time(self.log, nanos)

    def handle_at(self, request: Request, seq: int) -> Response:
        """Answer a read or list as the store stood at ``seq`` (the read is audited)."""
        with self._mutex:
            response = self._handle_at(request, seq)
        self.flush()
        return response

    def _saved_index(self) -> VersionIndex | None:
        """The version index as saved, loaded once; a writer first saves what it indexed,
        and loads again once that has moved on."""
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
        if self._indexer is not None:
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

    def _past_for_read(self, path: str, seq: int) -> StoreState:
        """Enough of the state at ``seq`` to read ``path``: the mount table then and that
        one value, or the whole state then."""
        return self._from_index(
            lambda index: index.state_for_read(self.log, route, path, seq),
            lambda: self.state_at(seq),
        )

    def history_events(self, path: str) -> list[Event]:
        """Events enough for the history of ``path``: every mount event and every version
        of a value that was ever at ``path``, or every event in the log."""
        with self._mutex:
            return self._from_index(
                lambda index: index.history_events(self.log, path),
                lambda: [decode(record) for record in self.log.records()],
            )

    def _handle_at(self, request: Request, seq: int) -> Response:
        if request.operation not in ("read", "list"):
            raise InvalidRequestError("only reads and lists can look at the past")
        path = request.path.lstrip("/")
        if request.operation == "read" and seq < self.state.seq:
            state = self._past_for_read(path, max(seq, 0))
        else:
            state = self.state_at(seq)
        found = route(state.mounts, path)
        if found is None:
            raise NoHandlerError(f"no handler for route '{path}' at seq {seq}")
        mount, relative = found
        if mount.type != "system" and mount.id not in self.keyring.mounts:
            removed = self.state.removed.get(mount.id)
            when = rfc3339(removed.time) if removed else "an unknown time"
            where = removed.path if removed else mount.path
            raise ShreddedDataError(f"the data of mount '{where}' was deleted at {when}")
        inner = replace(request, path=relative)
        self._staged = []
        response = self.backend(mount.type).handle(self.view(mount, inner, state), inner)
        if self._staged:
            self._staged = []
            raise InvalidRequestError("this request cannot be answered for the past")
        self._audit_read(request, mount, relative)
        self.commit()
        return response

    def restore(self, request: Request, seq: int) -> Response:
        """Write back the value a path had at ``seq``, as a new event.

        The path is followed through the mount that serves it now, so a version written
        before a remount (under the old mount point) can be restored too. The response has
        no data when there was no value then.
        """
        with self._mutex:
            path = request.path.lstrip("/")
            found = route(self.state.mounts, path)
            if found is None:
                raise NoHandlerError(f"no handler for route '{path}'")
            mount, relative = found
            sealed = self._from_index(
                lambda index: index.value_at(self.log, mount.id, relative, seq),
                lambda: self.state_at(seq).data.get(mount.id, {}).get(relative),
            )
            view = self.view(mount, request)
            value = None if sealed is None else view.open_value(sealed, "value", relative)
            self._audit_read(replace(request, operation="read"), mount, relative)
            self.commit()
            if value is not None:
                self._handle(replace(request, operation="write", data=value))
        self.flush()
        return Response(data=value)

    def rotate_key(self, actor_name: str) -> int:
        """Install a new barrier key term; new records are sealed under it."""
        with self._mutex:
            term = self.keyring.add_term()
            self.keyring.save(self.directory, self.unseal_key)
            self.stage(KeyRotated(actor=actor_name, request_id=new_id(), term=term))
            self.commit()
        self.flush()
        return term

    def _create_default_mounts(self) -> None:
        request_id = new_id()
        for path, backend_type, description in DEFAULT_MOUNTS:
            self.stage(
                MountCreated(
                    actor="vaultlog",
                    request_id=request_id,
                    mount_id=new_id(),
                    path=path,
                    backend_type=backend_type,
                    description=description,
                )
            )
        self.commit()

    def _shred_orphan_keys(self) -> None:
        """Destroy data keys of mounts that are gone: unmounts interrupted before shredding,
        and mounts whose creation never reached the log."""
        orphans = [m for m in self.keyring.mounts if m not in self.state.mounts.by_id]
        if orphans:
            for mount_id in orphans:
                self.keyring.shred_mount_key(mount_id)
            self.keyring.save(self.directory, self.unseal_key)

    # ---- serving requests ----------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Route ``request`` to its backend and append what it changed.

        Thread-safe. Requests are served one at a time, but the wait for the disk happens
        after the store is released, so one fsync serves every thread waiting (group
        commit). A response is returned only once everything it could have seen is durable.
        """
        with self._mutex:
            response = self._handle(request)
        self.flush()
        return response

    def _handle(self, request: Request) -> Response:
        if not request.path.strip("/"):
            raise InvalidRequestError("missing path")
        path = request.path.lstrip("/")
        found = route(self.state.mounts, path)
        if found is None:
            raise NoHandlerError(f"no handler for route '{path}'")
        mount, relative = found
        backend = self.backend(mount.type)
        inner = replace(request, path=relative)
        self._staged = []
        response = backend.handle(self.view(mount, inner), inner)
        self._audit_read(request, mount, relative)
        self.commit()
        return response

    def _audit_read(self, request: Request, mount: Mount, relative: str) -> None:
        """Stage ``secret.read`` for a read of a secret; it is durable before the answer.

        A store opened read-only serves inspection, not users, and records nothing.
        """
        if request.operation == "read" and mount.type != "system" and self.writable:
            self.stage(
                SecretRead(
                    actor=request.actor,
                    request_id=request.request_id,
                    mount_id=mount.id,
                    path=relative,
                )
            )

    def audit_hash(self, value: Any) -> bytes:
        """The audit HMAC of a value; non-strings are hashed as their JSON text."""
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        return audit_hmac(self.keyring.audit_key, text)

    def view(self, mount: Mount, request: Request, state: StoreState | None = None) -> MountView:
        """What a backend of ``mount`` sees, now or in an earlier ``state``."""
        return MountView(self, mount, request, state)

    def backend(self, backend_type: str) -> Backend:
        """The backend serving a mount type; imported on first use (aws pulls in boto3)."""
        backend = self._backends.get(backend_type)
        if backend is not None:
            return backend
        if backend_type == "system":
            from backends.sys import SysBackend

            backend = SysBackend(self)
        elif backend_type == "generic":
            from backends.generic import GenericBackend

            backend = GenericBackend()
        elif backend_type == "aws":
            from backends.aws import AwsBackend

            backend = AwsBackend()
        else:
            raise InvalidRequestError(f"unknown backend type: {backend_type}")
        self._backends[backend_type] = backend
        return backend

    def stage(self, event: Event) -> None:
        if not self.writable:
            raise WriterNeeded
        self._staged.append(event)

    def flush(self) -> None:
        """Wait until every record written so far is on disk."""
        if self.writable:
            self.log.sync(self.log.head.seq)

    def commit(self) -> None:
        """Write the staged events to the log, then fold them into the state; ``flush``
        (or the end of ``handle``) makes them durable before anyone is answered.

        A new mount's data key is saved before its ``mount.created`` is appended (a key
        without a mount is harmless and shredded on the next open); a removed mount's key
        is destroyed only after ``mount.removed`` is durable, so a failure leaves the mount
        as it was.
        """
        events, self._staged = self._staged, []
        if not events:
            return
        new_mounts = [e.mount_id for e in events if isinstance(e, MountCreated)]
        for mount_id in new_mounts:
            self.keyring.add_mount_key(mount_id)
        if new_mounts:
            self.keyring.save(self.directory, self.unseal_key)
        records = self.log.write([encode(event) for event in events])
        for event, record in zip(events, records, strict=True):
            event = replace(event, seq=record.seq, time=record.timestamp)
            apply(self.state, event)
            if self._indexer is not None:
                self._indexer.add(event, record.at)
        if self._snapshot_due():
            self._write_snapshot()
        elif self._indexer is not None and self._indexer.unsaved >= INDEX_SAVE_EVERY:
            self._save_index()
        removed = [e.mount_id for e in events if isinstance(e, MountRemoved)]
        if removed:
            self.flush()
            for mount_id in removed:
                self.keyring.shred_mount_key(mount_id)
            self.keyring.save(self.directory, self.unseal_key)

    def close(self) -> None:
        if self._indexer is not None:
            # A broken log: the next writer indexes again what this one could not save.
            with contextlib.suppress(StoreError):
                self._save_index()
            self._indexer.close()
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


def actor() -> str:
    """``user@host``: who acts in embedded mode (as getpass would, without its imports)."""
    user = os.environ.get("LOGNAME") or os.environ.get("USER")
    if not user:
        import pwd

        try:
            user = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            user = str(os.getuid())
    return f"{user}@{os.uname().nodename}"
