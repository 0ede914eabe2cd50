"""``sys/auth``: the auth methods enabled, in Vault's paths and shapes.

An auth method is a mount like any other, in the same mount table and by the same events
(``mount.created``, ``mount.tuned``, ``mount.removed``), at ``auth/<path>/``; the token
store is fixed at ``auth/token/`` and served without the table. ``sys/auth`` lists them,
``sys/auth/PATH`` enables (``type``, ``description``, ``config``), reads or disables one,
``sys/auth/PATH/tune`` reads or changes its description and TTLs. Disabling revokes every
token issued through the method (with their children and leases) before the mount and
its data key go.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from backends.contract import Session
from backends.errors import ConflictError, InvalidRequestError
from backends.expiration import ExpirationManager
from backends.mounting import stage_mount
from backends.paths import mount_point
from backends.request import Request, Response, who
from backends.token import TOKEN_DEFAULT_TTL, revoke_tree
from backends.version import VAULT_VERSION
from projections import Mount, MountRemoved, StoreState

AUTH = "auth/"
TOKEN_MOUNT = "auth/token/"
AUTH_METHODS = frozenset({"userpass", "approle"})  # the types sys/auth enables
_UUIDS = uuid.UUID("0a17c0de-7a11-4c0f-9d8e-7661756c746c")  # namespace of derived uuids

Tune = Callable[[Session, str], Response]


def serve_auth(session: Session, request: Request, path: str, op: str, tune: Tune) -> Response:
    """``sys/auth[/PATH[/tune]]``; ``tune`` is the mount table's, given ``auth/PATH``."""
    target = path.removeprefix("auth").strip("/")
    if not target and op == "read":
        return list_auth(session)
    if target == "tune" or target.endswith("/tune"):
        point = AUTH + mount_point(target.removesuffix("tune") or "/")
        if op == "read":
            return read_tune(session, point)
        if op == "write":
            if point == TOKEN_MOUNT:
                raise InvalidRequestError("the token store's settings are fixed on this server")
            return tune(session, point)
    elif target and op == "read":
        return read_auth(session, AUTH + mount_point(target))
    elif target and op == "write":
        return enable(session, AUTH + mount_point(target))
    elif target and op == "delete":
        return disable(session, AUTH + mount_point(target))
    raise InvalidRequestError(f"unsupported operation: {op} sys/{request.path}")


def auth_mounts(state: StoreState) -> list[Mount]:
    """The enabled auth methods but the token store, by path."""
    return [m for m in state.mounts.sorted() if m.path.startswith(AUTH)]


def list_auth(session: Session) -> Response:
    data = {TOKEN_MOUNT.removeprefix(AUTH): auth_info(_token_mount(session))}
    for mount in auth_mounts(session.state):
        data[mount.path.removeprefix(AUTH)] = auth_info(mount)
    return Response(data=data)


def read_auth(session: Session, path: str) -> Response:
    mount = _token_mount(session) if path == TOKEN_MOUNT else session.state.mounts.at(path)
    if mount is None:
        raise InvalidRequestError(f"No auth engine at {path.removeprefix(AUTH)}")
    return Response(data=auth_info(mount))


def enable(session: Session, path: str) -> Response:
    data: dict[str, Any] = session.request.data
    method = data.get("type")
    if not method or not isinstance(method, str):
        raise InvalidRequestError("backend type must be specified as a string")
    for existing in [TOKEN_MOUNT, *session.state.mounts.by_path]:
        if existing.startswith(AUTH) and (existing.startswith(path) or path.startswith(existing)):
            raise ConflictError(f"path is already in use at {existing.removeprefix(AUTH)}")
    if method not in AUTH_METHODS:
        raise InvalidRequestError(f"plugin not found in the catalog: {method}")
    session.backend(method)
    return stage_mount(session, path, method)


def disable(session: Session, path: str) -> Response:
    """Revoke the tokens the method issued, then remove it (Vault's: disabling a path
    where nothing is enabled succeeds, doing nothing)."""
    if path == TOKEN_MOUNT:
        raise InvalidRequestError("token credential backend cannot be disabled")
    mount = session.state.mounts.at(path)
    if mount is None:
        return Response()
    issued = [t for t in session.state.tokens.values() if t.path.startswith(path)]
    for token in sorted(issued, key=lambda t: t.issued):
        if token.id in session.state.tokens:  # not gone with a parent already
            revoke_tree(session, token, "auth-disabled")
    ExpirationManager(session).revoke_mount(mount.id, "unmount")
    session.stage(MountRemoved(**who(session.request), mount_id=mount.id, path=path))
    return Response()


def read_tune(session: Session, path: str) -> Response:
    mount = _token_mount(session) if path == TOKEN_MOUNT else session.state.mounts.at(path)
    if mount is None:
        raise InvalidRequestError(f'cannot fetch sysview for path "{path}"')
    return Response(
        data={
            "default_lease_ttl": mount.default_lease_ttl or TOKEN_DEFAULT_TTL,
            "description": mount.description,
            "force_no_cache": False,
            "max_lease_ttl": mount.max_lease_ttl or TOKEN_DEFAULT_TTL,
            "token_type": "default-service",
        }
    )


def auth_info(mount: Mount) -> dict[str, Any]:
    """An auth method as Vault's ``sys/auth`` shows one (keys in Vault's order)."""
    token = mount.path == TOKEN_MOUNT
    info: dict[str, Any] = {
        "accessor": f"auth_{mount.type}_{mount.id[:8]}",
        "config": {
            "default_lease_ttl": mount.default_lease_ttl,
            "force_no_cache": False,
            "max_lease_ttl": mount.max_lease_ttl,
            "token_type": "default-service",
        },
    }
    if not token:
        info["deprecation_status"] = "supported"
    return info | {
        "description": mount.description,
        "external_entropy_access": False,
        "local": False,
        "options": None if token else {},
        "plugin_version": "",
        "running_plugin_version": f"v{VAULT_VERSION}+builtin.vault",
        "running_sha256": "",
        "seal_wrap": False,
        "type": mount.type,
        "uuid": str(uuid.uuid5(_UUIDS, mount.id)),
    }


def _token_mount(session: Session) -> Mount:
    """The token store as a mount, with an id derived from the store's (stable for it)."""
    derived = uuid.uuid5(_UUIDS, session.store.keyring.store_id).hex
    return Mount(derived, TOKEN_MOUNT, "token", "token based credentials")
