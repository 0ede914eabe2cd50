"""The domain facts: every change to a store is one of these, appended to the log.

Each event is a frozen msgspec struct (made at a tenth of a frozen dataclass's cost: one or
more per request, one per record replayed); on disk it is a small msgpack array whose first
item, ``type``, names the class and whose others are its fields in order (see ``encode``).
``seq`` and ``time`` are not stored in the body: they come from the record header, which
the log authenticates.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any, ClassVar, TypeVar

import msgspec
from msgpack import unpackb

from eventstore import Record


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """What every fact carries: who caused it, in which request, where and when it landed."""

    TYPE: ClassVar[str] = ""
    actor: str
    request_id: str
    seq: int = 0
    time: int = 0  # unix nanoseconds, from the record header


class MountCreated(Event, frozen=True):
    TYPE: ClassVar[str] = "mount.created"
    mount_id: str
    path: str
    backend_type: str
    description: str = ""
    default_lease_ttl: int = 0  # seconds; 0 means the system default
    max_lease_ttl: int = 0
    key_in_hsm: bool = False  # the mount's data key is a non-extractable key in the HSM


class MountRemoved(Event, frozen=True):
    TYPE: ClassVar[str] = "mount.removed"
    mount_id: str
    path: str


class MountMoved(Event, frozen=True):
    TYPE: ClassVar[str] = "mount.moved"
    mount_id: str
    from_path: str
    to_path: str


class MountTuned(Event, frozen=True):
    """A mount's description or lease TTLs changed; each field holds its new value."""

    TYPE: ClassVar[str] = "mount.tuned"
    mount_id: str
    description: str
    default_lease_ttl: int  # seconds; 0 means the system default
    max_lease_ttl: int


class SecretWritten(Event, frozen=True):
    """A backend stored a value; ``value`` is sealed with the mount's data key."""

    TYPE: ClassVar[str] = "secret.written"
    mount_id: str
    path: str  # relative to the mount, so a remount keeps it
    value: bytes
    hmacs: dict[str, bytes]  # key -> HMAC-SHA256 of its value, keyed per mount (dies with it)


class SecretRead(Event, frozen=True):
    """Someone read a path (found or not); no value is recorded."""

    TYPE: ClassVar[str] = "secret.read"
    mount_id: str
    path: str


class KeyRotated(Event, frozen=True):
    """A new barrier key term was installed; records from here on are sealed under it."""

    TYPE: ClassVar[str] = "key.rotated"
    term: int


class SecretDeleted(Event, frozen=True):
    TYPE: ClassVar[str] = "secret.deleted"
    mount_id: str
    path: str


class LeaseIssued(Event, frozen=True):
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


class LeaseRenewed(Event, frozen=True):
    TYPE: ClassVar[str] = "lease.renewed"
    lease_id: str
    expires: int  # unix nanoseconds


class LeaseRevoked(Event, frozen=True):
    TYPE: ClassVar[str] = "lease.revoked"
    lease_id: str
    reason: str  # one of REVOKE_REASONS


REVOKE_REASONS = ("explicit", "expired", "prefix", "unmount", "remount", "forced", "token")


class LeaseRevokeFailed(Event, frozen=True):
    """The backend could not revoke; the lease stays live and is retried with backoff."""

    TYPE: ClassVar[str] = "lease.revoke_failed"
    lease_id: str
    reason: str  # why it was being revoked; a later successful retry records the same
    error: str
    attempt: int


class IntentRecorded(Event, frozen=True):
    """A backend is about to act outside the store; ``data`` (sealed) says how to undo it."""

    TYPE: ClassVar[str] = "intent.recorded"
    intent_id: str
    mount_id: str
    action: str
    data: bytes


class IntentCompleted(Event, frozen=True):
    """The outcome of an intent: ``done``, ``failed`` or ``rolled_back``."""

    TYPE: ClassVar[str] = "intent.completed"
    intent_id: str
    outcome: str


class TokenCreated(Event, frozen=True):
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


class TokenRenewed(Event, frozen=True):
    TYPE: ClassVar[str] = "token.renewed"
    token_id: str
    expires: int  # unix nanoseconds


class TokenUsed(Event, frozen=True):
    """A token with limited uses served a request (one use fewer)."""

    TYPE: ClassVar[str] = "token.used"
    token_id: str


class TokenRevoked(Event, frozen=True):
    TYPE: ClassVar[str] = "token.revoked"
    token_id: str
    reason: str  # explicit, parent, expired, uses, orphan-parent (children kept), auth-disabled


class TokenRoleWritten(Event, frozen=True):
    """A token role (``auth/token/roles/NAME``): what tokens created through it get."""

    TYPE: ClassVar[str] = "token.role_written"
    name: str
    settings: dict[str, object]


class TokenRoleDeleted(Event, frozen=True):
    TYPE: ClassVar[str] = "token.role_deleted"
    name: str


class PolicyWritten(Event, frozen=True):
    TYPE: ClassVar[str] = "policy.written"
    name: str
    rules: str  # the policy's text as given (HCL or JSON)
    kind: str = "acl"  # or "password": how passwords the store generates are made


class PolicyDeleted(Event, frozen=True):
    TYPE: ClassVar[str] = "policy.deleted"
    name: str
    kind: str = "acl"


class RequestDenied(Event, frozen=True):
    """A request was refused before it was routed (``actor`` names who asked)."""

    TYPE: ClassVar[str] = "request.denied"
    operation: str
    path: str
    reason: str


class AuditDeviceEnabled(Event, frozen=True):
    """An audit device was enabled at ``path``; it writes the entries of every event from
    seq ``since`` on (back-filled from the log when ``since`` is before this event)."""

    TYPE: ClassVar[str] = "audit.enabled"
    path: str
    device_type: str
    description: str
    options: dict[str, str]
    since: int


class AuditDeviceDisabled(Event, frozen=True):
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
_BASE = ("actor", "request_id")  # every body: [type, actor, request_id, own fields...]
_FIELDS = {
    cls: (*_BASE, *(name for name in cls.__struct_fields__ if name not in Event.__struct_fields__))
    for cls in EVENT_TYPES.values()
}
_GETTERS = {cls: attrgetter(*names) for cls, names in _FIELDS.items()}
E = TypeVar("E", bound=Event)


# An event's or a value's msgpack (bin for bytes, str for text): msgspec writes, for every
# type events and values hold, the bytes ``msgpack.packb(v, use_bin_type=True)`` writes, at
# under half the cost (tests/test_record_codec.py holds it to that). Thread-safe.
pack: Callable[[Any], bytes] = msgspec.msgpack.encode


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
    """A copy of ``event`` with the ``seq`` and ``time`` the log gave it."""
    return msgspec.structs.replace(event, seq=seq, time=time)


def decode(record: Record) -> Event:
    """The event a record carries, with ``seq`` and ``time`` from its header."""
    body = unpackb(record.body, raw=False)
    try:
        cls = EVENT_TYPES[body[0]]
    except (KeyError, IndexError, TypeError):  # not an array, or not a type we know
        raise UnknownEventError(f"record {record.seq} holds an unknown event type") from None
    try:  # an event's own fields are positional: an older body omits trailing defaults
        return cls(
            *body[3:], actor=body[1], request_id=body[2], seq=record.seq, time=record.timestamp
        )
    except (IndexError, TypeError):  # fields missing, or more than this version knows
        raise UnknownEventError(
            f"record {record.seq} holds a {cls.TYPE} event this version cannot read"
        ) from None
