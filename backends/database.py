"""The ``database`` backend: PostgreSQL roles created on demand, each living as long as its
lease (Vault 1.x's database engine with the postgresql-database-plugin), and Vault 0.5's
``postgresql`` mount type on the same implementation (``LegacyPostgresBackend``).

Paths (relative to the mount): ``config/NAME``, ``roles/NAME``, ``creds/NAME``,
``rotate-root/NAME``, ``reset/NAME``, and static roles (an existing user whose password
the store rotates): ``static-roles/NAME``, ``static-creds/NAME``, ``rotate-role/NAME``;
LIST ``config``, ``roles`` and ``static-roles``. Connection settings, the administrator's
password, static roles' passwords and every intent are values sealed with the mount's key;
issued passwords are answered and never kept.

psycopg (through ``backends.pgroles``) is imported by the methods that talk to a
database, not with this module: the timer's look at static roles, settings read back and
refusals never pay for it.

Issuing is crash-safe as aws's is: the intent (which role) is durable before the
creation statements run, and the lease is committed after; a process killed in between
leaves the intent, which the next writer's open rolls back by dropping the role.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
import secrets
import string
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from backends import password_policy as password_policies
from backends import sqltemplate
from backends.contract import MountView, PathRules
from backends.errors import InvalidRequestError, NoHandlerError, RequestError
from backends.expiration import backoff
from backends.password_policy import PasswordPolicy
from backends.request import Request, Response
from backends.token import flag
from backends.ttl import bounded_ttls, parse_duration
from projections import NANOS
from projections.audit import rfc3339_nano

if TYPE_CHECKING:
    from backends.pgroles import Pool

PLUGIN = "postgresql-database-plugin"
NAME = re.compile(r"\w(?:[\w.-]*\w)?")  # Vault's framework.GenericNameRegex
_DISPLAY = re.compile(r"[^A-Za-z0-9_-]+")
_ALPHANUMERIC = string.ascii_letters + string.digits
DEFAULT_OPEN_CONNECTIONS = 4  # Vault's max_open_connections


def _names(value: object) -> list[str]:
    """A list given as a list or as a comma-separated string."""
    if value is None or value == "":
        return []
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def _statements(value: object) -> list[str]:
    """Statements given as a list of strings or as one string (split later, on ``;``)."""
    if value is None or value == "":
        return []
    items = value if isinstance(value, list) else [value]
    return [str(item) for item in items if str(item).strip()]


def _count(value: object, default: int, what: str) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(str(value))
    except ValueError:
        raise InvalidRequestError(f"{what} must be an integer") from None
    if number < 0:
        raise InvalidRequestError(f"{what} must not be negative")
    return number


def password_policy(view: MountView, config: dict[str, Any]) -> PasswordPolicy:
    """The policy passwords for this connection are made by (Vault's default if none); one
    whose characters could end a quoted SQL literal is refused."""
    policy = password_policies.named(view.state, config.get("password_policy") or "")
    sqltemplate.safe_value(f"password policy {config.get('password_policy')!r}", policy.charset)
    return policy


def username(display: str, role: str) -> str:
    """Vault's pattern: ``v-<display>-<role>-<random>-<unix time>``, at most 63 bytes."""
    random_part = "".join(secrets.choice(_ALPHANUMERIC) for _ in range(20))
    return f"v-{display[:8]}-{role[:8]}-{random_part}-{int(time.time())}"[:63]


def display_name(request: Request) -> str:
    """The token's display name (``root``, ``token``, ``userpass-bob``); embedded: the
    operating-system user. Anything but letters, digits, ``_`` and ``-`` is dropped."""
    actor = request.actor
    name = actor.partition(":")[0] if ":" in actor else actor.partition("@")[0]
    return _DISPLAY.sub("", name) or "token"


class DatabaseBackend:
    paths: ClassVar[PathRules] = PathRules(calls_out=True)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[tuple[str, str], tuple[tuple[Any, ...], Pool]] = {}

    def handle(self, view: MountView, request: Request) -> Response:
        path, op = request.path.rstrip("/"), request.operation
        kind, _, name = path.partition("/")
        if op == "list" and not name and kind in ("config", "roles", "static-roles"):
            keys = [key.removesuffix("/") for key in view.list(f"{kind}/")]
            return Response(data={"keys": keys} if keys else None)
        if name and not NAME.fullmatch(name):
            raise NoHandlerError(f"unsupported path: {op} {view.mount.path}{request.path}")
        if kind == "config" and name:
            return self.config(view, request, name)
        if kind == "roles" and name:
            return self.role(view, request, name)
        if kind == "creds" and name and op == "read":
            return self.issue(view, request, name)
        if kind == "rotate-root" and name and op == "write":
            self.rotate_root(view, name)
            return Response()
        if kind == "static-roles" and name:
            return self.static_role(view, request, name)
        if kind == "static-creds" and name and op == "read":
            return self.static_creds(view, name)
        if kind == "rotate-role" and name and op == "write":
            self.rotate_static(view, name, self._static(view, name))
            return Response()
        if kind == "reset" and name and op == "write":
            self._config(view, name)
            self._drop_pool(view.mount.id, name)
            return Response()
        raise NoHandlerError(f"unsupported path: {op} {view.mount.path}{request.path}")

    # ---- connections ---------------------------------------------------------------------

    def config(self, view: MountView, request: Request, name: str) -> Response:
        from backends import pgroles

        key = f"config/{name}"
        if request.operation == "read":
            config = view.get(key)
            return Response(data=None if config is None else _shown_config(config))
        if request.operation == "delete":
            if view.get(key) is not None:
                view.delete(key)
            self._drop_pool(view.mount.id, name)
            return Response()
        if request.operation != "write":
            raise InvalidRequestError(f"unsupported operation: {request.operation}")
        config = _new_config(request.data, view.get(key))
        password_policy(view, config)
        if config["verify_connection"]:
            pool = self._make_pool(config)
            try:
                pgroles.verify(pool)
            finally:
                pool.close()
        view.put(key, config)
        self._drop_pool(view.mount.id, name)
        return Response()

    def _config(self, view: MountView, name: str) -> dict[str, Any]:
        config = view.get(f"config/{name}")
        if config is None:
            raise InvalidRequestError(f'failed to find entry for connection with name: "{name}"')
        return config

    def _make_pool(self, config: dict[str, Any]) -> Pool:
        from backends import pgroles

        conninfo = sqltemplate.connection_string(
            config["connection_url"], config["username"], config["password"]
        )
        size = config["max_open_connections"] or DEFAULT_OPEN_CONNECTIONS
        return pgroles.Pool(
            conninfo,
            size=size,
            idle=config["max_idle_connections"] or size,
            lifetime=config["max_connection_lifetime"],
        )

    def pool(self, view: MountView, db_name: str) -> Pool:
        """The pool of ``db_name``'s connection, made again when its settings changed (here
        or on another node sharing the store)."""
        config = self._config(view, db_name)
        settings = tuple(sorted((k, str(v)) for k, v in config.items()))
        with self._lock:
            held = self._pools.get((view.mount.id, db_name))
            if held is not None and held[0] == settings:
                return held[1]
            pool = self._make_pool(config)
            self._pools[(view.mount.id, db_name)] = (settings, pool)
        if held is not None:
            held[1].close()
        return pool

    def _drop_pool(self, mount_id: str, db_name: str) -> None:
        with self._lock:
            held = self._pools.pop((mount_id, db_name), None)
        if held is not None:
            held[1].close()

    # ---- roles ---------------------------------------------------------------------------

    def role(self, view: MountView, request: Request, name: str) -> Response:
        key = f"roles/{name}"
        if request.operation == "read":
            role = view.get(key)
            return Response(data=None if role is None else self.shown_role(role))
        if request.operation == "delete":
            if view.get(key) is not None:
                view.delete(key)
            return Response()
        if request.operation != "write":
            raise InvalidRequestError(f"unsupported operation: {request.operation}")
        view.put(key, self.new_role(request.data, view.get(key)))
        return Response()

    def new_role(self, data: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        role = dict(old or {})
        if "db_name" in data:
            role["db_name"] = str(data["db_name"] or "")
        for field in (
            "creation_statements",
            "revocation_statements",
            "rollback_statements",
            "renew_statements",
        ):
            if field in data or field not in role:
                role[field] = _statements(data.get(field))
                sqltemplate.check_template(field, role[field])
        for field in ("default_ttl", "max_ttl"):
            if field in data or field not in role:
                role[field] = parse_duration(data.get(field) or 0)
        if not role.get("db_name"):
            raise InvalidRequestError("empty database name attribute")
        if not role["creation_statements"]:
            raise InvalidRequestError("creation_statements are required")
        if role["max_ttl"] and role["default_ttl"] > role["max_ttl"]:
            raise InvalidRequestError('"default_ttl" value must be less than "max_ttl" value')
        return role

    def shown_role(self, role: dict[str, Any]) -> dict[str, Any]:
        return {
            "db_name": role["db_name"],
            "creation_statements": role["creation_statements"],
            "revocation_statements": role["revocation_statements"],
            "rollback_statements": role["rollback_statements"],
            "renew_statements": role["renew_statements"],
            "default_ttl": role["default_ttl"],
            "max_ttl": role["max_ttl"],
            "credential_type": "password",
        }

    # ---- credentials ---------------------------------------------------------------------

    def issue(self, view: MountView, request: Request, role_name: str) -> Response:
        return self.issue_role(view, request, role_name, view.get(f"roles/{role_name}"))

    def issue_role(
        self, view: MountView, request: Request, role_name: str, role: dict[str, Any] | None
    ) -> Response:
        """A new role in the database, under a lease; ``role`` as stored (None: unknown)."""
        from backends import pgroles

        if role is None:
            raise InvalidRequestError(f"unknown role: {role_name}")
        config = self._config(view, role["db_name"])
        if not any(fnmatch.fnmatchcase(role_name, allowed) for allowed in config["allowed_roles"]):
            raise InvalidRequestError(f'"{role_name}" is not an allowed role')
        pool = self.pool(view, role["db_name"])
        mount = view.mount
        ttl, _ = bounded_ttls(
            mount.default_lease_ttl, mount.max_lease_ttl, role["default_ttl"], role["max_ttl"]
        )
        name = self.username(request, role_name)
        password = password_policy(view, config).generate()
        valid_until = sqltemplate.expiration(time.time() + ttl)
        internal = {"db_name": role["db_name"], "role": role_name, "username": name}
        intent = view.record_intent("create_role", internal)
        try:
            pgroles.create_role(pool, role["creation_statements"], name, password, valid_until)
        except sqltemplate.DatabaseError as exc:
            if exc.unsure:  # COMMIT failed: drop the role now if it was made, or next open
                self._drop(view, internal, role["rollback_statements"])
            view.complete_intent(intent, "failed")
            view.commit()
            raise
        lease_id, ttl = view.issue_lease(internal, ttl=ttl, max_ttl=role["max_ttl"])
        view.complete_intent(intent, "done")
        return Response(
            data={"username": name, "password": password},
            lease_id=lease_id,
            lease_duration=ttl,
            renewable=True,
        )

    def username(self, request: Request, role_name: str) -> str:
        return username(display_name(request), role_name)

    def revoke(self, view: MountView, internal: dict[str, Any]) -> None:
        role = view.get(f"roles/{internal['role']}") or {}
        self._drop(view, internal, role.get("revocation_statements") or [])

    def _drop(self, view: MountView, internal: dict[str, Any], statements: list[str]) -> None:
        from backends import pgroles

        pgroles.drop_role(self.pool(view, internal["db_name"]), statements, internal["username"])

    def renew(self, view: MountView, internal: dict[str, Any], expires: int) -> None:
        """Move the role's VALID UNTIL to the lease's new end (``expires``, ns)."""
        from backends import pgroles

        role = view.get(f"roles/{internal['role']}") or {}
        pgroles.renew_role(
            self.pool(view, internal["db_name"]),
            role.get("renew_statements") or [],
            internal["username"],
            sqltemplate.expiration(expires / 1e9),
        )

    def roll_back(self, view: MountView, action: str, data: dict[str, Any]) -> None:
        if action == "create_role":
            role = view.get(f"roles/{data['role']}") or {}
            self._drop(view, data, role.get("rollback_statements") or [])
        elif action == "rotate_root":
            self._finish_rotation(view, data)
        elif action == "rotate_static":
            self._finish_static(view, data)

    # ---- static roles: an existing user whose password the store rotates ----------------

    def static_role(self, view: MountView, request: Request, name: str) -> Response:
        key = f"static-roles/{name}"
        if request.operation == "read":
            role = view.get(key)
            return Response(data=None if role is None else _shown_static(role))
        if request.operation == "delete":  # as Vault's: the password stays as it is
            if view.get(key) is not None:
                view.delete(key)
            return Response()
        if request.operation != "write":
            raise InvalidRequestError(f"unsupported operation: {request.operation}")
        old = view.get(key)
        role = _new_static(request.data, old)
        config = self._config(view, role["db_name"])
        if not any(fnmatch.fnmatchcase(name, allowed) for allowed in config["allowed_roles"]):
            raise InvalidRequestError(f'"{name}" is not an allowed role')
        if old is None or old["username"] != role["username"]:
            self.rotate_static(view, name, role)  # a new role's password is the store's at once
        else:
            view.put(
                key,
                dict(
                    role,
                    next_rotation=role["last_vault_rotation"] + role["rotation_period"] * NANOS,
                ),
            )
        return Response()

    def _static(self, view: MountView, name: str) -> dict[str, Any]:
        role = view.get(f"static-roles/{name}")
        if role is None:
            raise InvalidRequestError(f"unknown static role: {name}")
        return role

    def static_creds(self, view: MountView, name: str) -> Response:
        role = self._static(view, name)
        ttl = max(0, round((role["next_rotation"] - time.time_ns()) / NANOS))
        return Response(
            data={
                "username": role["username"],
                "password": role["password"],
                "last_vault_rotation": rfc3339_nano(role["last_vault_rotation"]),
                "rotation_period": role["rotation_period"],
                "ttl": ttl,
            }
        )

    def rotate_static(self, view: MountView, name: str, role: dict[str, Any]) -> None:
        """A new password for the role's user: durable as an intent, set in the database,
        then kept in the role (the intent's roll-back keeps it if the database took it)."""
        from backends import pgroles

        config = self._config(view, role["db_name"])
        password = password_policy(view, config).generate()
        intent = view.record_intent("rotate_static", {"name": name, "password": password})
        pool = self.pool(view, role["db_name"])
        with _failed_unless_unsure(view, intent):
            pgroles.set_password(pool, role["rotation_statements"], role["username"], password)
        view.put(f"static-roles/{name}", _rotated(role, password))
        view.complete_intent(intent, "done")

    def run_due(self, view: MountView) -> None:
        """Rotate the static roles whose period has passed; a failed rotation is kept in
        the role (``last_error``) and tried again after a backoff."""
        now = time.time_ns()
        for key in view.list("static-roles/"):
            role = view.get(f"static-roles/{key}")
            if role is None or role["next_rotation"] > now:
                continue
            try:
                self.rotate_static(view, key, role)
            except RequestError as exc:
                failures = role.get("failures", 0) + 1
                view.put(
                    f"static-roles/{key}",
                    dict(
                        role,
                        failures=failures,
                        last_error=" ".join(str(exc).split())[:300],
                        next_rotation=now + backoff(failures) * NANOS,
                    ),
                )

    def _finish_static(self, view: MountView, data: dict[str, Any]) -> None:
        from backends import pgroles

        role = view.get(f"static-roles/{data['name']}")
        if role is None:
            return
        config = self._config(view, role["db_name"])
        if pgroles.can_log_in(config["connection_url"], role["username"], data["password"]):
            view.put(f"static-roles/{data['name']}", _rotated(role, data["password"]))

    # ---- the administrator's password ----------------------------------------------------

    def rotate_root(self, view: MountView, db_name: str) -> None:
        """A new password for the configured user, set in the database and then kept in
        place of the old one, which is never answered again."""
        from backends import pgroles

        config = self._config(view, db_name)
        if not config["username"] or "{{password}}" not in config["connection_url"]:
            raise InvalidRequestError(
                "unable to rotate root credentials: no username and {{password}} in connection_url"
            )
        password = password_policy(view, config).generate()
        intent = view.record_intent("rotate_root", {"db_name": db_name, "password": password})
        pool = self.pool(view, db_name)
        with _failed_unless_unsure(view, intent):
            pgroles.set_password(
                pool, config["root_rotation_statements"], config["username"], password
            )
        view.put(f"config/{db_name}", dict(config, password=password))
        view.complete_intent(intent, "done")
        self._drop_pool(view.mount.id, db_name)

    def _finish_rotation(self, view: MountView, data: dict[str, Any]) -> None:
        """A rotation cut short: keep the new password if the database took it."""
        from backends import pgroles

        config = view.get(f"config/{data['db_name']}")
        if config is None:
            return
        if pgroles.can_log_in(config["connection_url"], config["username"], data["password"]):
            view.put(f"config/{data['db_name']}", dict(config, password=data["password"]))
            self._drop_pool(view.mount.id, data["db_name"])


def _new_config(data: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    plugin = str(data.get("plugin_name") or (old or {}).get("plugin_name") or "")
    if not plugin:
        raise InvalidRequestError("empty plugin name")
    if plugin != PLUGIN:
        raise InvalidRequestError(f"no plugin named {plugin!r}: only {PLUGIN} is built in")
    config = dict(old or {})

    def take(field: str, default: Any, parse: Any = str) -> None:
        if field in data and data[field] is not None:
            config[field] = parse(data[field])
        elif field not in config:
            config[field] = default

    take("plugin_name", PLUGIN)
    take("connection_url", "")
    take("username", "")
    take("password", "")
    take("allowed_roles", [], _names)
    take("root_rotation_statements", [], _statements)
    take("password_policy", "")
    take("max_open_connections", DEFAULT_OPEN_CONNECTIONS)
    take("max_idle_connections", 0)
    take("max_connection_lifetime", 0, parse_duration)
    verify = data.get("verify_connection")
    config["verify_connection"] = True if verify is None else flag("verify_connection", verify)
    for field in ("max_open_connections", "max_idle_connections"):
        config[field] = _count(config[field], 0, field)
    if not config["connection_url"]:
        raise InvalidRequestError("connection_url cannot be empty")
    if "://" not in config["connection_url"] and "=" not in config["connection_url"]:
        raise InvalidRequestError("connection_url must be a postgres:// URL or key=value pairs")
    sqltemplate.check_template("root_rotation_statements", config["root_rotation_statements"])
    return config


@contextlib.contextmanager
def _failed_unless_unsure(view: MountView, intent: str) -> Iterator[None]:
    """The statements inside run in one transaction: unless COMMIT itself failed, nothing
    was done, and the intent is completed as failed. If COMMIT failed, the intent is left
    for the next open, whose roll-back finds out what the database holds."""
    try:
        yield
    except sqltemplate.DatabaseError as exc:
        if not exc.unsure:
            view.complete_intent(intent, "failed")
            view.commit()
        raise


MIN_ROTATION_PERIOD = 5  # seconds, as Vault's


def _new_static(data: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    role = dict(old or {})
    for field in ("db_name", "username"):
        if field in data:
            role[field] = str(data[field] or "")
    if "rotation_period" in data or "rotation_period" not in role:
        role["rotation_period"] = parse_duration(data.get("rotation_period") or 0)
    if "rotation_statements" in data or "rotation_statements" not in role:
        role["rotation_statements"] = _statements(data.get("rotation_statements"))
        sqltemplate.check_template("rotation_statements", role["rotation_statements"])
    if not role.get("db_name"):
        raise InvalidRequestError("empty database name attribute")
    if not role.get("username"):
        raise InvalidRequestError("username is a required field to create a static account")
    sqltemplate.safe_value("username", role["username"])
    if role["rotation_period"] < MIN_ROTATION_PERIOD:
        raise InvalidRequestError(f"rotation_period must be {MIN_ROTATION_PERIOD} seconds or more")
    role.setdefault("password", "")
    role.setdefault("last_vault_rotation", 0)
    return role


def _rotated(role: dict[str, Any], password: str) -> dict[str, Any]:
    now = time.time_ns()
    rotated = dict(role, password=password, last_vault_rotation=now, failures=0, last_error="")
    rotated["next_rotation"] = now + role["rotation_period"] * NANOS
    return rotated


def _shown_static(role: dict[str, Any]) -> dict[str, Any]:
    shown = {
        "db_name": role["db_name"],
        "username": role["username"],
        "rotation_period": role["rotation_period"],
        "rotation_statements": role["rotation_statements"],
        "last_vault_rotation": rfc3339_nano(role["last_vault_rotation"]),
        "credential_type": "password",
    }
    if role.get("failures"):
        shown["last_error"] = role["last_error"]
    return shown


def _shown_config(config: dict[str, Any]) -> dict[str, Any]:
    """A connection as Vault reads it back: never the password."""
    details = {
        "connection_url": config["connection_url"],
        "username": config["username"],
        "max_open_connections": config["max_open_connections"],
        "max_idle_connections": config["max_idle_connections"],
        "max_connection_lifetime": f"{config['max_connection_lifetime']}s",
    }
    return {
        "plugin_name": config["plugin_name"],
        "connection_details": details,
        "allowed_roles": config["allowed_roles"],
        "root_credentials_rotate_statements": config["root_rotation_statements"],
        "password_policy": config["password_policy"],
        "verify_connection": config["verify_connection"],
    }
