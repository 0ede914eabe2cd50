"""``sys/`` policies and capabilities, in Vault's paths and shapes.

``sys/policy`` (read, list) and ``sys/policy/NAME`` (read, write with ``policy`` or the
deprecated ``rules``, delete): Vault's legacy paths, whose answers also carry their data
at the top level. ``sys/policies/acl`` (list) and ``sys/policies/acl/NAME``: today's.
Names are lower-cased; ``root`` and ``response-wrapping`` cannot be written or deleted,
``default`` can be rewritten but not deleted. A policy's ``version`` and ``modified`` are
folded from the log (its writes since it was last created). ``sys/capabilities-self``,
``sys/capabilities`` (another ``token``) and ``sys/capabilities-accessor`` answer what a
token may do at each of ``paths``.
"""

from __future__ import annotations

from typing import Any

from backends.auth import (
    DEFAULT_POLICY,
    ROOT_POLICY,
    WRAPPING_POLICY,
    Authorizer,
    capabilities_of,
    live_token,
    policy_rules,
)
from backends.contract import Session
from backends.errors import InvalidRequestError
from backends.paths import clean_path
from backends.policy import parse_policy
from backends.request import Request, Response, who
from projections.events import PolicyDeleted, PolicyWritten
from projections.state import StoreState, Token

LEGACY, ACL = "policy", "policies/acl"
IMMUTABLE = (ROOT_POLICY, WRAPPING_POLICY)  # Vault's: never written, never deleted
RULES_DEPRECATED = "'rules' is deprecated, please use 'policy' instead"


def serve_policies(session: Session, request: Request, path: str, op: str) -> Response:
    """``sys/policy[/NAME]``, ``sys/policies/acl[/NAME]`` and ``sys/capabilities*``."""
    if path in ("capabilities", "capabilities-self", "capabilities-accessor") and op == "write":
        return capabilities(session, path)
    for route in (LEGACY, ACL):
        if path == route and (op == "list" or (op == "read" and route == LEGACY)):
            keys = policy_names(session.state)
            return Response(
                data={"keys": keys, "policies": keys} if route == LEGACY else {"keys": keys}
            )
        if path.startswith(f"{route}/") and op in ("read", "write", "delete"):
            name = path.removeprefix(f"{route}/").strip().lower()
            if op == "read":
                return read_policy(session, name, "rules" if route == LEGACY else "policy")
            if op == "write":
                return write_policy(session, name, legacy=route == LEGACY)
            return delete_policy(session, name)
    raise InvalidRequestError(f"unsupported operation: {op} sys/{request.path}")


def policy_names(state: StoreState) -> list[str]:
    """Every policy Vault lists: the written ones and ``default``, sorted, then ``root``."""
    names = (set(state.policies) | {DEFAULT_POLICY}) - set(IMMUTABLE)
    return [*sorted(names), ROOT_POLICY]


def read_policy(session: Session, name: str, field: str) -> Response:
    """A policy's name and text under ``field`` (``rules`` on the legacy path, else
    ``policy``), as Vault 1.15 answers (OpenBao adds a version and CAS settings)."""
    rules = "" if name == ROOT_POLICY else policy_rules(session.state, name)
    if rules is None:
        return Response()
    return Response(data={"name": name, field: rules})


def write_policy(session: Session, name: str, *, legacy: bool) -> Response:
    """Check the policy parses, then record it; ``rules`` is taken on the legacy path."""
    data = session.request.data
    text = data.get("policy")
    warnings: tuple[str, ...] = ()
    if legacy and not text and data.get("rules"):
        text, warnings = data.get("rules"), (RULES_DEPRECATED,)
    if not name:
        raise InvalidRequestError("policy name must be provided in the URL")
    if name in IMMUTABLE:
        raise InvalidRequestError(f'cannot update "{name}" policy')
    if not text or not isinstance(text, str):
        raise InvalidRequestError("'policy' parameter not supplied or empty")
    try:
        parse_policy(name, text)
    except InvalidRequestError as exc:
        reason = str(exc).removeprefix(f"policy {name!r}: ")
        raise InvalidRequestError(f"failed to parse policy: {reason}") from None
    session.stage(PolicyWritten(**who(session.request), name=name, rules=text))
    return Response(warnings=warnings)


def delete_policy(session: Session, name: str) -> Response:
    """Vault's: deleting a policy that is not there succeeds, doing nothing."""
    if name in IMMUTABLE:
        raise InvalidRequestError(f'cannot delete "{name}" policy')
    if name == DEFAULT_POLICY:
        raise InvalidRequestError("cannot delete default policy")
    if name in session.state.policies:
        session.stage(PolicyDeleted(**who(session.request), name=name))
    return Response()


# ---- capabilities --------------------------------------------------------------------------


def capabilities(session: Session, path: str) -> Response:
    """What a token may do at each of ``paths`` (``capabilities`` too when one path): the
    caller's (``-self``; embedded, the local user is root), a given ``token``'s, or an
    ``accessor``'s."""
    data, state = session.request.data, session.state
    paths = _paths(data.get("paths") or data.get("path"))
    token: Token | None = None
    if path == "capabilities-self":
        token_id = session.request.token_id
        token = state.tokens.get(token_id) if token_id else None
    elif path == "capabilities":
        given = data.get("token")
        if not given or not isinstance(given, str):
            raise InvalidRequestError("no token found")
        token = live_token(state, session.store.keyring.token_id(given))
        if token is None:
            raise InvalidRequestError("invalid token")
    else:
        token_id = state.accessors.get(str(data.get("accessor") or ""), "")
        token = live_token(state, token_id) if token_id else None
        if token is None:
            raise InvalidRequestError("invalid accessor")
    authorizer = Authorizer()  # its own: a cache by policy_seq is one store's
    answer: dict[str, Any] = {
        p: ["root"] if token is None else capabilities_of(authorizer, state, token, clean_path(p))
        for p in paths
    }
    if len(paths) == 1:
        answer["capabilities"] = answer[paths[0]]
    return Response(data=answer)


def _paths(value: object) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(p, str) for p in items):
        raise InvalidRequestError("paths must be supplied")
    paths = [p.strip() for p in items if p.strip()]
    if not paths:
        raise InvalidRequestError("paths must be supplied")
    return paths
