"""The backend contract: what a backend implements, what it declares, and what it sees.

A backend never sees the Core, nor other mounts: it is handed a ``MountView`` of its own
mount inside the request's ``Session``, and it stages what it changes there. Backends are
found through a registry (``backends.registry``) that the front door hands to the Core.

A request's session holds the state it reads and the events it stages, its own and no one
else's: a failed request's events are dropped with its session, never appended by another
request's commit. A request of the past gets a session that refuses to stage anything, so
a backend is stopped before it records an intent or acts outside the store.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import msgpack

from backends.errors import InvalidRequestError, PastRequestError, ShreddedDataError
from backends.request import Request, Response, who
from backends.ttl import bounded_ttls
from eventstore import ShreddedError
from projections import (
    Event,
    IntentCompleted,
    IntentRecorded,
    LeaseIssued,
    Mount,
    SecretDeleted,
    SecretWritten,
    StoreState,
)
from projections.audit import rfc3339
from projections.events import pack
from projections.store import Store, new_id


@dataclass(frozen=True, slots=True)
class PathRules:
    """What a backend declares about its paths.

    ``audit_reads``: a read of it is a read of a secret, recorded (``secret.read``) before
    it is answered. ``reserved``: mount points nobody may mount, unmount or move (the
    backend's own, and those Vault keeps for later: ``auth/``, ``audit/``). ``calls_out``:
    serving a request may wait on a system outside the store (an AWS call), so a server
    with one thread for the store serves it on another. ``existence_check``: a write to a
    path that holds a value is an update, else a create (policies tell the two apart);
    without it every write is an update. ``unauthenticated``: path prefixes inside the
    mount that anyone may call without a token (an auth method's login). ``per_token``:
    each token's values are kept apart, under ``<token_id>/`` (the cubbyhole).
    ``key_in_hsm``: the mount's data key is generated in the HSM and never leaves it;
    every value is sealed and opened there.
    """

    audit_reads: bool = True
    reserved: tuple[str, ...] = ()
    calls_out: bool = False
    existence_check: bool = False
    unauthenticated: tuple[str, ...] = ()
    per_token: bool = False
    key_in_hsm: bool = False


class Backend(Protocol):
    paths: ClassVar[PathRules]

    def handle(self, view: MountView, request: Request) -> Response: ...


class LeasingBackend(Backend, Protocol):
    """A backend whose secrets live outside the store and must be revoked."""

    def revoke(self, view: MountView, internal: dict[str, Any]) -> None: ...

    def renew(self, view: MountView, internal: dict[str, Any], expires: int) -> None:
        """Make the secret outside live until ``expires`` (ns), or raise: the lease is
        renewed only if this returns."""

    def roll_back(self, view: MountView, action: str, data: dict[str, Any]) -> None: ...


class ScheduledBackend(Backend, Protocol):
    """A backend with work of its own on the store's timer (a password rotated every
    period): ``run_due`` does what is due, on each tick and on each writer's open."""

    def run_due(self, view: MountView) -> None: ...


BackendFactory = Callable[[], Backend]


class Backends(Protocol):
    """The backends a Core serves: a registry's instances, by mount type. ``scheduled``:
    the types whose backends are ``ScheduledBackend``s, known without making them (so an
    aws mount never costs boto3's import on the timer)."""

    scheduled: frozenset[str]

    def get(self, backend_type: str) -> Backend: ...


class WriterNeeded(Exception):
    """A request served by a reader turned out to change the store: serve it again with
    the store opened for writing."""


class Session:
    """One request's view of the store: ``state`` to read, ``stage`` to change it."""

    def __init__(
        self,
        store: Store,
        request: Request,
        backends: Backends,
        *,
        past: StoreState | None = None,
        lease_ttls: tuple[int, int] = (0, 0),
    ) -> None:
        """``lease_ttls``: the server's default and maximum lease TTL (0: the system's)."""
        self.store, self.request, self.backends = store, request, backends
        self.lease_ttls = lease_ttls
        self._past = past
        self.staged: list[Event] = []

    @property
    def state(self) -> StoreState:
        """What this request reads: the store now, or as it stood at the seq asked for."""
        return self.store.state if self._past is None else self._past

    def stage(self, event: Event) -> None:
        if self._past is not None:
            raise PastRequestError("this request cannot be answered for the past")
        if not self.store.writable:
            raise WriterNeeded
        self.staged.append(event)

    def commit(self) -> list[Event]:
        """Append what this session staged (durable at ``flush``)."""
        events, self.staged = self.staged, []
        return self.store.commit(events)

    def flush(self) -> None:
        self.store.flush()

    @contextlib.contextmanager
    def unlocked(self) -> Iterator[None]:
        """Let other requests be served while this one computes something slow that
        needs nothing of the store (a password's hash): the state may change meanwhile,
        so whatever was read before must be read again after."""
        self.store.lock.release()
        try:
            yield
        finally:
            self.store.lock.acquire()

    def backend(self, backend_type: str) -> Backend:
        return self.backends.get(backend_type)

    def key_lost(self, mount: Mount) -> str:
        return key_lost(self.store, mount)


def key_lost(store: Store, mount: Mount) -> str:
    """Why values of ``mount`` cannot be opened: unmounted, or a keyring without its key."""
    removed = store.state.removed.get(mount.id)
    if removed is not None:
        return f"the data of mount '{removed.path}' was deleted at {rfc3339(removed.time)}"
    if mount.id in store.keyring.mounts:  # named there, missing from the HSM
        return f"the data key of mount '{mount.path}' is missing from the HSM"
    return (
        f"the data key of mount '{mount.path}' is missing from the keyring "
        "(was the keyring restored from an older backup?)"
    )


class MountView:
    """What a backend sees of the store: its own mount's values, sealed with its own key,
    as they stand in the session's state (now, or at the seq a request of the past asks).

    Writes are staged in the session; the Core commits them after the backend answers.
    """

    def __init__(self, session: Session, mount: Mount) -> None:
        self.session, self.mount, self.request = session, mount, session.request

    @property
    def state(self) -> StoreState:
        return self.session.state

    def seal_value(self, value: Any, *context: str) -> bytes:
        """``value`` packed and sealed with this mount's data key, bound to ``context``."""
        try:
            packed = pack(value)
        except OverflowError:  # JSON allows any integer; msgpack holds 64 bits
            raise InvalidRequestError("a number in the data does not fit in 64 bits") from None
        try:
            return self.session.store.keyring.mount_sealer(self.mount.id).seal(
                packed, self.mount.id, *context
            )
        except ShreddedError:
            raise ShreddedDataError(self.session.key_lost(self.mount)) from None

    def open_value(self, sealed: bytes, *context: str) -> Any:
        try:
            plain = self.session.store.keyring.mount_sealer(self.mount.id).open(
                sealed, self.mount.id, *context
            )
        except ShreddedError:
            raise ShreddedDataError(self.session.key_lost(self.mount)) from None
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
        store = self.session.store
        hmacs = {key: store.value_hmac(self.mount.id, item) for key, item in value.items()}
        self.session.stage(
            SecretWritten(
                **who(self.request), mount_id=self.mount.id, path=path, value=sealed, hmacs=hmacs
            )
        )

    def delete(self, path: str) -> None:
        self.session.stage(SecretDeleted(**who(self.request), mount_id=self.mount.id, path=path))

    def record_intent(self, action: str, data: dict[str, Any]) -> str:
        """Durably record, before acting outside the store, how to undo the action.

        A session that may not change anything (a request of the past, a reader) refuses
        here, before the outside world is touched.
        """
        intent_id = new_id()
        self.session.stage(
            IntentRecorded(
                **who(self.request),
                mount_id=self.mount.id,
                intent_id=intent_id,
                action=action,
                data=self.seal_value(data, "intent", intent_id),
            )
        )
        self.session.commit()
        self.session.flush()  # the intent must be durable before the outside world changes
        return intent_id

    def complete_intent(self, intent_id: str, outcome: str) -> None:
        self.session.stage(
            IntentCompleted(**who(self.request), intent_id=intent_id, outcome=outcome)
        )

    def issue_lease(
        self, internal: dict[str, Any], *, ttl: int = 0, max_ttl: int = 0, renewable: bool = True
    ) -> tuple[str, int]:
        """Stage a lease on what this request created; ``(lease id, lease duration)``."""
        lease_id = f"{self.mount.path}{self.request.path}/{uuid.uuid4()}"
        mount = self.mount
        ttl, max_ttl = bounded_ttls(mount.default_lease_ttl, mount.max_lease_ttl, ttl, max_ttl)
        self.session.stage(
            LeaseIssued(
                **who(self.request),
                mount_id=mount.id,
                lease_id=lease_id,
                path=mount.path + self.request.path,
                ttl=ttl,
                max_ttl=max_ttl,
                renewable=renewable,
                internal=self.seal_value(internal, "lease", lease_id),
                token_id=self.request.token_id,
            )
        )
        return lease_id, ttl

    def commit(self) -> None:
        self.session.commit()
