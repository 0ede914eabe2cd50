"""The domain facts: every change to a store is one of these, appended to the log.

Each event is a frozen dataclass; on disk it is a small msgpack array whose first item,
``type``, names the class and whose others are its fields in order (see ``encode``).
``seq`` and ``time`` are not stored in the body: they come from the record header, which
the log authenticates.
"""

from __future__ import annotations

import threading
from dataclasses import MISSING, dataclass, fields
from operator import attrgetter
from typing import Any, ClassVar, TypeVar

import msgpack
from msgpack import unpackb

from eventstore import Record


@dataclass(frozen=True, kw_only=True)
class Event:
    """What every fact carries: who caused it, in which request, where and when it landed."""

    TYPE: ClassVar[str] = ""
    actor: str
    request_id: str
    seq: int = 0
    time: int = 0  # unix nanoseconds, from the record header


@dataclass(frozen=True, kw_only=True)
class MountCreated(Event):
    TYPE: ClassVar[str] = "mount.created"
    mount_id: str
    path: str
    backend_type: str
    description: str = ""
    default_lease_ttl: int = 0  # seconds; 0 means the system default
    max_lease_ttl: int = 0
    key_in_hsm: bool = False  # the mount's data key is a non-extractable key in the HSM


@dataclass(frozen=True, kw_only=True)
class MountRemoved(Event):
    TYPE: ClassVar[str] = "mount.removed"
    mount_id: str
    path: str


@dataclass(frozen=True, kw_only=True)
class MountMoved(Event):
    TYPE: ClassVar[str] = "mount.moved"
    mount_id: str
    from_path: str
    to_path: str


@dataclass(frozen=True, kw_only=True)
class MountTuned(Event):
    """A mount's description or lease TTLs changed; each field holds its new value."""

    TYPE: ClassVar[str] = "mount.tuned"
    mount_id: str
    description: str
    default_lease_ttl: int  # seconds; 0 means the system default
    max_lease_ttl: int


@dataclass(frozen=True, kw_only=True)
class SecretWritten(Event):
    """A backend stored a value; ``value`` is sealed with the mount's data key."""

    TYPE: ClassVar[str] = "secret.written"
    mount_id: str
    path: str  # relative to the mount, so a remount keeps it
    value: bytes
    hmacs: dict[str, bytes]  # key -> HMAC-SHA256 of its value, keyed per mount (dies with it)


@dataclass(frozen=True, kw_only=True)
class SecretRead(Event):
    """Someone read a path (found or not); no value is recorded."""

    TYPE: ClassVar[str] = "secret.read"
    mount_id: str
    path: str


@dataclass(frozen=True, kw_only=True)
class KeyRotated(Event):
    """A new barrier key term was installed; records from here on are sealed under it."""

    TYPE: ClassVar[str] = "key.rotated"
    term: int


@dataclass(frozen=True, kw_only=True)
class SecretDeleted(Event):
    TYPE: ClassVar[str] = "secret.deleted"
    mount_id: str
    path: str


@dataclass(frozen=True, kw_only=True)
class LeaseIssued(Event):
    """A backend handed out a secret that must be revoked later.

    ``internal`` is what revocation needs (e.g. the IAM user), sealed with the mount's key.
    """

    TYPE: ClassVar[str] = "lease.issued"
    lease_id: str
    mount_id: str
    path: str  # the full request path the secret was issued at
    ttl: int  # seconds from issue to expiry
    max_ttl: int  # seconds from issue beyond which renewals cannot reach
    renewable: bool
    internal: bytes
    token_id: str = ""  # the keyed hash of the token that obtained it (revoked with it)


@dataclass(frozen=True, kw_only=True)
class LeaseRenewed(Event):
    TYPE: ClassVar[str] = "lease.renewed"
    lease_id: str
    expires: int  # unix nanoseconds


