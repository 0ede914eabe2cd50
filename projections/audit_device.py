"""What a file audit device writes: one JSON line per event of the log, in Vault's shape.

Each line is Vault's ``response`` entry of the request that caused the event, as far as
the event tells it: ``time``, ``type``, ``auth`` (who: accessor, display name, policies,
token type; never a token nor its keyed hash), ``request`` (its id, the operation, the
path of what changed and the mount serving it) and ``response``, or ``error`` for a
refusal. Beyond Vault's fields, ``seq`` and ``event`` name the record the line is
rendered from, so a device knows where it stopped and a reader what happened.

Secret values appear only as the audit HMACs their ``secret.written`` carries (keyed per
mount, as ``sys/audit-hash`` computes them); a read records no value, so its line has
none. Lines are rendered in log order by an ``EntryRenderer``, which folds in what it
must know to name things: mounts and tokens' policies.
"""

from __future__ import annotations

import json
from typing import Any

from projections.audit import rfc3339_nano
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
from projections.state import StoreState

SYSTEM = ("sys/", "system")
TOKENS = ("auth/token/", "token")
STORE_ACTORS = ("vaultlog", "anonymous")  # the store itself, and callers without a token
_OPERATIONS = {"write": "update"}  # a request's operation as Vault names it


class EntryRenderer:
    """Renders events into entries, in log order from ``seq + 1`` on, keeping what it
    must know of the store to name mounts and tokens."""

    def __init__(self, state: StoreState) -> None:
        """Start after ``state``: the store as it stood at the last seq before the first
        event to render."""
        self.seq = state.seq
        self.mounts = {m.id: (m.path, m.type) for m in state.mounts.by_id.values()}
        self.mounts.update({m.id: (m.path, m.type) for m in state.removed.values()})
        self.by_path = {m.path: m.type for m in state.mounts.by_id.values()}
        # accessor -> (policies, token type); token id -> accessor (the id is never shown)
        self.tokens = {t.accessor: (list(t.policies), t.token_type) for t in state.tokens.values()}
        self.accessors = {t.id: t.accessor for t in state.tokens.values()}
        self._revoked: list[str] = []  # tokens forgotten once their request's events are done
        self._request = ""

    def entry(self, event: Event) -> dict[str, Any]:
        """The entry of ``event`` (the next in the log), which is then folded in."""
        if event.request_id != self._request:
            for token_id in self._revoked:
                self.tokens.pop(self.accessors.pop(token_id, ""), None)
            self._revoked, self._request = [], event.request_id
        operation, path, mount, details = self._describe(event)
        entry: dict[str, Any] = {
            "time": rfc3339_nano(event.time),
            "type": "response",
            "auth": self._auth(event.actor),
        }
        request: dict[str, Any] = {
            "id": event.request_id,
            "operation": operation,
            "mount_point": mount[0],
            "mount_type": mount[1],
            "path": path,
            "remote_address": "",
        }
        if "request" in details:
            request["data"] = details["request"]
        entry["request"] = request
        if isinstance(event, RequestDenied | LeaseRevokeFailed):
            entry["error"] = details["error"]
        else:
            response: dict[str, Any] = {"mount_point": mount[0], "mount_type": mount[1]}
            for key in ("auth", "secret", "data"):
                if key in details:
                    response[key] = details[key]
            entry["response"] = response
        entry["seq"], entry["event"] = event.seq, event.TYPE
        self._fold(event)
        self.seq = event.seq
        return entry

    def _auth(self, actor: str) -> dict[str, Any]:
        """Who acted: a token (``display_name:accessor``), the local user of an embedded
        store (who acts as root), or the store itself."""
        name, _, accessor = actor.rpartition(":")
        if name:
            policies, token_type = self.tokens.get(accessor, ([], "service"))
        elif actor in STORE_ACTORS:
            name, accessor, policies, token_type = actor, "", [], ""
        else:
            name, accessor, policies, token_type = actor, "", ["root"], "service"
        return {
            "accessor": accessor,
            "display_name": name,
            "policies": policies,
            "token_policies": policies,
            "token_type": token_type,
        }

    def _mount(self, mount_id: str) -> tuple[str, str]:
        return self.mounts.get(mount_id, ("", ""))

    def _route(self, path: str) -> tuple[str, str]:
        """The mount serving ``path`` now (the longest mount point it starts with)."""
        candidate = path if path.endswith("/") else path + "/"
        end = len(candidate)
        while end > 0:
            mount_type = self.by_path.get(candidate[:end])
            if mount_type is not None:
                return candidate[:end], mount_type
            end = candidate.rfind("/", 0, end - 1) + 1
        return "", ""

    def _describe(self, event: Event) -> tuple[str, str, tuple[str, str], dict[str, Any]]:
        """``(operation, path, (mount point, mount type), details)``: details may hold the
        request's ``data``, the response's ``data``, ``auth`` or ``secret``, an ``error``."""
        details: dict[str, Any]
        match event:
            case SecretWritten():
                mount = self._mount(event.mount_id)
                hmacs = {key: f"hmac-sha256:{h.hex()}" for key, h in event.hmacs.items()}
                return "update", mount[0] + event.path, mount, {"request": hmacs}
            case SecretRead() | SecretDeleted():
                mount = self._mount(event.mount_id)
                operation = "read" if isinstance(event, SecretRead) else "delete"
                return operation, mount[0] + event.path, mount, {}
            case MountCreated():
                details = {"request": {"type": event.backend_type}}
                return "update", f"sys/mounts/{event.path.rstrip('/')}", SYSTEM, details
            case MountRemoved():
                return "delete", f"sys/mounts/{event.path.rstrip('/')}", SYSTEM, {}
            case MountMoved():
                details = {"request": {"from": event.from_path, "to": event.to_path}}
                return "update", "sys/remount", SYSTEM, details
            case MountTuned():
                tuned = {
                    "default_lease_ttl": event.default_lease_ttl,
                    "max_lease_ttl": event.max_lease_ttl,
                }
                path = f"sys/mounts/{self._mount(event.mount_id)[0]}tune"
                return "update", path, SYSTEM, {"request": tuned}
            case KeyRotated():
                return "update", "sys/rotate", SYSTEM, {"data": {"term": event.term}}
            case LeaseIssued():
                mount = self._mount(event.mount_id)
                return "read", event.path, mount, {"secret": {"lease_id": event.lease_id}}
            case LeaseRenewed():
                details = {"request": {"lease_id": event.lease_id}}
                return "update", "sys/leases/renew", SYSTEM, details
            case LeaseRevoked():
                given = {"lease_id": event.lease_id}
                details = {"request": given, "data": {"reason": event.reason}}
                return "update", "sys/leases/revoke", SYSTEM, details
            case LeaseRevokeFailed():
                details = {"request": {"lease_id": event.lease_id}, "error": event.error}
                return "update", "sys/leases/revoke", SYSTEM, details
            case IntentRecorded() | IntentCompleted():
                mount = self._mount(getattr(event, "mount_id", ""))
                if isinstance(event, IntentRecorded):
                    data = {"intent": event.intent_id, "action": event.action}
                else:
                    data = {"intent": event.intent_id, "outcome": event.outcome}
                return "update", mount[0], mount, {"data": data}
            case TokenCreated():
                auth = {
                    "accessor": event.accessor,
                    "display_name": event.display_name,
                    "policies": list(event.policies),
                    "token_policies": list(event.policies),
                    "token_type": event.token_type,
                }
                return "update", event.path, TOKENS, {"auth": auth}
            case TokenRenewed() | TokenUsed() | TokenRevoked():
                given = {"accessor": self.accessors.get(event.token_id, "")}
                if isinstance(event, TokenRenewed):
                    return "update", "auth/token/renew-accessor", TOKENS, {"request": given}
                if isinstance(event, TokenUsed):
                    return "update", "auth/token/", TOKENS, {"request": given}
                details = {"request": given, "data": {"reason": event.reason}}
                return "update", "auth/token/revoke-accessor", TOKENS, details
            case PolicyWritten() | PolicyDeleted():
                operation = "update" if isinstance(event, PolicyWritten) else "delete"
                return operation, f"sys/policies/{event.kind}/{event.name}", SYSTEM, {}
            case RequestDenied():
                operation = _OPERATIONS.get(event.operation, event.operation)
                return operation, event.path, self._route(event.path), {"error": event.reason}
            case AuditDeviceEnabled():
                details = {"request": {"type": event.device_type}}
                return "update", f"sys/audit/{event.path.rstrip('/')}", SYSTEM, details
            case AuditDeviceDisabled():
                return "delete", f"sys/audit/{event.path.rstrip('/')}", SYSTEM, {}
        return "update", "", ("", ""), {}

    def _fold(self, event: Event) -> None:
        match event:
            case MountCreated():
                self.mounts[event.mount_id] = (event.path, event.backend_type)
                self.by_path[event.path] = event.backend_type
            case MountRemoved():
                self.by_path.pop(event.path, None)
            case MountMoved():
                mount_type = self._mount(event.mount_id)[1]
                self.by_path.pop(event.from_path, None)
                self.mounts[event.mount_id] = (event.to_path, mount_type)
                self.by_path[event.to_path] = mount_type
            case TokenCreated():
                self.tokens[event.accessor] = (list(event.policies), event.token_type)
                self.accessors[event.token_id] = event.accessor
            case TokenRevoked():
                self._revoked.append(event.token_id)


def entry_line(entry: dict[str, Any]) -> bytes:
    """An entry as the device writes it: one line of JSON (control characters escaped)."""
    return json.dumps(entry, separators=(",", ":")).encode() + b"\n"
