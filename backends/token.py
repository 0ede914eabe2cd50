"""``auth/token/``: the token store, in Vault's paths and shapes, every change an event.

A token is known by a keyed hash (``token_id``) and its accessor; the token itself exists
only in the answer that hands it out. ``create`` and ``create-orphan`` issue, ``lookup``,
``lookup-self`` and ``lookup-accessor`` describe, ``renew``, ``renew-self`` and
``renew-accessor`` extend, ``revoke``, ``revoke-self``, ``revoke-accessor`` revoke a token
with its children and the leases it obtained, ``revoke-orphan`` revokes one token and
leaves its children as orphans, and LIST ``accessors`` lists them. Embedded (no token),
``lookup-self`` describes the local user as the root token it acts as.
"""

from __future__ import annotations

import re
import secrets
import string
import time
from typing import Any, ClassVar

from backends.auth import DEFAULT_POLICY, ROOT_POLICY, live_token
from backends.contract import MountView, PathRules, Session
from backends.errors import InvalidRequestError, PermissionDeniedError, RequestError
from backends.expiration import ExpirationManager
from backends.request import Request, Response, who
from backends.ttl import parse_duration
from projections.audit import rfc3339_nano
from projections.events import (
    SecretDeleted,
    TokenCreated,
    TokenRenewed,
    TokenRevoked,
    TokenRoleDeleted,
    TokenRoleWritten,
)
from projections.state import NANOS, StoreState, Token

TOKEN_DEFAULT_TTL = 32 * 24 * 3600  # Vault's 768h, the default and the maximum
TOKEN_PREFIX = "s."
CUBBYHOLE = "cubbyhole/"
_ALPHABET = string.ascii_letters + string.digits
_SANITIZE = re.compile(r"[^a-zA-Z0-9-]+")  # as Vault cleans display names


def new_token() -> str:
    """A token in OpenBao's format: ``s.`` and 24 random base-62 characters."""
    return TOKEN_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def new_accessor() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(24))


def display_name(prefix: str, name: str) -> str:
    name = _SANITIZE.sub("-", name.strip())
    return f"{prefix}-{name}" if name else prefix


def policy_list(value: object) -> list[str]:
    """Policies given as a list or a comma-separated string."""
    if value is None or value == "":
        return []
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(p, str) for p in items):
        raise InvalidRequestError("policies must be a list of names")
    return [p.strip() for p in items if p.strip()]


def with_default(policies: list[str], *, no_default: bool = False) -> list[str]:
    """Sorted, without repeats, with ``default`` added unless asked not to (or root)."""
    names = set(policies)
    if not no_default and ROOT_POLICY not in names:
        names.add(DEFAULT_POLICY)
    return sorted(names)


def issue(
    session: Session,
    *,
    policies: list[str],
    path: str,
    display: str,
    ttl: int,
    explicit_max_ttl: int = 0,
    period: int = 0,
    num_uses: int = 0,
    renewable: bool = True,
    parent: str = "",
    meta: dict[str, str] | None = None,
    token: str = "",
) -> dict[str, Any]:
    """Stage a new token and answer its ``auth`` block (the only place the token is)."""
    token = token or new_token()
    token_id = session.store.keyring.token_id(token)
    if token_id in session.state.tokens:
        raise InvalidRequestError("cannot create a token with a duplicate ID")
    if period:
        ttl = period
    if explicit_max_ttl:
        ttl = min(ttl, explicit_max_ttl) if ttl else explicit_max_ttl
    accessor = new_accessor()
    session.stage(
        TokenCreated(
            **who(session.request),
            token_id=token_id,
            accessor=accessor,
            policies=policies,
            path=path,
            display_name=display,
            ttl=ttl,
            explicit_max_ttl=explicit_max_ttl,
            period=period,
            num_uses=num_uses,
            renewable=renewable and ttl > 0,
            parent=parent,
            meta=dict(meta or {}),
        )
    )
    return {
        "client_token": token,
        "accessor": accessor,
        "policies": policies,
        "token_policies": policies,
        "metadata": dict(meta) if meta else None,
        "lease_duration": ttl,
        "renewable": renewable and ttl > 0,
        "entity_id": "",
        "token_type": "service",
        "orphan": not parent,
        "mfa_requirement": None,
        "num_uses": num_uses,
    }


def auth_block(token: Token, client_token: str, now: int) -> dict[str, Any]:
    return {
        "client_token": client_token,
        "accessor": token.accessor,
        "policies": list(token.policies),
        "token_policies": list(token.policies),
        "metadata": token.meta or None,
        "lease_duration": remaining(token, now),
        "renewable": token.renewable,
        "entity_id": "",
        "token_type": token.token_type,
        "orphan": not token.parent,
        "mfa_requirement": None,
        "num_uses": max(token.num_uses, 0),
    }