@dataclass(frozen=True, kw_only=True)
class LeaseRevoked(Event):
    TYPE: ClassVar[str] = "lease.revoked"
    lease_id: str
    reason: str  # one of REVOKE_REASONS


REVOKE_REASONS = ("explicit", "expired", "prefix", "unmount", "remount", "forced", "token")


@dataclass(frozen=True, kw_only=True)
class LeaseRevokeFailed(Event):
    """The backend could not revoke; the lease stays live and is retried with backoff."""

    TYPE: ClassVar[str] = "lease.revoke_failed"
    lease_id: str
    reason: str  # why it was being revoked; a later successful retry records the same
    error: str
    attempt: int


@dataclass(frozen=True, kw_only=True)
class IntentRecorded(Event):
    """A backend is about to act outside the store; ``data`` (sealed) says how to undo it."""

    TYPE: ClassVar[str] = "intent.recorded"
    intent_id: str
    mount_id: str
    action: str
    data: bytes


@dataclass(frozen=True, kw_only=True)
class IntentCompleted(Event):
    """The outcome of an intent: ``done``, ``failed`` or ``rolled_back``."""

    TYPE: ClassVar[str] = "intent.completed"
    intent_id: str
    outcome: str


@dataclass(frozen=True, kw_only=True)
class TokenCreated(Event):
    """A token was issued. ``token_id`` is a keyed hash of the token (``Keyring.token_id``):
    the token itself is never recorded. ``parent`` is the parent's ``token_id`` ("" for an
    orphan); ``path`` is where it was created (``auth/token/create``, a login path)."""

    TYPE: ClassVar[str] = "token.created"
    token_id: str
    accessor: str
    policies: list[str]
    path: str
    display_name: str
    ttl: int  # seconds; 0: it never expires (root tokens)
    explicit_max_ttl: int
    period: int
    num_uses: int  # 0: unlimited
    renewable: bool
    parent: str
    meta: dict[str, str]
    token_type: str = "service"


@dataclass(frozen=True, kw_only=True)
class TokenRenewed(Event):
    TYPE: ClassVar[str] = "token.renewed"
    token_id: str
    expires: int  # unix nanoseconds


@dataclass(frozen=True, kw_only=True)
class TokenUsed(Event):
    """A token with limited uses served a request (one use fewer)."""

    TYPE: ClassVar[str] = "token.used"
    token_id: str


@dataclass(frozen=True, kw_only=True)
class TokenRevoked(Event):
    TYPE: ClassVar[str] = "token.revoked"
    token_id: str
    reason: str  # explicit, parent, expired, uses, orphan-parent (children kept), auth-disabled


@dataclass(frozen=True, kw_only=True)
class TokenRoleWritten(Event):
    """A token role (``auth/token/roles/NAME``): what tokens created through it get."""

    TYPE: ClassVar[str] = "token.role_written"
    name: str
    settings: dict[str, object]


@dataclass(frozen=True, kw_only=True)
class TokenRoleDeleted(Event):
    TYPE: ClassVar[str] = "token.role_deleted"
    name: str


@dataclass(frozen=True, kw_only=True)
class PolicyWritten(Event):
    TYPE: ClassVar[str] = "policy.written"
    name: str
    rules: str  # the policy's text as given (HCL or JSON)
    kind: str = "acl"  # or "password": how passwords the store generates are made


@dataclass(frozen=True, kw_only=True)
class PolicyDeleted(Event):
    TYPE: ClassVar[str] = "policy.deleted"
    name: str
    kind: str = "acl"


@dataclass(frozen=True, kw_only=True)
class RequestDenied(Event):
    """A request was refused before it was routed (``actor`` names who asked)."""

    TYPE: ClassVar[str] = "request.denied"
    operation: str
    path: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class AuditDeviceEnabled(Event):
    """An audit device was enabled at ``path``; it writes the entries of every event from
    seq ``since`` on (back-filled from the log when ``since`` is before this event)."""

    TYPE: ClassVar[str] = "audit.enabled"
    path: str
    device_type: str
    description: str
    options: dict[str, str]
    since: int


