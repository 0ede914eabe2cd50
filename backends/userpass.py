"""``userpass``: users who log in with a password, in Vault's paths and shapes.

``users`` (list), ``users/NAME`` (write ``password`` and the token settings; read, which
never shows the password; delete), ``users/NAME/password``, ``users/NAME/policies``, and
``login/NAME`` (``password``), which anyone may call and which answers a token. Names are
lower-cased, as Vault's. A password is kept only as its argon2id hash (t=2, m=32 MiB,
p=1), sealed with the user under the mount's data key: the password itself never reaches
``MountView.put`` (which also HMACs every field for the trail), an event or an error.
"""

from __future__ import annotations

import functools
import os
import re
from typing import TYPE_CHECKING, Any, ClassVar

from backends.contract import MountView, PathRules
from backends.errors import InvalidRequestError, NoHandlerError
from backends.request import Request, Response
from backends.token_settings import TokenSettings

if TYPE_CHECKING:
    from argon2 import PasswordHasher

USERS = "users/"
INVALID = "invalid username or password"
UNSUPPORTED = "1 error occurred:\n\t* unsupported path\n\n"
MISSING_PASSWORD = "must provide either password or password_hash"
_NAME = re.compile(r"\w(?:[\w.@-]*\w)?")


@functools.cache
def _hasher() -> PasswordHasher:
    # argon2-cffi costs ~20 ms to import: paid by a process that serves a userpass mount.
    from argon2 import PasswordHasher, Type

    return PasswordHasher(time_cost=2, memory_cost=32 * 1024, parallelism=1, type=Type.ID)


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (salted, in the PHC string format)."""
    return _hasher().hash(password)


def password_matches(hashed: str | None, password: str) -> bool:
    """Whether ``password`` is the one ``hashed`` was made from; with no hash (no such
    user), as slow a no as a wrong password's, so timing does not tell users apart."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return _hasher().verify(hashed or _unknown_user(), password) and hashed is not None
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _unknown_user() -> str:
    return hash_password(os.urandom(16).hex())


class UserpassBackend:
    """Users by name, each a sealed value at ``users/NAME``: the password's hash and the
    token settings of its logins."""

    # calls_out: served on a worker thread, as hashing a password takes ~70 ms
    paths: ClassVar[PathRules] = PathRules(
        audit_reads=False, unauthenticated=("login",), calls_out=True
    )

    def handle(self, view: MountView, request: Request) -> Response:
        path, op = request.path.strip("/"), request.operation
        head, _, rest = path.partition("/")
        if head == "users" and not rest and op == "list":
            return Response(data={"keys": view.list(USERS)})
        if head == "login" and rest and op == "write":
            return self.login(view, rest.lower())
        if head == "users" and rest:
            name, _, action = rest.partition("/")
            name = _username(name)
            if not action and op == "read":
                return self.read(view, name)
            if not action and op == "write":
                return self.write(view, name)
            if not action and op == "delete":
                if view.get(USERS + name) is not None:
                    view.delete(USERS + name)
                return Response()
            if action in ("password", "policies") and op == "write":
                return self.update(view, name, action)
        raise NoHandlerError(UNSUPPORTED)

    def read(self, view: MountView, name: str) -> Response:
        user = view.get(USERS + name)
        return Response() if user is None else Response(data=TokenSettings.of(user).describe())

    def write(self, view: MountView, name: str) -> Response:
        """Create or update a user; a new one needs a password."""
        data, user = view.request.data, view.get(USERS + name)
        if "password_hash" in data:
            raise InvalidRequestError("password_hash is not supported by this server")
        password = _password(data)
        settings = TokenSettings.of(user or {}).updated(data)  # checked before the slow hash
        if password is not None:
            hashed = hash_password(password)
        elif user is not None:
            hashed = user["password_hash"]
        else:
            raise InvalidRequestError(MISSING_PASSWORD)
        view.put(USERS + name, {**settings.stored(), "password_hash": hashed})
        return Response()

    def update(self, view: MountView, name: str, what: str) -> Response:
        """``users/NAME/password`` or ``users/NAME/policies`` of a user who exists."""
        user, data = view.get(USERS + name), view.request.data
        if user is None:
            raise InvalidRequestError("username does not exist")
        if what == "password":
            password = _password(data)
            if password is None:
                raise InvalidRequestError(MISSING_PASSWORD)
            user = {**user, "password_hash": hash_password(password)}
        else:
            given: dict[str, Any] = {
                k: data[k] for k in ("policies", "token_policies") if k in data
            }
            user = {**user, **TokenSettings.of(user).updated(given).stored()}
        view.put(USERS + name, user)
        return Response()

    def login(self, view: MountView, name: str) -> Response:
        password = view.request.data.get("password")
        if not password or not isinstance(password, str):
            raise InvalidRequestError("missing password")
        user = view.get(USERS + name) if _NAME.fullmatch(name) else None
        hashed = user["password_hash"] if user else None
        with view.session.unlocked():  # ~70 ms of argon2id, on a worker thread (calls_out)
            matches = password_matches(hashed, password)
        user = view.get(USERS + name) if matches else None
        if user is None or user["password_hash"] != hashed:  # changed while hashing
            raise InvalidRequestError(INVALID)
        auth = TokenSettings.of(user).issue(
            view, name=name, path=f"{view.mount.path}login/{name}", meta={"username": name}
        )
        return Response(auth=auth)


def _username(name: str) -> str:
    name = name.lower()
    if not _NAME.fullmatch(name):
        raise NoHandlerError(UNSUPPORTED)
    return name


def _password(data: dict[str, Any]) -> str | None:
    password = data.get("password")
    if password in (None, ""):
        return None
    if not isinstance(password, str):
        raise InvalidRequestError("password must be a string")
    return password
