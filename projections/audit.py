"""The audit trail: a fold of the log's metadata into who did what, where and when.

It reads metadata only: written values appear as their audit HMACs, never as values, so a
trail can be shown for mounts whose data was crypto-shredded.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from projections.events import (
    AuditDeviceDisabled,
    AuditDeviceEnabled,
    Event,
    IntentCompleted,
    IntentRecorded,
    KeyRotated,
    LeaseIssued,
    LeaseRenewed,
    LeaseRevoked,
    LeaseRevokeFailed,
    MountCreated,
    MountMoved,
    MountRemoved,
    MountTuned,
    PolicyDeleted,
    PolicyWritten,
    RequestDenied,
    SecretDeleted,
    SecretRead,
    SecretWritten,
    TokenCreated,
    TokenRenewed,
    TokenRevoked,
    TokenUsed,
)
from projections.state import NANOS


def rfc3339(nanos: int) -> str:
    """A unix-nanosecond time as RFC 3339 UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(nanos // 1_000_000_000))


def rfc3339_nano(nanos: int) -> str:
    """A unix-nanosecond time as Go's RFC 3339 with nanoseconds (trailing zeros trimmed)."""
    seconds, fraction = divmod(nanos, NANOS)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{fraction:09d}".rstrip("0")
    return f"{text}.{digits}Z" if digits else f"{text}Z"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the trail. ``path`` is the full path as it stood at that moment."""

    seq: int
    time: int
    actor: str
    operation: str
    path: str
    mount: str
    mount_id: str = ""
    lease_id: str = ""
    request_id: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which entries to keep; empty fields keep everything."""

    since: int = 0
    until: int = 0
    path: str = ""
    actor: str = ""
    type: str = ""

    def keeps(self, entry: AuditEntry) -> bool:
        return (
            (not self.since or entry.time >= self.since)
            and (not self.until or entry.time <= self.until)
            and entry.path.startswith(self.path)
            and (not self.actor or _is_actor(entry.actor, self.actor))
            and (
                not self.type
                or entry.operation == self.type
                or entry.operation.startswith(self.type + ".")
            )
        )


def _is_actor(actor: str, wanted: str) -> bool:
    """Whether ``actor`` (``user@host``, or a token's ``display_name:accessor``) is the
    one ``wanted`` names: whole, by display name, or by accessor."""
    name, _, accessor = actor.rpartition(":")
    return wanted in (actor, name, accessor) if name else actor == wanted


def audit_trail(events: Iterable[Event]) -> Iterator[AuditEntry]:
    """The trail of every event, naming mounts and paths as they were at the time."""
    mounts: dict[str, str] = {}  # mount id -> mount point, kept after unmount for naming
    lease_paths: dict[str, tuple[str, str]] = {}  # lease id -> (path, mount point)
    accessors: dict[str, str] = {}  # token id -> accessor (the token id is not shown)
    for event in events:
        mount, path, lease_id = "", "", ""
        detail: dict[str, Any] = {}
        match event:
            case MountCreated():
                mounts[event.mount_id] = mount = path = event.path
                detail = {"type": event.backend_type}
            case MountRemoved():
                mount = path = event.path
            case MountMoved():
                mounts[event.mount_id] = mount = path = event.to_path
                detail = {"from": event.from_path}
            case MountTuned():
                mount = path = mounts.get(event.mount_id, "")
                detail = {
                    "default_lease_ttl": str(event.default_lease_ttl),
                    "max_lease_ttl": str(event.max_lease_ttl),
                }
            case SecretWritten():
                mount = mounts.get(event.mount_id, "")
                path = mount + event.path
                detail = {key: f"hmac-sha256:{h.hex()}" for key, h in event.hmacs.items()}
            case SecretDeleted() | SecretRead():
                mount = mounts.get(event.mount_id, "")
                path = mount + event.path
            case LeaseIssued():
                mount = mounts.get(event.mount_id, "")
                path, lease_id = event.path, event.lease_id
                lease_paths[lease_id] = (path, mount)
                detail = {"ttl": event.ttl}
            case LeaseRenewed() | LeaseRevoked() | LeaseRevokeFailed():
                lease_id = event.lease_id
                path, mount = lease_paths.get(lease_id, ("", ""))
                if isinstance(event, LeaseRevoked):
                    detail = {"reason": event.reason}
                elif isinstance(event, LeaseRevokeFailed):
                    detail = {"reason": event.reason, "error": event.error}
            case IntentRecorded():
                mount = mounts.get(event.mount_id, "")
                detail = {"action": event.action, "intent": event.intent_id}
            case IntentCompleted():
                detail = {"outcome": event.outcome, "intent": event.intent_id}
            case KeyRotated():
                detail = {"term": event.term}
            case TokenCreated():
                accessors[event.token_id] = event.accessor
                path = event.path
                detail = {
                    "accessor": event.accessor,
                    "display_name": event.display_name,
                    "policies": ",".join(event.policies),
                    "ttl": event.ttl,
                }
            case TokenRenewed() | TokenUsed() | TokenRevoked():
                detail = {"accessor": accessors.get(event.token_id, "")}
                if isinstance(event, TokenRevoked):
                    detail["reason"] = event.reason
            case PolicyWritten() | PolicyDeleted():
                path = f"sys/policies/{event.kind}/{event.name}"
            case RequestDenied():
                path = event.path
                detail = {"operation": event.operation, "reason": event.reason}
            case AuditDeviceEnabled():
                path = f"sys/audit/{event.path}"
                detail = {"type": event.device_type, "since": event.since}
            case AuditDeviceDisabled():
                path = f"sys/audit/{event.path}"
        yield AuditEntry(
            event.seq,
            event.time,
            event.actor,
            event.TYPE,
            path,
            mount,
            getattr(event, "mount_id", ""),
            lease_id,
            event.request_id,
            detail,
        )


def secret_history(
    events: Iterable[Event], path: str, current: tuple[str, str] | None
) -> list[AuditEntry]:
    """Every write and delete of ``path``: under the mount serving it now (``current``:
    mount id and path inside it, followed through remounts), or at that full path then."""
    versions = []
    for entry in audit_trail(events):
        if entry.operation not in ("secret.written", "secret.deleted"):
            continue
        here = (entry.mount_id, entry.path[len(entry.mount) :]) == current
        if here or entry.path == path:
            versions.append(entry)
    return versions
