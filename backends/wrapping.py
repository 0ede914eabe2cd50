"""Response wrapping, as Vault's: an answer kept in the cubbyhole of a single-use token.

A request with a wrap TTL (``X-Vault-Wrap-TTL``) is served as usual; then its answer (data,
or a login's or token creation's ``auth`` block) is sealed into the cubbyhole of a new
orphan token (policy ``response-wrapping``, one use, that TTL), at ``response``, and the
caller gets only ``wrap_info``: the token, its accessor, the TTL, and when and where it was
created. ``sys/wrapping/unwrap`` answers the original once and revokes the token,
``lookup`` describes it (no other token needed), ``rewrap`` moves the answer to a new
token, and ``wrap`` wraps the data it is given. The wrapping token is created by an event
like any other token; the token itself exists only in the answer that hands it out.
"""

from __future__ import annotations

import json
from typing import Any

from backends.auth import WRAPPING_INVALID, WRAPPING_POLICY, live_token
from backends.contract import MountView, Session
from backends.errors import InvalidRequestError
from backends.request import Request, Response, who
from backends.token import CUBBYHOLE, issue, revoke_own
from projections.audit import rfc3339_nano
from projections.events import SecretRead
from projections.state import Token

INVALID = WRAPPING_INVALID
RESPONSE = "response"  # where in the wrapping token's cubbyhole the answer waits, as Vault's


def wrap(session: Session, response: Response, *, ttl: int, path: str) -> Response:
    """``response`` kept in the cubbyhole of a new wrapping token created at ``path``,
    answered as its ``wrap_info`` alone. An answer with nothing in it (a write's, an
    empty list) is given as it is, as Vault does."""
    empty = response.data is None or (
        session.request.operation == "list" and not response.data.get("keys")
    )
    if ttl <= 0 or response.wrap_info is not None or (empty and not response.auth):
        return response
    mount = session.state.mounts.at(CUBBYHOLE)
    if mount is None:
        raise InvalidRequestError("response wrapping needs the cubbyhole/ mount, which is missing")
    auth = issue(
        session,
        policies=[WRAPPING_POLICY],
        path=path,
        display="token",  # as OpenBao names its wrapping tokens
        ttl=ttl,
        explicit_max_ttl=ttl,
        num_uses=1,
        renewable=False,
    )
    token_id = session.store.keyring.token_id(auth["client_token"])
    kept = {
        "request_id": response.request_id or session.request.request_id,
        "lease_id": response.lease_id,
        "renewable": response.renewable,
        "lease_duration": response.lease_duration,
        "data": response.data,
        "wrap_info": None,
        "warnings": list(response.warnings) or None,
        "auth": response.auth,
    }
    # Kept as Vault keeps it, the answer's JSON envelope as one string: what reading
    # cubbyhole/response with the wrapping token shows.
    packed = json.dumps(kept, separators=(",", ":"))
    MountView(session, mount).put(f"{token_id}/{RESPONSE}", {RESPONSE: packed})
    session.commit()
    info: dict[str, Any] = {
        "token": auth["client_token"],
        "accessor": auth["accessor"],
        "ttl": ttl,
        "creation_time": rfc3339_nano(session.state.tokens[token_id].issued),
        "creation_path": path,
    }
    if response.auth:
        info["wrapped_accessor"] = response.auth.get("accessor", "")
    return Response(wrap_info=info)


def serve_wrapping(session: Session, request: Request, path: str, op: str) -> Response:
    """``sys/wrapping/wrap``, ``unwrap``, ``lookup`` and ``rewrap``; the token is named by
    ``token`` in the data, else it is the caller's own."""
    name = path.removeprefix("wrapping/")
    if name == "lookup" and op in ("read", "write"):
        token = _wrapping_token(session, request)
        return Response(
            data={
                "creation_path": token.path,
                "creation_time": rfc3339_nano(token.issued),
                "creation_ttl": token.ttl,
            }
        )
    if op != "write":
        raise InvalidRequestError(f"unsupported operation: {op} sys/{path}")
    if name == "wrap":
        if not request.wrap_ttl:
            raise InvalidRequestError("endpoint requires response wrapping to be used")
        return Response(data=dict(request.data))
    if name == "unwrap":
        return _take(session, _wrapping_token(session, request))
    if name == "rewrap":
        token = _wrapping_token(session, request)
        return wrap(session, _take(session, token), ttl=token.ttl, path=token.path)
    raise InvalidRequestError(f"unsupported path: sys/{path}")


def _wrapping_token(session: Session, request: Request) -> Token:
    """The live wrapping token a request names, or 400 (as Vault: not 403)."""
    given = request.data.get("token")
    if given is not None and (not isinstance(given, str) or not given):
        raise InvalidRequestError(INVALID)
    state = session.state
    if given:
        token = live_token(state, session.store.keyring.token_id(given))
    elif request.token_id:  # the caller's own, which this very request may have used up
        token = state.tokens.get(request.token_id)
    elif request.token:  # lookup needs no token: the one presented is the one to describe
        token = live_token(state, session.store.keyring.token_id(request.token))
    else:
        token = None
    if token is None or token.policies != (WRAPPING_POLICY,):
        raise InvalidRequestError(INVALID)
    return token


def _take(session: Session, token: Token) -> Response:
    """The answer ``token`` wraps, read (and recorded as read) once: the token is revoked
    with its cubbyhole."""
    mount = session.state.mounts.at(CUBBYHOLE)
    where = f"{token.id}/{RESPONSE}"
    kept = None if mount is None else MountView(session, mount).get(where)
    if mount is None or kept is None or not isinstance(kept.get(RESPONSE), str):
        raise InvalidRequestError(INVALID)
    session.stage(SecretRead(**who(session.request), mount_id=mount.id, path=where))
    revoke_own(session, token, "uses")
    body = json.loads(kept[RESPONSE])
    return Response(
        data=body.get("data"),
        lease_id=body.get("lease_id") or "",
        lease_duration=int(body.get("lease_duration") or 0),
        renewable=bool(body.get("renewable")),
        warnings=tuple(body.get("warnings") or ()),
        request_id=str(body.get("request_id") or ""),
        auth=body.get("auth"),
    )