@dataclass(frozen=True, kw_only=True)
class AuditDeviceDisabled(Event):
    TYPE: ClassVar[str] = "audit.disabled"
    path: str


EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        MountCreated,
        MountRemoved,
        MountMoved,
        MountTuned,
        SecretWritten,
        SecretDeleted,
        SecretRead,
        KeyRotated,
        LeaseIssued,
        LeaseRenewed,
        LeaseRevoked,
        LeaseRevokeFailed,
        IntentRecorded,
        IntentCompleted,
        TokenCreated,
        TokenRenewed,
        TokenUsed,
        TokenRevoked,
        TokenRoleWritten,
        TokenRoleDeleted,
        PolicyWritten,
        PolicyDeleted,
        RequestDenied,
        AuditDeviceEnabled,
        AuditDeviceDisabled,
    )
}
_HEADER_FIELDS = frozenset({"seq", "time"})
_FIELDS = {
    cls: tuple(f.name for f in fields(cls) if f.name not in _HEADER_FIELDS)
    for cls in EVENT_TYPES.values()
}
_DEFAULTS = {
    cls: {f.name: f.default for f in fields(cls) if f.default is not MISSING}
    for cls in EVENT_TYPES.values()
}
_GETTERS = {cls: attrgetter(*names) for cls, names in _FIELDS.items()}
# By type: the class, and the names a body's items are given to in order: "seq" first,
# standing where the body has the type (``decode`` then gives seq the header's).
_DECODING = {cls.TYPE: (cls, ("seq", *names)) for cls, names in _FIELDS.items()}
_new = object.__new__
_packers = threading.local()
E = TypeVar("E", bound=Event)


def pack(value: Any) -> bytes:
    """``msgpack.packb(value, use_bin_type=True)`` with a packer kept per thread: building
    one per call costs more than packing a small event."""
    try:
        packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(value)  # type: ignore[no-any-return]


class UnknownEventError(ValueError):
    """A record body that is not an event this version knows."""


def encode(event: Event) -> bytes:
    """The msgpack body of ``event``: ``[type, field, field, ...]`` in declaration order.

    An array rather than a map keeps field names out of every record; a later version may
    only add fields at the end, with defaults, so older records still decode.
    """
    cls = type(event)
    return pack([cls.TYPE, *_GETTERS[cls](event)])


def stamped(event: E, seq: int, time: int) -> E:
    """A copy of ``event`` with the ``seq`` and ``time`` the log gave it (built as ``decode``
    builds events: ``dataclasses.replace`` would run ``__init__``, twice as slow)."""
    copy = _new(type(event))
    copy.__dict__.update(event.__dict__, seq=seq, time=time)
    return copy


def decode(record: Record) -> Event:
    """The event a record carries, with ``seq`` and ``time`` from its header."""
    body = unpackb(record.body, raw=False)
    try:
        cls, names = _DECODING[body[0]]
    except (KeyError, IndexError, TypeError):  # not an array, or not a type we know
        raise UnknownEventError(f"record {record.seq} holds an unknown event type") from None
    # Built without __init__, its fields set in its __dict__ at once: a frozen dataclass's
    # generated __init__ sets them one by one and doubles replay time (events have no
    # __slots__ for this; they live only while they are folded or shown).
    event = _new(cls)
    given = event.__dict__
    given.update(zip(names, body, strict=False))
    if len(body) != len(names):  # written by an older version, or by a newer one
        if len(body) > len(names):
            raise UnknownEventError(f"record {record.seq} holds an unknown event type")
        for name in names[len(body) :]:
            if name not in _DEFAULTS[cls]:
                raise UnknownEventError(f"record {record.seq} lacks the field {name}")
            given[name] = _DEFAULTS[cls][name]
    given["seq"], given["time"] = record.seq, record.timestamp
    return event
