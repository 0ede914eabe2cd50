"""``approle``: machines that log in with a role id and a secret id, in Vault's paths and
shapes.

``role`` (list), ``role/NAME`` (write the token settings, ``secret_id_ttl``,
``secret_id_num_uses``, ``bind_secret_id``; read; delete), ``role/NAME/role-id`` (read, or
write a custom one), ``role/NAME/secret-id`` (write: a new secret id and its accessor;
list: the accessors), ``role/NAME/custom-secret-id``, ``role/NAME/secret-id/lookup`` and
``/destroy``, ``role/NAME/secret-id-accessor/lookup`` and ``/destroy``, and ``login``
(``role_id``, ``secret_id``), which anyone may call and which answers a token.

A secret id is never stored: only its HMAC-SHA256 under a random key kept sealed in the
mount (``key``), which names the secret id's entry (``secret-id/ROLE/HMAC``); role ids
are indexed the same way (``role-id/HMAC``). Unmounting destroys the mount's data key and
with it that key, so not even a guess can be confirmed afterwards. A secret id with
limited uses has its count written down at each login, and goes with its last use.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
import uuid
from typing import Any, ClassVar

from backends.contract import MountView, PathRules
from backends.errors import InvalidRequestError, NoHandlerError
from backends.request import Request, Response
from backends.token_settings import TokenSettings, flag, refuse_cidrs
from backends.ttl import parse_duration
from projections.audit import rfc3339_nano
from projections.state import NANOS

ROLE, ROLE_ID, SECRET_ID, KEY = "role/", "role-id/", "secret-id/", "key"
INVALID = "invalid role or secret ID"
UNSUPPORTED = "1 error occurred:\n\t* unsupported path\n\n"
NEVER = "0001-01-01T00:00:00Z"  # Go's zero time: a secret id that does not expire
_NAME = re.compile(r"\w(?:[\w.-]*\w)?")


class AppRoleBackend:
    """Roles by name (``role/NAME``), each with a role id and the secret ids issued for it."""

    paths: ClassVar[PathRules] = PathRules(audit_reads=False, unauthenticated=("login",))

    def handle(self, view: MountView, request: Request) -> Response:
        path, op = request.path.strip("/"), request.operation
        if path == "login" and op == "write":
            return self.login(view)
        if path == "role" and op == "list":
            return Response(data={"keys": view.list(ROLE)})
        head, _, rest = path.partition("/")
        name, _, action = rest.partition("/")
        if head != "role" or not _NAME.fullmatch(name.lower()):
            raise NoHandlerError(UNSUPPORTED)
        name = name.lower()
        route = (action, op)
        if route == ("", "read"):
            role = view.get(ROLE + name)
            return Response() if role is None else Response(data=_describe_role(role))
        if route == ("", "write"):
            return self.write_role(view, name)
        if route == ("", "delete"):
            return self.delete_role(view, name)
        if route == ("role-id", "read"):
            role = view.get(ROLE + name)
            return Response() if role is None else Response(data={"role_id": role["role_id"]})
        if route == ("role-id", "write"):
            return self.write_role_id(view, name)
        if route in (("secret-id", "write"), ("custom-secret-id", "write")):
            return self.new_secret_id(view, name, custom=action == "custom-secret-id")
        if route == ("secret-id", "list"):
            _role(view, name)
            accessors = [entry["accessor"] for _, entry in _secret_ids(view, name)]
            return Response(data={"keys": sorted(accessors)})
        if op == "write" and action in _SECRET_ID_ACTIONS:
            return self.secret_id_action(view, name, action)
        raise NoHandlerError(UNSUPPORTED)

    # ---- roles ---------------------------------------------------------------------------

    def write_role(self, view: MountView, name: str) -> Response:
        data = view.request.data
        role = view.get(ROLE + name) or {}
        refuse_cidrs(data)
        settings = TokenSettings.of(role).updated(data)
        if not flag("bind_secret_id", data.get("bind_secret_id", True)):
            # Vault's other constraints are CIDR bindings, which this server cannot keep.
            raise InvalidRequestError("at least one constraint should be enabled on the role")
        num_uses = _count(data, "secret_id_num_uses", role.get("secret_id_num_uses", 0))
        secret_id_ttl = role.get("secret_id_ttl", 0)
        if data.get("secret_id_ttl") not in (None, ""):
            secret_id_ttl = parse_duration(data["secret_id_ttl"])
        key = _key(view, create=True)
        role_id = str(data.get("role_id") or role.get("role_id") or uuid.uuid4())
        if role_id != role.get("role_id"):
            _index_role_id(view, key, name, role.get("role_id", ""), role_id)
        view.put(
            ROLE + name,
            {
                **settings.stored(),
                "role_id": role_id,
                "bind_secret_id": True,
                "secret_id_num_uses": num_uses,
                "secret_id_ttl": secret_id_ttl,
            },
        )
        return Response()

    def delete_role(self, view: MountView, name: str) -> Response:
        """The role, its role id and every secret id issued for it."""
        role = view.get(ROLE + name)
        if role is None:
            return Response()
        for path, _ in _secret_ids(view, name):
            view.delete(path)
        view.delete(ROLE_ID + _digest(_key(view), role["role_id"]))
        view.delete(ROLE + name)
        return Response()

    def write_role_id(self, view: MountView, name: str) -> Response:
        role = view.get(ROLE + name)
        if role is None:
            raise NoHandlerError(UNSUPPORTED)
        role_id = view.request.data.get("role_id")
        if not role_id or not isinstance(role_id, str):
            raise InvalidRequestError("missing role_id")
        if role_id != role["role_id"]:
            _index_role_id(view, _key(view), name, role["role_id"], role_id)
            view.put(ROLE + name, {**role, "role_id": role_id})
        return Response()

    # ---- secret ids ----------------------------------------------------------------------

    def new_secret_id(self, view: MountView, name: str, *, custom: bool) -> Response:
        """A secret id for the role (given, for ``custom-secret-id``), answered once and
        kept only as its HMAC; ``num_uses`` and ``ttl`` may narrow the role's."""
        role = _role(view, name, missing=NoHandlerError)
        data = view.request.data
        refuse_cidrs(data)
        secret_id = data.get("secret_id") if custom else str(uuid.uuid4())
        if not secret_id or not isinstance(secret_id, str):
            raise InvalidRequestError("missing secret_id")
        path = f"{SECRET_ID}{name}/{_digest(_key(view), secret_id)}"
        if view.get(path) is not None:
            raise InvalidRequestError("failed to store secret_id: SecretID is already registered")
        num_uses = _count(data, "num_uses", role["secret_id_num_uses"])
        if role["secret_id_num_uses"] and not 0 < num_uses <= role["secret_id_num_uses"]:
            raise InvalidRequestError(
                "num_uses cannot be higher than the role's secret_id_num_uses"
            )
        ttl = parse_duration(data["ttl"]) if data.get("ttl") else role["secret_id_ttl"]
        if role["secret_id_ttl"] and not 0 < ttl <= role["secret_id_ttl"]:
            raise InvalidRequestError("ttl cannot be longer than the role's secret_id_ttl")
        now = time.time_ns()
        entry = {
            "accessor": str(uuid.uuid4()),
            "num_uses": num_uses,
            "ttl": ttl,
            "created": now,
            "updated": now,
            "expires": now + ttl * NANOS if ttl else 0,
            "metadata": _metadata(data.get("metadata")),
        }
        view.put(path, entry)
        return Response(
            data={
                "secret_id": secret_id,
                "secret_id_accessor": entry["accessor"],
                "secret_id_num_uses": num_uses,
                "secret_id_ttl": ttl,
            }
        )

    def secret_id_action(self, view: MountView, name: str, action: str) -> Response:
        """Look up or destroy a secret id, named by itself or by its accessor."""
        _role(view, name)
        data = view.request.data
        if action.startswith("secret-id/"):
            secret_id = data.get("secret_id")
            if not secret_id or not isinstance(secret_id, str):
                raise InvalidRequestError("missing secret_id")
            path = f"{SECRET_ID}{name}/{_digest(_key(view), secret_id)}"
            entry = view.get(path)
        else:
            accessor = data.get("secret_id_accessor")
            if not accessor or not isinstance(accessor, str):
                raise InvalidRequestError("missing secret_id_accessor")
            found = [(p, e) for p, e in _secret_ids(view, name) if e["accessor"] == accessor]
            if not found:
                raise InvalidRequestError(
                    f'failed to find accessor entry for secret_id_accessor: "{accessor[:64]}"'
                )
            path, entry = found[0]
        if entry is None:
            return Response()
        if action.endswith("/destroy"):
            view.delete(path)
            return Response()
        return Response(data=_describe_secret_id(entry))

    # ---- login ---------------------------------------------------------------------------

    def login(self, view: MountView) -> Response:
        data = view.request.data
        role_id, secret_id = data.get("role_id"), data.get("secret_id")
        if not role_id or not isinstance(role_id, str):
            raise InvalidRequestError("missing role_id")
        key = _key(view)
        index = view.get(ROLE_ID + _digest(key, role_id)) if key else None
        name = index["role"] if index else ""
        role = view.get(ROLE + name) if name else None
        if role is None:
            raise InvalidRequestError(INVALID)
        if not secret_id or not isinstance(secret_id, str):
            raise InvalidRequestError("missing secret_id")
        path = f"{SECRET_ID}{name}/{_digest(key, secret_id)}"
        entry = view.get(path)
        if entry is None or (entry["expires"] and entry["expires"] <= time.time_ns()):
            raise InvalidRequestError(INVALID)
        if entry["num_uses"] == 1:
            view.delete(path)  # its last use
        elif entry["num_uses"]:
            view.put(path, {**entry, "num_uses": entry["num_uses"] - 1, "updated": time.time_ns()})
        auth = TokenSettings.of(role).issue(
            view,
            name="",
            path=f"{view.mount.path}login",
            meta={**entry["metadata"], "role_name": name},
        )
        return Response(auth=auth)


