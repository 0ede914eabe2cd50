"""``sys/audit``: the audit devices, in Vault's paths and shapes; and who could read a path.

``sys/audit`` lists the devices; a write to ``sys/audit/NAME`` enables one (``type``
``file``, ``description``, ``options``: ``file_path``, and our own ``since``, the seq, time
or age to back-fill from; by default a device starts with its own enabling), a delete
disables it. OpenBao refuses to enable devices through the API; Vault allows it, and so
do we. What a device writes, and when, is ``backends.audit_devices``'s.

``sys/vaultlog/who-could-read`` (``path``, ``at``) answers by replay: the tokens live at
that seq (not expired at its time) whose policies, as they stood then, grant ``read`` on
the path (root tokens included), and whether each had read it by then.
"""

from __future__ import annotations

import os
from typing import Any

from backends.auth import Authorizer, capabilities_of, is_sudo_path, live_token, token_actor
from backends.contract import Session
from backends.errors import InvalidRequestError
from backends.moments import resolve_at
from backends.paths import clean_path, mount_point
from backends.request import Request, Response, who
from projections.audit import rfc3339
from projections.events import AuditDeviceDisabled, AuditDeviceEnabled, SecretRead
from projections.state import AuditDevice, StoreState

DEVICE_TYPES = ("file",)
FILE_OPTIONS = ("file_path", "since")


def serve_audit(session: Session, request: Request, path: str, op: str) -> Response:
    """``sys/audit``, ``sys/audit/NAME`` and ``sys/vaultlog/who-could-read``."""
    if path == "vaultlog/who-could-read" and op == "read":
        return who_could_read(session, request)
    if path == "audit" and op in ("read", "list"):
        return list_devices(session.state)
    if path.startswith("audit/") and op == "write":
        return enable(session, path.removeprefix("audit/"))
    if path.startswith("audit/") and op == "delete":
        return disable(session, path.removeprefix("audit/"))
    raise InvalidRequestError(f"unsupported operation: {op} sys/{request.path}")


def device_info(device: AuditDevice) -> dict[str, Any]:
    """A device as Vault's ``sys/audit`` shows one; ``since`` is the first seq it writes."""
    options = {**device.options, "since": str(device.since or device.enabled)}
    return {
        "description": device.description,
        "local": False,
        "options": options,
        "path": device.path,
        "type": device.type,
    }


def list_devices(state: StoreState) -> Response:
    devices = sorted(state.audit_devices.values(), key=lambda d: d.path)
    return Response(data={d.path: device_info(d) for d in devices})


def enable(session: Session, name: str) -> Response:
    """Enable a file device at ``name``; its file must open for appending now."""
    path = mount_point(name)
    data = session.request.data
    device_type = data.get("type")
    if device_type not in DEVICE_TYPES:
        raise InvalidRequestError(f'unknown backend type: "{device_type or ""}"')
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise InvalidRequestError("options must be an object of strings")
    options = {str(key): str(value) for key, value in options.items()}
    for key in options:
        if key not in FILE_OPTIONS:
            raise InvalidRequestError(
                f'unsupported option "{key}": a file audit device takes file_path and since'
            )
    file_path = options.get("file_path", "").strip()
    if not file_path:
        raise InvalidRequestError("file_path is required")
    for existing in session.state.audit_devices:
        if existing.startswith(path) or path.startswith(existing):
            raise InvalidRequestError("path already in use")
    since = resolve_at(session.store, options["since"]) if options.get("since") else 0
    file_path = os.path.abspath(file_path)  # every process writing it names the same file
    try:
        os.close(os.open(file_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600))
    except OSError as exc:
        raise InvalidRequestError(
            f"sanity check failed; unable to open {file_path} for writing: {exc.strerror}"
        ) from None
    session.stage(
        AuditDeviceEnabled(
            **who(session.request),
            path=path,
            device_type="file",
            description=str(data.get("description") or ""),
            options={"file_path": file_path},
            since=since,
        )
    )
    return Response()


def disable(session: Session, name: str) -> Response:
    """Disable the device at ``name``; as Vault, nothing there is no error."""
    path = mount_point(name)
    if path in session.state.audit_devices:
        session.stage(AuditDeviceDisabled(**who(session.request), path=path))
    return Response()


def who_could_read(session: Session, request: Request) -> Response:
    """The tokens that could read ``path`` at ``at`` (now by default), replayed."""
    target = clean_path(str(request.data.get("path") or ""))
    if not target:
        raise InvalidRequestError("missing path: the path to ask about")
    store = session.store
    at = request.at or str(request.data.get("at") or "")
    seq = resolve_at(store, at) if at else store.head.seq
    state = store.state_at(seq)
    found = state.mounts.route(target)
    secret = (found[0].id, found[1]) if found else None
    moment, readers = 0, set()
    for event in store.events():
        if event.seq > seq:
            break
        moment = event.time
        if isinstance(event, SecretRead) and (event.mount_id, event.path) == secret:
            readers.add(event.actor)
    authorizer, rows = Authorizer(), []
    for token in state.tokens.values():
        if live_token(state, token.id, moment) is None:
            continue
        granted = capabilities_of(authorizer, state, token, target)
        sudo = not is_sudo_path(target) or "sudo" in granted
        if "root" in granted or ("read" in granted and sudo):
            rows.append(
                {
                    "accessor": token.accessor,
                    "display_name": token.display_name,
                    "policies": list(token.policies),
                    "capabilities": granted,
                    "did_read": token_actor(token) in readers,
                }
            )
    rows.sort(key=lambda row: (row["display_name"], row["accessor"]))
    return Response(data={"path": target, "seq": seq, "time": rfc3339(moment), "tokens": rows})