def remaining(token: Token, now: int) -> int:
    return max((token.expires - now) // NANOS, 0) if token.expires else 0


def describe(token: Token, client_token: str, now: int) -> dict[str, Any]:
    """What ``lookup`` answers of a token (``id`` only when the token was given)."""
    data: dict[str, Any] = {
        "accessor": token.accessor,
        "creation_time": token.issued // NANOS,
        "creation_ttl": token.ttl,
        "display_name": token.display_name,
        "entity_id": "",
        "expire_time": rfc3339_nano(token.expires) if token.expires else None,
        "explicit_max_ttl": token.explicit_max_ttl,
        "id": client_token,
        "issue_time": rfc3339_nano(token.issued),
        "meta": token.meta or None,
        "num_uses": max(token.num_uses, 0),
        "orphan": not token.parent,
        "path": token.path,
        "policies": list(token.policies),
        "renewable": token.renewable,
        "ttl": remaining(token, now),
        "type": token.token_type,
    }
    if token.period:
        data["period"] = token.period
    if token.last_renewal:
        data["last_renewal"] = rfc3339_nano(token.last_renewal)
        data["last_renewal_time"] = token.last_renewal // NANOS
    return data


def revoke_tree(session: Session, token: Token, reason: str) -> None:
    """Revoke ``token``'s children (depth first), the leases it obtained, its cubbyhole,
    then the token, each committed as it is done (leases change the world outside). A
    lease that cannot be revoked stops it there: what is left stays, and is retried."""
    for child in session.state.children(token.id):
        revoke_tree(session, child, "parent")
    revoke_own(session, token, reason)


def revoke_own(session: Session, token: Token, reason: str) -> None:
    """Revoke ``token``'s leases, its cubbyhole and the token (its children stay)."""
    leases = ExpirationManager(session)
    for lease in sorted(session.state.leases.values(), key=lambda x: x.id):
        if lease.token_id == token.id:
            leases.revoke(lease, "token")
    destroy_cubbyhole(session, token.id)
    session.stage(TokenRevoked(**who(session.request), token_id=token.id, reason=reason))
    session.commit()


def destroy_cubbyhole(session: Session, token_id: str) -> None:
    mount = session.state.mounts.at(CUBBYHOLE)
    if mount is None:
        return
    prefix = f"{token_id}/"
    for path in [p for p in session.state.data[mount.id] if p.startswith(prefix)]:
        session.stage(SecretDeleted(**who(session.request), mount_id=mount.id, path=path))


def expire_tokens(session: Session) -> None:
    """Revoke every token past its expiry or used up (the server's timer, and each
    writer's open); one whose leases will not go yet is tried again next time."""
    now = time.time_ns()
    due = [
        t
        for t in session.state.tokens.values()
        if (t.expires and t.expires <= now) or t.num_uses < 0
    ]
    for token in sorted(due, key=lambda t: t.expires):
        if token.id in session.state.tokens:  # not gone with a parent already
            try:
                revoke_tree(session, token, "uses" if token.num_uses < 0 else "expired")
            except RequestError:
                continue


def flag(name: str, value: object) -> bool:
    """A boolean as Vault takes one: true/false, or their usual spellings."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "t", "yes"):
        return True
    if text in ("false", "0", "f", "no", ""):
        return False
    raise InvalidRequestError(f"{name} must be a boolean")


def _bool(data: dict[str, Any], name: str, default: bool) -> bool:
    return flag(name, data.get(name, default))


def _int(data: dict[str, Any], name: str) -> int:
    value = data.get(name, 0)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidRequestError(f"{name} must be a whole number") from None
    if number < 0:
        raise InvalidRequestError(f"{name} cannot be negative")
    return number


def _duration(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    if value in (None, ""):
        return 0
    try:
        return parse_duration(value)
    except InvalidRequestError:
        raise InvalidRequestError(f'time: invalid duration "{str(value)[:40]}"') from None


class TokenBackend:
    paths: ClassVar[PathRules] = PathRules(audit_reads=False, calls_out=True)

    def handle(self, view: MountView, request: Request) -> Response:
        session, op = view.session, request.operation
        path = request.path.strip("/")
        if op == "list" and path == "accessors":
            return Response(data={"keys": sorted(session.state.accessors)})
        if op == "list" and path == "roles":
            return Response(data={"keys": sorted(session.state.token_roles)})
        if path.startswith("roles/"):
            return self._role(session, op, path.removeprefix("roles/"))
        if op == "write" and path.startswith("create/"):
            return self._create(session, path)
        if op not in ("read", "write"):
            raise InvalidRequestError(f"unsupported operation: {op} auth/token/{path}")
        if path == "lookup-self" or (
            path == "lookup" and op == "read" and "token" not in request.data
        ):
            return self._lookup_self(session)
        if op == "write":
            action = {
                "create": self._create,
                "create-orphan": self._create,
                "lookup": self._lookup,
                "lookup-accessor": self._lookup,
                "renew": self._renew,
                "renew-self": self._renew,
                "renew-accessor": self._renew,
                "revoke": self._revoke,
                "revoke-self": self._revoke,
                "revoke-accessor": self._revoke,
                "revoke-orphan": self._revoke,
            }.get(path)
            if action is not None:
                return action(session, path)
        if op == "read" and path == "lookup":
            return self._lookup(session, path)
        raise InvalidRequestError(f"unsupported path: {op} auth/token/{path}")

    # ---- whose token ---------------------------------------------------------------------

    def _caller(self, session: Session) -> Token | None:
        token_id = session.request.token_id
        return session.state.tokens.get(token_id) if token_id else None

    def _given(self, session: Session, path: str) -> tuple[Token, str]:
        """The token a request names (``token``, ``accessor``, or its own) and the token
        itself when it was given (for ``id``)."""
        data, state = session.request.data, session.state
        if path.endswith("-self"):
            token = self._caller(session)
            if token is None:
                raise PermissionDeniedError("permission denied")
            return token, session.request.token
        if path.endswith("-accessor"):
            accessor = data.get("accessor")
            if not accessor or not isinstance(accessor, str):
                raise InvalidRequestError("missing accessor")
            token = _live(state, state.accessors.get(accessor, ""))
            if token is None:
                raise InvalidRequestError("invalid accessor")
            return token, ""
        given = data.get("token")
        if not given or not isinstance(given, str):
            raise InvalidRequestError("missing token")
        token = _live(state, session.store.keyring.token_id(given))
        if token is None:
            raise PermissionDeniedError("bad token")
        return token, given

    # ---- the paths -----------------------------------------------------------------------

    def _lookup_self(self, session: Session) -> Response:
        token = self._caller(session)
        if token is None:
            if session.request.token_id or session.request.token:
                raise PermissionDeniedError("permission denied")
            return Response(data=_local_root(session.request.actor))
        return Response(data=describe(token, session.request.token, time.time_ns()))

    def _lookup(self, session: Session, path: str) -> Response:
        token, given = self._given(session, path)
        return Response(data=describe(token, given, time.time_ns()))

    def _role(self, session: Session, op: str, name: str) -> Response:
        """``auth/token/roles/NAME``: which policies tokens created through it may hold,
        whether they are orphans, renewable, periodic, and their maximum TTL."""
        if not name or "/" in name:
            raise InvalidRequestError("a role name is one path segment")
        roles = session.state.token_roles
        if op == "read":
            role = roles.get(name)
            return Response(data=None if role is None else {"name": name, **role})
        if op == "delete":
            if name in roles:
                session.stage(TokenRoleDeleted(**who(session.request), name=name))
            return Response()
        if op != "write":
            raise InvalidRequestError(f"unsupported operation: {op} auth/token/roles/{name}")
        data = session.request.data
        old = roles.get(name, {})
        settings: dict[str, object] = {
            "allowed_policies": policy_list(
                data.get("allowed_policies", old.get("allowed_policies"))
            ),
            "disallowed_policies": policy_list(
                data.get("disallowed_policies", old.get("disallowed_policies"))
            ),
            "orphan": _bool(data, "orphan", bool(old.get("orphan", False))),
            "renewable": _bool(data, "renewable", bool(old.get("renewable", True))),
            "path_suffix": str(data.get("path_suffix", old.get("path_suffix", ""))),
            "explicit_max_ttl": _duration(data, "explicit_max_ttl")
            or _duration(data, "token_explicit_max_ttl")
            or int(str(old.get("explicit_max_ttl", 0))),
            "period": _duration(data, "period")
            or _duration(data, "token_period")
            or int(str(old.get("period", 0))),
            "token_type": "default-service",
        }
        session.stage(TokenRoleWritten(**who(session.request), name=name, settings=settings))
        return Response()

    def _create(self, session: Session, path: str) -> Response:
        data = session.request.data
        parent = self._caller(session)
        parent_policies = parent.policies if parent is not None else (ROOT_POLICY,)
        is_root = ROOT_POLICY in parent_policies
        role_name = path.removeprefix("create/") if path.startswith("create/") else ""
        role = session.state.token_roles.get(role_name) if role_name else None
        if role_name and role is None:
            raise InvalidRequestError(f"unknown role {role_name}")
        orphan = path == "create-orphan" or _bool(data, "no_parent", False)
        if orphan and path == "create" and not is_root:
            raise PermissionDeniedError("root or sudo privileges required to create orphan token")
        requested = policy_list(data.get("policies"))
        no_default = _bool(data, "no_default_policy", False)
        if role is not None:
            policies = _role_policies(role, requested, no_default)
            orphan = bool(role["orphan"])
        else:
            if not requested:
                requested = [p for p in parent_policies if p != DEFAULT_POLICY or not no_default]
            if not is_root and not set(requested) - {DEFAULT_POLICY} <= set(parent_policies):
                raise InvalidRequestError("child policies must be subset of parent")
            policies = with_default(requested, no_default=no_default)
        custom = data.get("id") or ""
        if custom and (not is_root or not isinstance(custom, str)):
            raise InvalidRequestError("root or sudo privileges required to specify token id")
        if data.get("type") not in (None, "", "service", "default"):
            raise InvalidRequestError("only service tokens are issued by this server")
        ttl, period = _duration(data, "ttl"), _duration(data, "period")
        explicit_max = _duration(data, "explicit_max_ttl")
        if role is not None:
            period = period or int(str(role["period"]))
            role_max = int(str(role["explicit_max_ttl"]))
            explicit_max = (
                min(explicit_max, role_max)
                if explicit_max and role_max
                else (explicit_max or role_max)
            )
        if not ttl and not period and not (ROOT_POLICY in policies and is_root):
            ttl = TOKEN_DEFAULT_TTL
        ttl = min(ttl, TOKEN_DEFAULT_TTL) if ttl else ttl
        meta = data.get("meta") or {}
        if not isinstance(meta, dict):
            raise InvalidRequestError("meta must be a map of strings")
        auth = issue(
            session,
            policies=policies,
            path=f"auth/token/{path}",
            display=display_name("token", str(data.get("display_name") or "")),
            ttl=ttl,
            explicit_max_ttl=explicit_max,
            period=period,
            num_uses=_int(data, "num_uses"),
            renewable=_bool(data, "renewable", True) and (role is None or bool(role["renewable"])),
            parent="" if orphan or parent is None else parent.id,
            meta={str(k): str(v) for k, v in meta.items()},
            token=custom,
        )
        return Response(auth=auth)

    def _renew(self, session: Session, path: str) -> Response:
        token, given = self._given(session, path)
        if not token.renewable:
            raise InvalidRequestError("lease is not renewable")
        increment = _duration(session.request.data, "increment")
        now = time.time_ns()
        ttl = token.period or increment or token.ttl
        limit = token.max_expires or (
            0 if token.period else token.issued + TOKEN_DEFAULT_TTL * NANOS
        )
        expires = now + ttl * NANOS
        if limit:
            expires = min(expires, limit)
        session.stage(TokenRenewed(**who(session.request), token_id=token.id, expires=expires))
        session.commit()
        return Response(auth=auth_block(session.state.tokens[token.id], given, now))

    def _revoke(self, session: Session, path: str) -> Response:
        data = session.request.data
        if path == "revoke" and not data.get("token"):
            raise InvalidRequestError("missing token")
        try:
            token, _ = self._given(session, path)
        except PermissionDeniedError:
            if path == "revoke":
                return Response()  # Vault: revoking a token that is not there succeeds
            raise
        if path == "revoke-orphan":
            revoke_own(session, token, "orphan")
        else:
            revoke_tree(session, token, "explicit")
        return Response()


def _role_policies(role: dict[str, object], requested: list[str], no_default: bool) -> list[str]:
    """A role's token's policies: those asked for (else the role's allowed ones), each
    allowed by the role (any, when it allows none in particular) and none disallowed."""
    allowed = [str(p) for p in role["allowed_policies"]]  # type: ignore[attr-defined]
    disallowed = {str(p) for p in role["disallowed_policies"]}  # type: ignore[attr-defined]
    wanted = requested or allowed
    refused = [
        p for p in wanted if p in disallowed or (allowed and p not in [*allowed, DEFAULT_POLICY])
    ]
    if refused:
        raise InvalidRequestError(f"token policies ({refused[0]}) must be allowed by the role")
    return with_default(wanted, no_default=no_default)


def _live(state: StoreState, token_id: str) -> Token | None:
    return live_token(state, token_id) if token_id else None


def _local_root(actor: str) -> dict[str, Any]:
    return {
        "accessor": "",
        "creation_time": 0,
        "creation_ttl": 0,
        "display_name": "root" if actor == "root" else actor,
        "entity_id": "",
        "expire_time": None,
        "explicit_max_ttl": 0,
        "id": "",
        "meta": None,
        "num_uses": 0,
        "orphan": True,
        "path": "auth/token/root",
        "policies": ["root"],
        "renewable": False,
        "ttl": 0,
        "type": "service",
    }