_SECRET_ID_ACTIONS = (
    "secret-id/lookup",
    "secret-id/destroy",
    "secret-id-accessor/lookup",
    "secret-id-accessor/destroy",
)


def _key(view: MountView, *, create: bool = False) -> bytes:
    """The mount's HMAC key for role and secret ids (made with its first role)."""
    stored = view.get(KEY)
    if stored is not None:
        return bytes.fromhex(stored["key"])
    if not create:
        return b""
    key = os.urandom(32)
    view.put(KEY, {"key": key.hex()})
    return key


def _digest(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def _index_role_id(view: MountView, key: bytes, name: str, old: str, new: str) -> None:
    """Point ``new`` at the role (refused if another role has it); forget ``old``."""
    index = view.get(ROLE_ID + _digest(key, new))
    if index is not None and index["role"] != name:
        raise InvalidRequestError("role_id already in use")
    if old:
        view.delete(ROLE_ID + _digest(key, old))
    view.put(ROLE_ID + _digest(key, new), {"role": name})


def _role(
    view: MountView,
    name: str,
    missing: type[InvalidRequestError | NoHandlerError] = InvalidRequestError,
) -> dict[str, Any]:
    role = view.get(ROLE + name)
    if role is None:
        raise missing(f'role "{name}" does not exist')
    return role


def _secret_ids(view: MountView, name: str) -> list[tuple[str, dict[str, Any]]]:
    prefix = f"{SECRET_ID}{name}/"
    found = []
    for child in view.list(prefix):
        entry = view.get(prefix + child)
        if entry is not None:
            found.append((prefix + child, entry))
    return found


def _describe_role(role: dict[str, Any]) -> dict[str, Any]:
    return {
        "bind_secret_id": role["bind_secret_id"],
        "local_secret_ids": False,
        "secret_id_bound_cidrs": None,
        "secret_id_num_uses": role["secret_id_num_uses"],
        "secret_id_ttl": role["secret_id_ttl"],
        **TokenSettings.of(role).describe(),
    }


def _describe_secret_id(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "cidr_list": [],
        "creation_time": rfc3339_nano(entry["created"]),
        "expiration_time": rfc3339_nano(entry["expires"]) if entry["expires"] else NEVER,
        "last_updated_time": rfc3339_nano(entry["updated"]),
        "metadata": entry["metadata"],
        "secret_id_accessor": entry["accessor"],
        "secret_id_num_uses": entry["num_uses"],
        "secret_id_ttl": entry["ttl"],
        "token_bound_cidrs": [],
    }


def _count(data: dict[str, Any], name: str, current: int) -> int:
    value = data.get(name)
    if value in (None, ""):
        return current
    try:
        number = int(str(value))
    except ValueError:
        raise InvalidRequestError(f"{name} must be a whole number") from None
    if number < 0:
        raise InvalidRequestError(f"{name} cannot be negative")
    return number


def _metadata(value: object) -> dict[str, str]:
    """A secret id's metadata: a JSON object of strings (as hvac sends it) or an object."""
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise InvalidRequestError("failed to parse metadata: not a JSON object") from None
    if not isinstance(value, dict):
        raise InvalidRequestError("metadata must be an object of strings")
    return {str(k): str(v) for k, v in value.items()}
