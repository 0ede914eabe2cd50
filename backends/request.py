"""Request and Response: what every front door (the CLI, the HTTP API) translates to and from."""

from __future__ import annotations

import os
from typing import Any, Literal, TypedDict

import msgspec

Operation = Literal["read", "write", "delete", "list"]


_IDS_PER_DRAW = 512
_ids: list[str] = []  # drawn ahead; list.pop and list.extend are atomic, so thread-safe
os.register_at_fork(after_in_child=_ids.clear)  # a child never hands out its parent's ids


def random_id() -> str:
    """16 random hex digits, as ``os.urandom(8).hex()``, from one system call per 512."""
    try:
        return _ids.pop()
    except IndexError:
        drawn = os.urandom(8 * _IDS_PER_DRAW).hex()
        _ids.extend(drawn[i : i + 16] for i in range(0, len(drawn), 16))
        return _ids.pop()


class Request(msgspec.Struct, frozen=True):
    """One request. ``at`` asks for the store as it stood at a seq or a time (a seq, an
    RFC 3339 time or an age such as ``2h``); empty: now. ``actor`` is filled in by the
    Core's authentication, never trusted from the caller; ``token`` is what the caller
    presented to it (server mode), ``token_id`` what it was found to be. ``wrap_ttl``: the
    answer is to be wrapped in a single-use token living that many seconds (Vault's
    ``X-Vault-Wrap-TTL``; 0: not wrapped). A frozen msgspec struct, as is ``Response``:
    the Core builds several per request, each eight times faster than a frozen dataclass."""

    operation: Operation
    path: str
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    at: str = ""
    actor: str = ""
    request_id: str = msgspec.field(default_factory=random_id)
    token: str = ""  # never shown: see __repr__
    token_id: str = ""  # the keyed hash of the token, once authenticated ("" embedded)
    wrap_ttl: int = 0

    def __repr__(self) -> str:
        shown = ("operation", "path", "data", "at", "actor", "request_id", "token_id", "wrap_ttl")
        return f"Request({', '.join(f'{name}={getattr(self, name)!r}' for name in shown)})"


class Response(msgspec.Struct, frozen=True):
    """``data`` is None when there is nothing at the path. ``request_id`` is the id a
    server gave the request (embedded, the caller knows it already)."""

    data: dict[str, Any] | None = None
    lease_id: str = ""
    lease_duration: int = 0
    renewable: bool = False
    warnings: tuple[str, ...] = ()
    request_id: str = ""
    auth: dict[str, Any] | None = None  # a login's or token creation's ``auth`` block
    wrap_info: dict[str, Any] | None = None  # a wrapped answer's token, instead of the answer


class Who(TypedDict):
    """The fields every event takes from the request that caused it."""

    actor: str
    request_id: str


def who(request: Request) -> Who:
    return {"actor": request.actor, "request_id": request.request_id}
